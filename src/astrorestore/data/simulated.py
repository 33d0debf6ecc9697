"""LightningDataModule of simulated deep fields with noise drawn on the device.

The clean fields are rendered once in ``setup``. Training items are random crops of the train
fields in electrons; noise is drawn per batch on the device in ``on_after_batch_transfer`` (cheap,
and every epoch sees fresh noise). Validation and test items are fixed crops with noise drawn once
from a fixed generator, so every run and every epoch is scored on exactly the same images.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from astrorestore.data.noise import NoiseModel
from astrorestore.data.normalization import AsinhNormalizer
from astrorestore.data.scene import render_field
from astrorestore.errors import UserError

# A crop "contains a source" when its brightest pixel exceeds the sky by this much (electrons):
# ~20x a typical read noise, so noise alone never passes it.
SOURCE_THRESHOLD = 100.0
# Tries at finding a source-bearing crop before settling for the last one drawn.
SOURCE_TRIES = 10


def _render_set(seq: np.random.SeedSequence, n: int, size: int, scene: dict) -> tuple:
    """Render ``n`` fields, each from its own child seed so field i does not depend on n."""
    fields, catalogs = [], []
    for child in seq.spawn(n):
        image, catalog = render_field(size, np.random.default_rng(child), **scene)
        fields.append(image)
        catalogs.append(catalog)
    return np.stack(fields) if fields else np.zeros((0, size, size), np.float32), catalogs


def _grid_positions(field_size: int, patch_size: int, n: int) -> list[tuple[int, int]]:
    """``n`` fixed top-left corners spread over a regular grid covering the field."""
    per_side = int(np.ceil(np.sqrt(n)))
    starts = np.linspace(0, field_size - patch_size, per_side).round().astype(int)
    corners = [(int(y), int(x)) for y in starts for x in starts]
    return corners[:n]


class RandomPatchDataset(Dataset):
    """Random, randomly flipped/rotated crops of the training fields: ``{"clean": (1, P, P)}``.

    The numpy generator is created lazily in each process (each DataLoader worker, or the main
    process) from ``torch.initial_seed()`` and the rank, then consumed item by item. Under
    ``L.seed_everything(s, workers=True)`` the workers' initial seeds, hence the crops, are
    reproducible; fresh workers every epoch (``persistent_workers=False``) get fresh seeds, and
    with ``num_workers=0`` the one stream simply continues, so epochs differ either way.
    """

    def __init__(
        self,
        fields: np.ndarray,
        skies: np.ndarray,
        patch_size: int,
        length: int,
        source_patch_fraction: float = 0.0,
    ) -> None:
        self.fields = fields
        self.skies = skies
        self.patch_size = patch_size
        self.length = length
        self.source_patch_fraction = source_patch_fraction
        self.rank = 0
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return self.length

    def _generator(self) -> np.random.Generator:
        # Keyed on the process and torch seed: a forked worker must not reuse the parent's stream,
        # and re-seeding torch (seed_everything) restarts it.
        key = (os.getpid(), torch.initial_seed(), self.rank)
        if self._rng is None or key != self._rng_key:
            self._rng = np.random.default_rng(np.random.SeedSequence([key[1], key[2]]))
            self._rng_key = key
        return self._rng

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        n, h, w = self.fields.shape
        p = self.patch_size
        i = int(rng.integers(n))
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        return self.fields[i, y : y + p, x : x + p], i

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = self._generator()
        patch, field = self._crop(rng)
        if rng.random() < self.source_patch_fraction:
            for _ in range(SOURCE_TRIES - 1):
                if patch.max() > self.skies[field] + SOURCE_THRESHOLD:
                    break
                patch, field = self._crop(rng)
        patch = np.rot90(patch, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return {"clean": torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]}


class FixedPatchDataset(Dataset):
    """Precomputed ``{"clean": (1, P, P), "noisy": (1, P, P)}`` pairs in electrons."""

    def __init__(self, clean: Tensor, noisy: Tensor) -> None:
        self.clean = clean
        self.noisy = noisy

    def __len__(self) -> int:
        return self.clean.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"clean": self.clean[index], "noisy": self.noisy[index]}


class SimulatedFieldDataModule(L.LightningDataModule):
    """Simulated deep fields (see ``render_field``) with on-device noise and asinh normalisation.

    Batches reach the model (after ``on_after_batch_transfer``) as ``input``/``target``
    (normalised noisy/clean), ``offset``/``scale`` (per image, to undo the normalisation) and
    ``noisy_e``/``clean_e`` (electrons).
    """

    def __init__(
        self,
        noise: NoiseModel,
        normalizer: AsinhNormalizer,
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
    ) -> None:
        super().__init__()
        if field_size < 8:
            raise UserError(f"data.field_size={field_size} is invalid: use an integer >= 8")
        if patch_size <= 0 or patch_size % 8 or patch_size > field_size:
            raise UserError(
                f"data.patch_size={patch_size} is invalid: use a positive multiple of 8 that is "
                f"<= data.field_size ({field_size})"
            )
        if batch_size <= 0:
            raise UserError(f"data.batch_size={batch_size} is invalid: use an integer > 0")
        for key, value in (
            ("n_train_fields", n_train_fields),
            ("n_val_fields", n_val_fields),
            ("n_test_fields", n_test_fields),
            ("patches_per_epoch", patches_per_epoch),
            ("val_patches_per_field", val_patches_per_field),
        ):
            if value <= 0:
                raise UserError(f"data.{key}={value} is invalid: use an integer > 0")
        if num_workers < 0:
            raise UserError(f"data.num_workers={num_workers} is invalid: use an integer >= 0")
        self.save_hyperparameters(ignore=["noise", "normalizer"])
        self.noise = noise
        self.normalizer = normalizer
        self.scene = dict(scene) if scene is not None else {}
        self._source_patch_fraction = 0.0
        self.source_patch_fraction = source_patch_fraction
        self.train_fields: np.ndarray | None = None
        self.train_catalogs: list[dict] = []
        self.val_fields: np.ndarray | None = None
        self.val_catalogs: list[dict] = []
        self.test_fields: np.ndarray | None = None
        self.test_catalogs: list[dict] = []
        self.train_set: RandomPatchDataset | None = None
        self.val_set: FixedPatchDataset | None = None
        self.test_set: FixedPatchDataset | None = None
        self._noise_generator: torch.Generator | None = None

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

    def _fixed_set(
        self, fields: np.ndarray, noise_seq: np.random.SeedSequence
    ) -> FixedPatchDataset:
        p = self.hparams.patch_size
        corners = _grid_positions(self.hparams.field_size, p, self.hparams.val_patches_per_field)
        crops = [field[y : y + p, x : x + p] for field in fields for (y, x) in corners]
        clean = torch.from_numpy(np.stack(crops)[:, None].copy())
        generator = torch.Generator().manual_seed(int(noise_seq.generate_state(1, np.uint64)[0]))
        noisy, target = self.noise(clean, generator)
        # The noise model's target (exposure-scaled clean) is the truth that matches ``noisy``.
        return FixedPatchDataset(target.contiguous(), noisy.contiguous())

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train_seq, val_seq, test_seq, val_noise, test_noise = np.random.SeedSequence(hp.seed).spawn(
            5
        )
        self.train_fields, self.train_catalogs = _render_set(
            train_seq, hp.n_train_fields, hp.field_size, self.scene
        )
        self.val_fields, self.val_catalogs = _render_set(
            val_seq, hp.n_val_fields, hp.field_size, self.scene
        )
        self.test_fields, self.test_catalogs = _render_set(
            test_seq, hp.n_test_fields, hp.field_size, self.scene
        )
        skies = np.array([c["sky"] for c in self.train_catalogs], dtype=np.float64)
        self.train_set = RandomPatchDataset(
            self.train_fields,
            skies,
            hp.patch_size,
            hp.patches_per_epoch,
            self.source_patch_fraction,
        )
        self.val_set = self._fixed_set(self.val_fields, val_noise)
        self.test_set = self._fixed_set(self.test_fields, test_noise)

    def _loader(self, dataset: Dataset) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=False,
            num_workers=workers,
            # Non-persistent workers copy the dataset afresh each epoch, picking up curriculum
            # changes (source_patch_fraction) and new seeds.
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def _global_rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        # Different ranks must draw different crops from the same torch seed.
        self.train_set.rank = self._global_rank()
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set)

    def _device_generator(self, device: torch.device) -> torch.Generator:
        # Created once per device and kept, so successive batches get fresh noise; seeded from the
        # global seed (torch.initial_seed(), set by seed_everything) and offset per rank.
        if self._noise_generator is None or self._noise_generator.device != device:
            seed = (torch.initial_seed() + 1000 * self._global_rank()) % (2**63)
            self._noise_generator = torch.Generator(device=device).manual_seed(seed)
        return self._noise_generator

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, Tensor]:
        clean = batch["clean"].float()
        if "noisy" in batch:
            noisy, target = batch["noisy"].float(), clean
        else:
            noisy, target = self.noise(clean, self._device_generator(clean.device))
        offset, scale = self.normalizer.stats(noisy)
        return {
            "input": self.normalizer.forward(noisy, offset, scale),
            "target": self.normalizer.forward(target, offset, scale),
            "offset": offset,
            "scale": scale,
            "noisy_e": noisy,
            "clean_e": target,
        }
