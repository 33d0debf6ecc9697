"""The Hubble Deep Field photograph bundled with scikit-image: offline RGB data for the colour
and super-resolution methods.

``skimage.data.hubble_deep_field()`` is an 872 x 1000 RGB uint8 image. The right quarter of its
columns is held out: training crops never touch it; its top half gives validation crops and its
bottom half test crops. It is a processed, colour-composited photograph (not electrons), so it
suits colorization and super-resolution, not photometric denoising benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from astrorestore.data.sources.tile_dataset import PerProcessRng
from astrorestore.errors import UserError

HELD_OUT_FRACTION = 0.25


def hubble_image() -> np.ndarray:
    """The photograph as float32 RGB in [0, 1], shape (872, 1000, 3)."""
    from skimage import data

    return data.hubble_deep_field().astype(np.float32) / 255.0


def held_out_start(width: int) -> int:
    """First column of the held-out region."""
    return int(round(width * (1.0 - HELD_OUT_FRACTION)))


def _region(image: np.ndarray, split: str) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a split's region."""
    h, w = image.shape[:2]
    x_held = held_out_start(w)
    regions = {
        "train": (0, h, 0, x_held),
        "val": (0, h // 2, x_held, w),
        "test": (h // 2, h, x_held, w),
    }
    if split not in regions:
        raise UserError(f"split={split!r} is invalid: use one of train, val, test")
    return regions[split]


def _check_patch(patch_size: int, region: tuple[int, int, int, int], split: str) -> None:
    y0, y1, x0, x1 = region
    largest = min(y1 - y0, x1 - x0)
    if int(patch_size) != patch_size or not 1 <= patch_size <= largest:
        raise UserError(
            f"data.patch_size={patch_size} is invalid for the Hubble {split} region "
            f"({y1 - y0}x{x1 - x0} px): use an integer in [1, {largest}]"
        )


def _as_item(crop: np.ndarray) -> dict[str, Tensor]:
    return {"rgb": torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))}


class HubbleRandomCrops(PerProcessRng, Dataset):
    """``length`` random ``{"rgb": (3, P, P)}`` crops of the training region, flipped/rotated."""

    def __init__(
        self,
        patch_size: int,
        length: int,
        *,
        augment: bool = True,
        image: np.ndarray | None = None,
    ) -> None:
        self.image = hubble_image() if image is None else np.asarray(image, np.float32)
        self.region = _region(self.image, "train")
        _check_patch(patch_size, self.region, "train")
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.augment = augment

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = self._generator()
        y0, y1, x0, x1 = self.region
        p = self.patch_size
        y = y0 + int(rng.integers(y1 - y0 - p + 1))
        x = x0 + int(rng.integers(x1 - x0 - p + 1))
        crop = self.image[y : y + p, x : x + p]
        if self.augment:
            crop = np.rot90(crop, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        return _as_item(crop)


class HubbleFixedCrops(Dataset):
    """``n`` fixed crops on a regular grid over the validation or test part of the held-out
    region: the same images every run."""

    def __init__(
        self, patch_size: int, n: int, split: str = "val", *, image: np.ndarray | None = None
    ) -> None:
        if split not in ("val", "test"):
            raise UserError(f"split={split!r} is invalid for fixed Hubble crops: use val or test")
        self.image = hubble_image() if image is None else np.asarray(image, np.float32)
        y0, y1, x0, x1 = _region(self.image, split)
        _check_patch(patch_size, (y0, y1, x0, x1), split)
        p = int(patch_size)
        per_side = int(np.ceil(np.sqrt(max(int(n), 1))))
        ys = np.linspace(y0, y1 - p, per_side).round().astype(int)
        xs = np.linspace(x0, x1 - p, per_side).round().astype(int)
        corners = list(dict.fromkeys((int(y), int(x)) for y in ys for x in xs))
        self.corners = corners[: int(n)]
        self.patch_size = p

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        y, x = self.corners[index]
        p = self.patch_size
        return _as_item(self.image[y : y + p, x : x + p])
