"""Simulated deep fields: clean crops in electrons for the shared paired data module.

The clean fields are rendered once in ``setup``. Training items are random crops of the train
fields; the pairing draws noise (or masks) per batch on the device (see
:class:`~astrorestore.data.datamodules.base.PairedDataModule`). Validation and test items are fixed crops,
paired once from ``data.seed``, so every run and every epoch is scored on the same images.
With ``data.normalizer.background=map`` every field's sky map is measured once, as ``infer.py``
measures a frame's (on a noise draw of the whole field), and items carry their crop of it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from astrorestore.data.datamodules.base import PairedDataModule
from astrorestore.data.pairings.base import Pairing
from astrorestore.data.seeding import PerProcessRng
from astrorestore.data.simulation.scene import render_field
from astrorestore.errors import UserError

# A crop "contains a source" when its brightest pixel exceeds the sky by this much (electrons):
# ~20x a typical read noise, so noise alone never passes it.
SOURCE_THRESHOLD = 100.0
# Tries at finding a source-bearing crop before settling for the last one drawn.
SOURCE_TRIES = 10

log = logging.getLogger(__name__)


def _render_set(seq: np.random.SeedSequence, n: int, size: int, scene: dict) -> tuple:
    """Render ``n`` fields, each from its own child seed so field i does not depend on n."""
    fields, catalogs = [], []
    for child in seq.spawn(n):
        image, catalog = render_field(size, np.random.default_rng(child), **scene)
        fields.append(image)
        catalogs.append(catalog)
    return np.stack(fields) if fields else np.zeros((0, size, size), np.float32), catalogs


def _pedestals(catalogs: list[dict], *others: list[dict]) -> np.ndarray | None:
    """The subtracted sky level of each field of ``catalogs``; None when no field of any set has
    one, so every split's items have the same keys and configs without pedestals are as before."""
    if not any(c.get("pedestal", 0.0) for cats in (catalogs, *others) for c in cats):
        return None
    return np.array([c.get("pedestal", 0.0) for c in catalogs], dtype=np.float64)


def _with_pedestal(item: dict, pedestals: np.ndarray | None, field: int) -> dict[str, Tensor]:
    """Add the field's subtracted sky level as a map (see ``render_field``), if it has any."""
    if pedestals is not None:
        item["pedestal"] = torch.full_like(item["clean"], float(pedestals[field]))
    return item


def _sky_maps(
    fields: np.ndarray,
    normalizer: Any,
    noise: Any,
    seed: np.random.SeedSequence,
    pedestals: np.ndarray | None = None,
):
    """``(n, H, W)`` sky maps of the clean ``fields`` at exposure 1, each measured on one noise
    draw of its whole field (what ``infer.py`` sees), divided by the draw's exposure factor.

    A field too crowded for a map (too few sky boxes: e.g. the default scene on a 128 px field)
    gets a flat map at its median, as ``background=median`` would, and the count is logged:
    a simulated field has no other sky to offer, and training on it stays possible.
    """
    generator = torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0]))
    maps, flat = [], 0
    for i, field in enumerate(fields):
        clean = torch.from_numpy(np.ascontiguousarray(field, np.float32))[None, None]
        # A subtracted pedestal: the noise of the photons that arrived (see render_field).
        pedestal = None if pedestals is None else torch.full_like(clean, float(pedestals[i]))
        noisy, target = noise(clean, generator, pedestal)
        # The least-squares factor (as follow_exposure): a ratio of sums is unstable on an
        # over-subtracted field whose pixels sum to about 0.
        power = float((clean * clean).sum())
        exposure = float((target * clean).sum()) / power if power > 0 else 1.0
        try:
            sky = normalizer.sky_map(noisy[0, 0].numpy())
        except UserError:
            flat += 1
            sky = np.full(field.shape, float(noisy.median()), np.float32)
        maps.append(sky / np.float32(exposure))
    if flat:
        log.warning(
            "data.normalizer.background=map: %d of %d simulated fields are too crowded for a sky "
            "map (too few sky boxes) and use their median; a smaller data.normalizer.box_size or "
            "a larger data.field_size gives them maps",
            flat,
            len(fields),
        )
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0,) + fields.shape[1:])


