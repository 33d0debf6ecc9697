"""The data side every method shares: datasets in physical units -> pairing -> normalisation.

Subclasses only provide datasets (``train_set``, ``val_set``, ``test_set``) whose items are
dicts of physical-unit tensors (``clean``, ``noisy``, ``noisy2``, ``valid``). This base class

- applies the pairing per batch on the batch's device (``on_after_batch_transfer``), with a
  generator seeded per rank, so noise draws and blind-spot masks are fresh every batch;
- makes the validation and test sets fixed: the pairing is applied once, at set-up, with a
  generator seeded from ``seed``, so every epoch and every run is scored on the same examples;
- normalises ``input``/``target``/``truth``/``observed`` with statistics of the observed frame
  (or of the item's whole frame, carried by the item) and passes ``offset``/``scale`` on, so the
  normalisation can be inverted exactly; with ``data.normalizer.background=map`` the offset is
  the sky map of the item's whole frame, cropped with it (``background``);
- exposes the settings a curriculum may change (``stage_settings``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from astrorestore.data.normalization.asinh import photons_per_unit
from astrorestore.data.pairings.base import Pairing
from astrorestore.data.pairings.frame_noise import FRAME_NOISE_KEYS
from astrorestore.errors import UserError

NORMALISED_KEYS = ("input", "target", "truth", "observed")
# Normalisation statistics an item may carry (e.g. of its whole parent frame, so that training
# and inference normalise alike); used instead of statistics of the batch when present.
STATISTICS_KEYS = ("offset", "scale")
# Per-pixel noise maps the pairing does not use but methods may: carried past it unchanged.
PASSTHROUGH_KEYS = ("sigma", "sigma2")
# A frame's noise model per item (FRAME_NOISE_KEYS: gain in e- per unit, read-noise sigma in
# units; data.pairings.frame_noise) is given to the pairing, not augmented as images.
# The sky map of the item's whole frame, cropped with it (data.normalizer.background=map): it
# follows the item's augmentations and the exposure the noise model draws, and is the offset.
MAP_KEYS = ("background",)


def follow_exposure(background: Tensor, clean: Tensor | None, paired: dict[str, Tensor]) -> Tensor:
    """The clean scene's sky map at the exposure the pairing drew: noise models scale the clean
    scene by a factor per image (``truth = t * clean``), read back as the least-squares factor
    ``sum(truth * clean) / sum(clean^2)``: exact for a scaled scene and, unlike a ratio of
    sums, stable where a crop's pixels sum to ~0 (a source on an over-subtracted sky)."""
    truth = paired.get("truth")
    if clean is None or truth is None or truth.shape != clean.shape:
        return background  # frames as observed: no exposure was drawn
    dims = tuple(range(1, clean.dim()))
    clean = clean.float()
    power = (clean * clean).sum(dims, keepdim=True)
    factor = (truth.float() * clean).sum(dims, keepdim=True) / torch.where(power > 0, power, 1.0)
    return background * torch.where(power > 0, factor, 1.0)


