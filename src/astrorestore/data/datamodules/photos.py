"""Data modules of colour photographs in [0, 1] for colorization and super-resolution.

- ``data=hubble``: the Hubble Deep Field picture bundled with scikit-image (offline, always
  there). Training crops come from the left three quarters, validation/test crops from the
  held-out right quarter (see :mod:`astrorestore.data.sources.hubble`).
- ``data=galaxy10``: Galaxy10 DECaLS (``data.path`` to its ``.h5`` file), split by galaxy.

Items are ``{"clean": (3, P, P)}``; the pairing (colorization or super-resolution) makes the
examples. These photographs were stretched to 8 bits: they carry no electrons, so the
denoising pairings (supervised, Noise2Noise, Noise2Void) are refused here.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, Subset

from astrorestore.data.datamodules.base import PairedDataModule
from astrorestore.data.pairings.base import Pairing
from astrorestore.data.sources.galaxy10 import Galaxy10, check_galaxy10, check_split_sizes
from astrorestore.data.sources.hubble import HubbleFixedCrops, HubbleRandomCrops
from astrorestore.errors import UserError


def _check_photo_pairing(pairing: Pairing, data_name: str) -> None:
    if not pairing.for_photographs:
        raise UserError(
            f"data={data_name} holds 8-bit colour photographs (no electrons) for colorization "
            f"and super-resolution; {type(pairing).__name__} needs astronomical frames — use "
            "model=cgan_colorize, sr3 or sr_regression, or data=simulated"
        )


class _Renamed(Dataset):
    """Items ``{"rgb": x}`` of ``inner`` served as ``{"clean": x}``; ``rank`` passes through."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    @property
    def rank(self) -> int:
        return int(getattr(self.inner, "rank", 0))

    @rank.setter
    def rank(self, value: int) -> None:
        self.inner.rank = value

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"clean": self.inner[index]["rgb"]}


class PhotoDataModule(PairedDataModule):
    """Shared checks: a photograph pairing, and a patch size divisible by its scale."""

    provides = frozenset({"clean"})
    channels = 3

    def __init__(self, pairing: Pairing, normalizer: Any, patch_size: int, **base: Any) -> None:
        _check_photo_pairing(pairing, self.data_name)
        factor = pairing.upscale_factor
        if int(patch_size) != patch_size or patch_size < 8 or patch_size % factor:
            raise UserError(
                f"data.patch_size={patch_size} is invalid: use an integer >= 8 that is a "
                f"multiple of the scale factor {factor} (it is the high-resolution size)"
            )
        super().__init__(pairing, normalizer, **base)
        self.patch_size = int(patch_size)


class HubbleDataModule(PhotoDataModule):
    """Hubble Deep Field crops (``data=hubble``).

    Args:
        patch_size: crop size (high-resolution size for super-resolution).
        patches_per_epoch: random training crops per epoch.
        n_val, n_test: fixed crops of the held-out region (top / bottom half).
        Others: see :class:`~astrorestore.data.datamodules.base.PairedDataModule`.
    """

    data_name = "hubble"

    def __init__(
        self,
        pairing: Pairing,
        normalizer: Any,
        patch_size: int = 64,
        batch_size: int = 16,
        patches_per_epoch: int = 512,
        n_val: int = 16,
        n_test: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        augment: Any = None,
    ) -> None:
        super().__init__(
            pairing,
            normalizer,
            patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
        )
        for key, value in (("patches_per_epoch", patches_per_epoch), ("n_val", n_val)):
            if int(value) < 1:
                raise UserError(f"data.{key}={value} is invalid: use an integer >= 1")
        self.patches_per_epoch = int(patches_per_epoch)
        self.n_val, self.n_test = int(n_val), int(n_test)

    def build_sets(self) -> tuple[Dataset, Dataset, Dataset]:
        from astrorestore.data.sources.hubble import hubble_image

        image = hubble_image()  # read once, shared by the three sets
        train = HubbleRandomCrops(self.patch_size, self.patches_per_epoch, image=image)
        val = HubbleFixedCrops(self.patch_size, self.n_val, "val", image=image)
        test = HubbleFixedCrops(self.patch_size, max(self.n_test, 1), "test", image=image)
        return _Renamed(train), _Renamed(val), _Renamed(test)


class Galaxy10DataModule(PhotoDataModule):
    """Galaxy10 DECaLS (``data=galaxy10``), resized to ``patch_size``.

    Args:
        path: the ``Galaxy10_DECals.h5`` file (required).
        patch_size: image size after resizing (the whole galaxy, not a crop).
        max_val_images, max_test_images: first images of each fixed split kept (None = all).
        split_seed, val_fraction, test_fraction: the split by galaxy.
    """

    data_name = "galaxy10"

    def __init__(
        self,
        pairing: Pairing,
        normalizer: Any,
        path: str | None = None,
        patch_size: int = 64,
        batch_size: int = 16,
        max_val_images: int | None = 256,
        max_test_images: int | None = None,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
        augment: Any = None,
    ) -> None:
        if not path:
            raise UserError(
                "data.path is not set: data=galaxy10 needs Galaxy10_DECals.h5; pass "
                "data.path=<file.h5> (see astrorestore.data.sources.galaxy10.GALAXY10_URL)"
            )
        super().__init__(
            pairing,
            normalizer,
            patch_size,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            augment=augment,
        )
        # Fails here, at start-up, with what is wrong with the file or its split.
        check_split_sizes(path, check_galaxy10(path), val_fraction, test_fraction)
        self.path = str(path)
        self.max_val_images, self.max_test_images = max_val_images, max_test_images
        self.split = {
            "seed": split_seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        }

    def _set(self, split: str, limit: int | None) -> Dataset:
        data = _Renamed(Galaxy10(self.path, split, size=self.patch_size, **self.split))
        if limit is not None and limit < len(data):
            return Subset(data, range(int(limit)))
        return data

    def build_sets(self) -> tuple[Dataset, Dataset, Dataset]:
        return (
            self._set("train", None),
            self._set("val", self.max_val_images),
            self._set("test", self.max_test_images),
        )


def as_clean_batch(rgb: Tensor) -> dict[str, Tensor]:
    """A (B, 3, H, W) [0, 1] batch in the form pairings take (for scripts and tests)."""
    return {"clean": rgb.float().contiguous()}