def _grid_positions(field_size: int, patch_size: int, n: int) -> list[tuple[int, int]]:
    """``n`` fixed top-left corners spread over a regular grid covering the field."""
    per_side = int(np.ceil(np.sqrt(n)))
    starts = np.linspace(0, field_size - patch_size, per_side).round().astype(int)
    corners = [(int(y), int(x)) for y in starts for x in starts]
    return corners[:n]


class RandomPatchDataset(PerProcessRng, Dataset):
    """Random, randomly flipped/rotated crops of the training fields: ``{"clean": (1, P, P)}``
    (and ``"background"``, the same crop of the field's sky map, when ``sky_maps`` are given),
    drawn from a per-process stream (see :mod:`astrorestore.data.seeding`)."""

    def __init__(
        self,
        fields: np.ndarray,
        skies: np.ndarray,
        patch_size: int,
        length: int,
        source_patch_fraction: float = 0.0,
        sky_maps: np.ndarray | None = None,
        pedestals: np.ndarray | None = None,
    ) -> None:
        self.fields = fields
        self.skies = skies
        self.sky_maps = sky_maps
        self.pedestals = pedestals
        self.patch_size = patch_size
        self.length = length
        self.source_patch_fraction = source_patch_fraction

    def __len__(self) -> int:
        return self.length

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, int, tuple[slice, slice]]:
        n, h, w = self.fields.shape
        p = self.patch_size
        i = int(rng.integers(n))
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        window = (slice(y, y + p), slice(x, x + p))
        return self.fields[i][window], i, window

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = self._generator()
        patch, field, window = self._crop(rng)
        if rng.random() < self.source_patch_fraction:
            for _ in range(SOURCE_TRIES - 1):
                if patch.max() > self.skies[field] + SOURCE_THRESHOLD:
                    break
                patch, field, window = self._crop(rng)
        arrays = {"clean": patch}
        if self.sky_maps is not None:
            arrays["background"] = self.sky_maps[field][window]
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        out = {}
        for key, array in arrays.items():
            array = np.rot90(array, k=k)
            array = array[:, ::-1] if flip else array
            out[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        return _with_pedestal(out, self.pedestals, field)


class FixedCrops(Dataset):
    """Fixed crops of fields: ``{"clean": (1, P, P)}`` in electrons, the same in every epoch
    (with ``"background"``, the crops of the fields' sky maps, when ``sky_maps`` are given)."""

    def __init__(
        self,
        fields: np.ndarray,
        patch_size: int,
        per_field: int,
        sky_maps: np.ndarray | None = None,
        pedestals: np.ndarray | None = None,
    ) -> None:
        corners = _grid_positions(fields.shape[-1], patch_size, per_field)
        self.per_field = len(corners)
        self.pedestals = pedestals
        p = patch_size

        def crops(images: np.ndarray) -> Tensor:
            cut = [image[y : y + p, x : x + p] for image in images for (y, x) in corners]
            return torch.from_numpy(np.stack(cut)[:, None].astype(np.float32))

        self.items = {"clean": crops(fields)}
        if sky_maps is not None:
            self.items["background"] = crops(sky_maps)

    @property
    def clean(self) -> Tensor:
        return self.items["clean"]

    def __len__(self) -> int:
        return self.clean.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {key: value[index] for key, value in self.items.items()}
        return _with_pedestal(item, self.pedestals, index // self.per_field)


class SimulatedFieldDataModule(PairedDataModule):
    """Simulated deep fields (see ``render_field``): clean crops in electrons.

    The pairing (``data.pairing``) decides what a training example is and draws the noise.
    """

    data_name = "simulated"
    provides = frozenset({"clean"})
    channels = 1
    sky_maps = True

    def __init__(
        self,
        pairing: Pairing,
        normalizer: Any,
        field_size: int = 256,
        n_train_fields: int = 8,
        n_val_fields: int = 2,
        n_test_fields: int = 2,
        patch_size: int = 64,
        batch_size: int = 16,
        patches_per_epoch: int = 512,
        val_patches_per_field: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        source_patch_fraction: float = 0.0,
        scene: dict | None = None,
        augment: Any = None,
        name: str = "simulated",
    ) -> None:
        self.data_name = str(name)  # the data= option, for messages (simulated_randomized too)
        if field_size < 8:
            raise UserError(f"data.field_size={field_size} is invalid: use an integer >= 8")
        if not 0 < patch_size <= field_size:
            raise UserError(
                f"data.patch_size={patch_size} is invalid: use a positive size <= data.field_size "
                f"({field_size})"
            )
        for key, value in (
            ("n_train_fields", n_train_fields),
            ("n_val_fields", n_val_fields),
            ("n_test_fields", n_test_fields),
            ("patches_per_epoch", patches_per_epoch),
            ("val_patches_per_field", val_patches_per_field),
        ):
            if value <= 0:
                raise UserError(f"data.{key}={value} is invalid: use an integer > 0")
        super().__init__(pairing, normalizer, batch_size, num_workers, seed, augment)
        self.save_hyperparameters(ignore=["pairing", "normalizer", "augment"])
        self.patch_size = int(patch_size)
        self.scene = dict(scene) if scene is not None else {}
        self._source_patch_fraction = 0.0
        self.source_patch_fraction = source_patch_fraction
        self.train_fields: np.ndarray | None = None
        self.train_catalogs: list[dict] = []
        self.val_fields: np.ndarray | None = None
        self.val_catalogs: list[dict] = []
        self.test_fields: np.ndarray | None = None
        self.test_catalogs: list[dict] = []

    @property
    def source_patch_fraction(self) -> float:
        """Share of training crops resampled until they contain a source."""
        return self._source_patch_fraction

    @source_patch_fraction.setter
    def source_patch_fraction(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise UserError(f"data.source_patch_fraction={value} is invalid: use a value in [0, 1]")
        self._source_patch_fraction = value
        # Workers are re-created every epoch and copy the dataset then, so this reaches them.
        if getattr(self, "train_set", None) is not None:
            self.train_set.source_patch_fraction = value

    def stage_settings(self) -> dict:
        settings = super().stage_settings()
        settings["source_patch_fraction"] = lambda value: setattr(
            self, "source_patch_fraction", value
        )
        return settings

    def _seeds(self) -> list[np.random.SeedSequence]:
        # train, val and test fields, then the val and test noise (one draw each).
        return np.random.SeedSequence(self.hparams.seed).spawn(5)

    def fixed_seeds(self) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
        seeds = self._seeds()
        return seeds[3], seeds[4]

    def build_sets(self) -> tuple[Dataset, Dataset, Dataset]:
        hp = self.hparams
        train_seq, val_seq, test_seq = self._seeds()[:3]
        self.train_fields, self.train_catalogs = _render_set(
            train_seq, hp.n_train_fields, hp.field_size, self.scene
        )
        self.val_fields, self.val_catalogs = _render_set(
            val_seq, hp.n_val_fields, hp.field_size, self.scene
        )
        self.test_fields, self.test_catalogs = _render_set(
            test_seq, hp.n_test_fields, hp.field_size, self.scene
        )
        catalogs = (self.train_catalogs, self.val_catalogs, self.test_catalogs)
        pedestals = [_pedestals(catalogs[i], *catalogs[:i], *catalogs[i + 1 :]) for i in range(3)]
        maps: list[np.ndarray | None] = [None, None, None]
        if getattr(self.normalizer, "per_pixel", False):
            noise = self.pairing._require_noise()
            map_seeds = np.random.SeedSequence([hp.seed, 2]).spawn(3)
            maps = [
                _sky_maps(fields, self.normalizer, noise, seq, peds)
                for fields, seq, peds in zip(
                    (self.train_fields, self.val_fields, self.test_fields),
                    map_seeds,
                    pedestals,
                    strict=True,
                )
            ]
        # The clean field's sky is what remains after the pedestal (see render_field).
        skies = np.array(
            [c["sky"] - c.get("pedestal", 0.0) for c in self.train_catalogs], dtype=np.float64
        )
        train = RandomPatchDataset(
            self.train_fields,
            skies,
            self.patch_size,
            hp.patches_per_epoch,
            self.source_patch_fraction,
            sky_maps=maps[0],
            pedestals=pedestals[0],
        )
        per_field = hp.val_patches_per_field
        val = FixedCrops(self.val_fields, self.patch_size, per_field, maps[1], pedestals[1])
        test = FixedCrops(self.test_fields, self.patch_size, per_field, maps[2], pedestals[2])
        return train, val, test