class PairedExamples(Dataset):
    """Fixed examples, already paired (physical units): one dict of tensors per item."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        lengths = {t.shape[0] for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {key: value[index] for key, value in self.tensors.items()}


class PairedDataModule(L.LightningDataModule):
    """Base data module: pairing + normaliser + loaders. See the module docstring.

    Args:
        pairing: what a training example is (see :mod:`astrorestore.data.pairings.base`).
        normalizer: maps physical units to what the network sees, exactly invertible.
        augment: optional :class:`~astrorestore.data.augment.Augment` applied to training
            batches on the device, before pairing (one draw for every image of an item).
        batch_size, num_workers: loader settings.
        seed: seed of the fixed validation/test examples (not the global seed).
    """

    #: Name used in messages (the Hydra option, e.g. ``simulated``).
    data_name = "custom"
    #: Keys of the training items before pairing.
    provides: frozenset[str] = frozenset({"clean"})
    #: Image channels of the data (1 for astronomical frames, 3 for colour photographs).
    channels = 1
    #: Whether items carry the sky map of their whole frame (``background``), which
    #: ``data.normalizer.background=map`` needs.
    sky_maps = False

    def __init__(
        self,
        pairing: Pairing,
        normalizer: Any,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        augment: Any = None,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise UserError(f"data.batch_size={batch_size} is invalid: use an integer > 0")
        if num_workers < 0:
            raise UserError(f"data.num_workers={num_workers} is invalid: use an integer >= 0")
        self.check_pairing(pairing)
        self.check_normalizer(normalizer, pairing)
        if augment is not None:
            # Checked once, here: methods whose noise is tied to a detector axis or whose
            # inputs are noisy pixels refuse transforms that would break that.
            augment.check_compatible(
                pairing.structured_axis,
                noisy_inputs="clean" not in self.provides,
            )
        self.augment = augment
        self.pairing = pairing
        self.normalizer = normalizer
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ what methods may ask
    @property
    def has_truth(self) -> bool:
        """Whether validation batches carry a clean truth (else only val/loss can judge a run)."""
        return "clean" in self.provides

    @property
    def upscale_factor(self) -> int:
        """The pairing's super-resolution factor (1 unless it super-resolves)."""
        return self.pairing.upscale_factor

    def stage_settings(self) -> dict[str, Callable[[Any], None]]:
        """Setters a curriculum stage may call, by config key."""
        settings: dict[str, Callable[[Any], None]] = {}
        noise = self.pairing.noise
        if noise is not None and hasattr(noise, "exposure_range"):

            def set_exposure(value: Any) -> None:
                noise.exposure_range = tuple(value)

            settings["exposure_range"] = set_exposure
        return settings

    def apply_stage(self, **settings: Any) -> None:
        """Apply a curriculum stage; an unknown or unsupported setting is a UserError."""
        setters = self.stage_settings()
        for key, value in settings.items():
            if key not in setters:
                raise UserError(
                    f"curriculum stage sets '{key}', which data={self.data_name} with "
                    f"{type(self.pairing).__name__} does not support (it supports: "
                    f"{', '.join(sorted(setters)) or 'nothing'}); use curriculum=none"
                )
            setters[key](value)

    # ------------------------------------------------------------------ subclasses
    def check_pairing(self, pairing: Pairing) -> None:
        """Refuse, in one line, a pairing this data cannot feed (``Pairing.check_data``)."""
        pairing.check_data(self.channels, self.provides, self.data_name)

    def build_sets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        """Return (train, val, test) datasets of unpaired physical-unit items; test may be
        ``None`` (a folder too small for a test split): training then skips the test."""
        raise NotImplementedError

    def fixed_seeds(self) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
        """Seeds of the one pairing draw of the validation and the test set."""
        val_seq, test_seq = np.random.SeedSequence([self.seed, 1]).spawn(2)
        return val_seq, test_seq

    def check_normalizer(self, normalizer: Any, pairing: Pairing) -> None:
        """Refuse a per-pixel sky map (``background=map``) where no whole frame is known, or
        where input and target differ in size."""
        if not getattr(normalizer, "per_pixel", False):
            return
        if not self.sky_maps:
            raise UserError(
                f"data.normalizer.background=map needs the sky map of whole frames, which "
                f"data={self.data_name} does not make; use data.normalizer.background=median"
            )
        if pairing.upscale_factor != 1:
            raise UserError(
                "data.normalizer.background=map cannot normalise a super-resolution pair (input "
                "and target differ in size); use data.normalizer.background=median"
            )

    # ------------------------------------------------------------------ set-up
    def fixed_examples(
        self, dataset: Dataset, seed_sequence: np.random.SeedSequence
    ) -> PairedExamples:
        """Pair every item of ``dataset`` once with a generator from ``seed_sequence``
        (carried statistics and noise maps ride along the pairing)."""
        items = [dataset[i] for i in range(len(dataset))]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        carried = {
            key: batch.pop(key)
            for key in STATISTICS_KEYS + PASSTHROUGH_KEYS + MAP_KEYS
            if key in batch
        }
        seed = int(seed_sequence.generate_state(1, np.uint64)[0])
        paired = self.with_gain(self.pairing(batch, torch.Generator().manual_seed(seed)), batch)
        if "background" in carried:
            carried["background"] = follow_exposure(
                carried["background"], batch.get("clean"), paired
            )
        paired = paired | carried
        return PairedExamples({key: value.contiguous() for key, value in paired.items()})

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, test = self.build_sets()
        val_seq, test_seq = self.fixed_seeds()
        self.train_set = train
        self.val_set = self.fixed_examples(val, val_seq)
        self.test_set = self.fixed_examples(test, test_seq) if test is not None else None

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            # Fresh workers each epoch copy the dataset afresh: they see curriculum changes
            # and draw from new seeds.
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def _global_rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        # Different ranks must draw different crops from the same torch seed.
        if hasattr(self.train_set, "rank"):
            self.train_set.rank = self._global_rank()
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        self.setup("test")
        if self.test_set is None:
            raise UserError(
                "this data has no test split (too few frames or data.test_fraction=0); "
                "add frames to the folder or raise data.test_fraction"
            )
        return self._loader(self.test_set)

    # ------------------------------------------------------------------ per batch, on device
    def device_generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, seeded from the global seed and offset per rank."""
        if self._generator is None or self._generator.device != device:
            seed = (torch.initial_seed() + 1000 * self._global_rank()) % (2**63)
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator

    def with_gain(self, paired: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``paired`` with each item's ``noise_gain`` (photons per unit of its input's shot
        noise): its frame's noise model where the items carry one (``FRAME_NOISE_KEYS``), else
        the gain of the noise the pairing drew; left out where neither says. With ``scale`` it
        becomes the batch's ``photons_per_unit`` (:meth:`normalise`), the shot noise a network
        bounded by each frame's noise is given (``model.net.noise.photons_per_unit=frame``)."""
        if "noise_gain" in paired or "input" not in paired:
            return paired
        size, device = paired["input"].shape[0], paired["input"].device
        if "noise_gain" in batch:
            gain = batch["noise_gain"]
        elif "noisy" not in batch and "clean" in batch and getattr(self.pairing, "noise", None):
            gain = self.pairing.noise.shot_gain(paired["input"])
            if gain is None:
                return paired
        else:
            return paired
        gain = torch.as_tensor(gain, dtype=torch.float32, device=device).reshape(-1)
        return paired | {"noise_gain": gain.expand(size) if gain.numel() == 1 else gain}

    def normalise(self, paired: dict[str, Tensor]) -> dict[str, Tensor]:
        """Normalise with the statistics the items carry, else the observed frame's; an item's
        sky map (``background``) is the offset; keep ``offset``/``scale`` so the normalisation
        can be inverted, and, where the items' gain is known, ``photons_per_unit``."""
        if "offset" in paired:
            offset, scale = paired["offset"].float(), paired["scale"].float()
        else:
            offset, scale = self.normalizer.stats(paired.get("observed", paired["input"]))
        if "background" in paired:
            offset = paired["background"].float()
        drop = NORMALISED_KEYS + MAP_KEYS
        out = {key: value for key, value in paired.items() if key not in drop}
        for key in NORMALISED_KEYS:
            if key in paired:
                out[key] = self.normalizer.forward(paired[key].float(), offset, scale)
        out["offset"], out["scale"] = offset, scale
        if "noise_gain" in paired:
            out["photons_per_unit"] = photons_per_unit(paired["noise_gain"], scale)
        return out

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, Tensor]:
        if "input" not in batch:  # training batches are paired here; fixed sets already are
            batch = dict(batch)
            statistics = {key: batch.pop(key) for key in STATISTICS_KEYS if key in batch}
            noise = {key: batch.pop(key) for key in FRAME_NOISE_KEYS if key in batch}
            rng = self.device_generator(next(iter(batch.values())).device)
            if self.augment is not None:
                # One draw for every image (and noise map) of an item.
                params = self.augment.sample(next(iter(batch.values())), rng)
                batch = {key: self.augment.apply(value, params) for key, value in batch.items()}
                if self.augment.brightness_range is not None:
                    # Carried statistics follow a brightness change exactly (linear in flux);
                    # so does the noise model: flux x g is g times fewer electrons per unit.
                    gain = params.gain.view(-1, 1, 1, 1).to(next(iter(batch.values())).device)
                    statistics = {key: value * gain for key, value in statistics.items()}
                    if noise:
                        noise = {
                            "noise_gain": noise["noise_gain"] / gain,
                            "noise_read": noise["noise_read"] * gain,
                        }
            maps = {key: batch[key] for key in PASSTHROUGH_KEYS if key in batch}
            # The sky map went through the augmentation with the images (geometry, brightness).
            sky = {key: batch.pop(key) for key in MAP_KEYS if key in batch}
            paired = self.with_gain(self.pairing(batch | noise, rng), batch | noise)
            if sky:
                sky["background"] = follow_exposure(sky["background"], batch.get("clean"), paired)
            batch = paired | maps | statistics | sky
        return self.normalise(batch)
