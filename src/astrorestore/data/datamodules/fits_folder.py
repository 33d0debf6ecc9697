"""Real telescope frames as training data: ``data=jwst`` and ``data=fits``.

A folder of FITS frames is prepared once (``prepare.prepare_folder``: manifest, frame-level
split, memory-mapped tile cache, QC) and then served by the tile datasets. What a training item
is depends on where the targets come from (docs/data.md, "Which frames can be training targets"):

- frames as they are (default): ``noisy`` + ``valid`` — for self-supervised methods (Noise2Void);
- ``pairs=true``: two exposures of one pointing, ``noisy`` + ``noisy2`` + ``valid`` — real
  Noise2Noise pairs;
- ``deep_as_clean=true``: deep, high-S/N frames act as ``clean`` + ``valid`` and the pairing
  injects the configured noise — supervised or Noise2Noise training.

``valid`` reaches the pairing, which turns it into ``loss_mask``: flagged and NaN pixels are
never targets. Values are electrons when the headers allow the conversion (else the file's
units, e.g. MJy/sr), and the network sees them asinh-normalised.

**Normalisation agrees with inference.** ``infer.py`` fits one (sky, noise) pair per whole
image. Where the frames are used as they are, training uses exactly that: each crop is
normalised with its parent frame's statistics, computed once per cache entry with the
normaliser's own definition (``tile_cache.tile_stats`` for the asinh normaliser, tested equal
to ``AsinhNormalizer.stats``). With ``deep_as_clean`` the observed frame is a noise draw made
per batch, whose whole-frame statistics do not exist, so crops are normalised on their own
statistics (the shared default); ``tests/unit/test_fits_folder.py`` measures on a full-sized
frame how little that changes the normalised values.

Per-pixel noise maps (ERR or VAR_*) travel with the frames as they are: batches carry ``sigma``
(and ``sigma2`` for pairs) in the same physical units as before normalisation, with ``offset``
and ``scale`` to map them into the normalised space.

**Each frame's noise model** (``FrameNoise``: gain and read noise from its header, its ERR/VAR
map or a mean-variance fit on its pixels; ``data.preparation.frame_noise``) is found at set-up
when the pairing asks for it (``needs_frame_noise``, the recorrupting pairing of ``model=r2r``):
``frame_noise`` holds it per split, every item carries its frame's ``noise_gain`` and
``noise_read`` and ``provides`` gains ``frame_noise``. Other pairings never pay for the fit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from astrorestore.data.corruption.noise_estimate import FrameNoise
from astrorestore.data.datamodules.base import PairedDataModule
from astrorestore.data.pairings.base import Pairing
from astrorestore.data.preparation.frame_noise import frame_noise_models
from astrorestore.data.preparation.frame_statistics import (
    frame_sky_maps,
    frame_statistics,
    use_frame_stats,
    use_sky_maps,
)
from astrorestore.data.preparation.manifest import discover_fits
from astrorestore.data.preparation.prepare import prepare_folder
from astrorestore.data.preparation.tile_cache import Prepared
from astrorestore.data.sources.demo_frames import DEMO_GAIN, ensure_demo_frames
from astrorestore.data.sources.tile_dataset import ExposurePairs, FixedTileCrops, RandomTileCrops
from astrorestore.errors import UserError

log = logging.getLogger(__name__)

# A crop "contains a source" when a valid pixel exceeds the sky by this many noise sigmas.
SOURCE_SIGMA = 10.0
SOURCE_TRIES = 10
# Keys the simulated data's debug presets (debug=tiny) set; a FITS folder has no such sizes.
_SIMULATED_ONLY = {
    "field_size",
    "n_train_fields",
    "n_val_fields",
    "n_test_fields",
    "val_patches_per_field",
    "scene",
}


class SourceTileCrops(RandomTileCrops):
    """Random crops, a share of them (``source_patch_fraction``) redrawn until they contain a
    source (a valid pixel ``SOURCE_SIGMA`` noise sigmas above the crop's sky)."""

    def __init__(self, *args: Any, source_patch_fraction: float = 0.0, softening: float = 3.0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.source_patch_fraction = float(source_patch_fraction)
        self.softening = float(softening)

    def _has_source(self, item: dict[str, Tensor]) -> bool:
        # Above the sky map where the crop has one, else above the frame's sky level.
        values = (item["noisy"] - item.get("background", item["offset"]))[item["valid"]]
        sigma = item["scale"].item() / self.softening
        return values.numel() > 0 and values.max().item() > SOURCE_SIGMA * sigma

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = super().__getitem__(index)
        # Checked first, so a fraction of 0 draws nothing and leaves the crop stream unchanged.
        if (
            self.source_patch_fraction > 0
            and self._generator().random() < self.source_patch_fraction
        ):
            for _ in range(SOURCE_TRIES - 1):
                if self._has_source(item):
                    break
                item = super().__getitem__(index)
        return item


class FrameItems(Dataset):
    """A tile dataset's items as the data module provides them (see the module docstring)."""

    def __init__(self, dataset: Dataset, deep_as_clean: bool) -> None:
        self.dataset = dataset
        self.deep_as_clean = deep_as_clean

    @property
    def rank(self) -> int:
        return getattr(self.dataset, "rank", 0)

    @rank.setter
    def rank(self, value: int) -> None:
        self.dataset.rank = value

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.dataset[index]
        if self.deep_as_clean:
            # The deep frame's own sigma and statistics do not describe the injected noise; its
            # sky map does describe the clean scene (scaled with the exposure drawn).
            keep = {"clean": item["noisy"], "valid": item["valid"]}
            return keep | ({"background": item["background"]} if "background" in item else {})
        return item


def _counts_photons(noise: Any) -> bool:
    """Whether a noise model draws Poisson counts (meaningful only in electrons)."""
    from astrorestore.data.corruption.noise import PoissonGaussianNoise

    models = getattr(noise, "models", None) or [noise]
    return any(isinstance(m, PoissonGaussianNoise) for m in models)


class FitsFolderDataModule(PairedDataModule):
    """A folder of FITS frames (``root``), or the embedded simulated JWST-like frames.

    Args (config keys ``data.*``):
        root: folder of FITS frames (searched recursively); None = the demo frames in
            ``demo_dir`` (written once), or an error when ``demo_dir`` is None too.
        cache_dir: where the tile cache goes (default ``<root>/.astrorestore-cache``).
        demo_dir: folder of the embedded demo frames; None = no demo (``data=fits``).
        name: the data's name in messages (``jwst``, ``fits``).
        tile_size, stride: tiles of the cache; patch_size: training crop size.
        patches_per_epoch: random training crops per epoch; val_patches: fixed crops (or
            pairs) in the validation and in the test set.
        min_valid: smallest share of valid pixels in a crop.
        hdu, plane, gain, allow_mixed, val_fraction, test_fraction: see ``prepare_folder``.
        read_noise: read noise in e- for the pairings that use each frame's noise model
            (``model=r2r``); None = each frame's own (header, ERR/VAR map or a fit).
        pairs: train on real exposure pairs (Noise2Noise).
        pair_key: header keyword naming the field of registered exposures (e.g. OBJECT):
            frames with equal values (and instrument, filter, shape) are one pointing, for the
            split and for ``pairs``; None = frames with equal WCS (to 0.1 px).
        deep_as_clean: treat the frames as clean, high-S/N scenes; the pairing adds the noise.
        source_patch_fraction: share of training crops redrawn until they hold a source.
        progress: show a progress bar while preparing.
        Others: see :class:`~astrorestore.data.datamodules.base.PairedDataModule`.
    """

    channels = 1
    sky_maps = True

    def __init__(
        self,
        pairing: Pairing,
        normalizer: Any,
        root: str | None = None,
        cache_dir: str | None = None,
        demo_dir: str | None = None,
        name: str = "fits",
        tile_size: int = 512,
        stride: int = 256,
        patch_size: int = 64,
        batch_size: int = 16,
        patches_per_epoch: int = 1024,
        val_patches: int = 64,
        min_valid: float = 0.5,
        hdu: int | str | None = None,
        plane: int | None = None,
        gain: float | None = None,
        read_noise: float | None = None,
        allow_mixed: bool = False,
        pairs: bool = False,
        pair_key: str | None = None,
        deep_as_clean: bool = False,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        source_patch_fraction: float = 0.0,
        progress: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        augment: Any = None,
        **simulated_only: Any,
    ) -> None:
        unknown = sorted(set(simulated_only) - _SIMULATED_ONLY)
        if unknown:
            raise UserError(f"data.{unknown[0]} is not a setting of data={name}; remove it")
        if pairs and deep_as_clean:
            raise UserError(
                "data.pairs=true and data.deep_as_clean=true exclude each other: real exposure "
                "pairs are noisy, deep frames are clean; set one of them to false"
            )
        for key, value in (
            ("patch_size", patch_size),
            ("patches_per_epoch", patches_per_epoch),
            ("val_patches", val_patches),
        ):
            if int(value) != value or value <= 0:
                raise UserError(f"data.{key}={value} is invalid: use an integer > 0")
        if int(stride) != stride or not 1 <= stride <= tile_size:
            raise UserError(
                f"data.stride={stride} is invalid: use an integer in [1, data.tile_size={tile_size}]"
            )
        if patch_size > tile_size:
            raise UserError(
                f"data.patch_size={patch_size} is larger than data.tile_size={tile_size}: use "
                "a patch no larger than a tile"
            )
        if not 0.0 < min_valid <= 1.0:
            raise UserError(f"data.min_valid={min_valid} is invalid: use a value in (0, 1]")
        if not 0.0 <= source_patch_fraction <= 1.0:
            raise UserError(
                f"data.source_patch_fraction={source_patch_fraction} is invalid: use a value in "
                "[0, 1]"
            )
        if pair_key is not None and not (
            isinstance(pair_key, str) and pair_key.strip() and len(pair_key.strip()) <= 8
        ):
            raise UserError(
                f"data.pair_key={pair_key!r} is invalid: give a FITS header keyword (up to 8 "
                "characters, e.g. OBJECT), or null to pair frames by their WCS"
            )
        if root is None and demo_dir is None:
            raise UserError(
                f"data={name} needs data.root=<folder of FITS frames> (data=jwst without a root "
                "trains on embedded simulated frames)"
            )
        if root is not None:
            discover_fits(Path(root))  # a missing or empty folder fails now, in one line
        # What the items hold decides which pairings can use them: known before the base's check.
        self.data_name = name
        # Frames as they are carry their own noise model when the pairing asks for it.
        self.wants_frame_noise = bool(getattr(pairing, "needs_frame_noise", False)) and not (
            pairs or deep_as_clean
        )
        self.provides = frozenset(
            {"clean", "valid"}
            if deep_as_clean
            else {"noisy", "noisy2", "valid"}
            if pairs
            else {"noisy", "valid"} | ({"frame_noise"} if self.wants_frame_noise else set())
        )
        if read_noise is not None and not (math.isfinite(read_noise) and read_noise >= 0):
            raise UserError(
                f"data.read_noise={read_noise!r} is invalid: pass the read noise in e- (>= 0), "
                "or null to read it from each frame"
            )
        self.pairs, self.deep_as_clean = bool(pairs), bool(deep_as_clean)
        self.pair_key = None if pair_key is None else pair_key.strip().upper()
        super().__init__(pairing, normalizer, batch_size, num_workers, seed, augment)
        self.root = None if root is None else Path(root)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.demo_dir = None if demo_dir is None else Path(demo_dir)
        self.tile_size, self.stride = int(tile_size), int(stride)
        self.patch_size = int(patch_size)
        self.patches_per_epoch = int(patches_per_epoch)
        self.val_patches = int(val_patches)
        self.min_valid = float(min_valid)
        self.hdu, self.plane, self.gain = hdu, plane, gain
        self.read_noise = None if read_noise is None else float(read_noise)
        #: Each frame's noise model per split (``FrameNoise``), for pairings that use it.
        self.frame_noise: dict[str, list[FrameNoise]] | None = None
        self.allow_mixed = bool(allow_mixed)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self._source_patch_fraction = float(source_patch_fraction)
        self.progress = bool(progress)
        self.prepared: Prepared | None = None

    # ------------------------------------------------------------------ preparation
    @property
    def softening(self) -> float:
        return float(getattr(self.normalizer, "softening", 3.0))

    def check_pairing(self, pairing: Pairing) -> None:
        """A pairing that frames as they are cannot feed may be fed by the other two modes: say
        so (only for that refusal: other errors of the set-up are not about targets)."""
        try:
            super().check_pairing(pairing)
        except UserError as exc:
            if self.pairs or self.deep_as_clean:
                raise
            raise UserError(
                f"{exc} (or, with data={self.data_name}: data.deep_as_clean=true if the frames "
                "are deep, data.pairs=true for repeated exposures)"
            ) from None

    def prepare_data(self) -> None:
        self._prepare()

    def _prepare(self) -> Prepared:
        """Prepare the folder (a cache hit after the first time) and fit frame statistics."""
        if self.prepared is not None:
            return self.prepared
        root, gain = self.root, self.gain
        if root is None:
            root = ensure_demo_frames(self.demo_dir)
            if gain is None:
                gain = DEMO_GAIN
                log.info("demo frames: gain %.1f e-/DN, as data.gain would give it", gain)
        prepared = prepare_folder(
            root,
            self.cache_dir,
            tile_size=self.tile_size,
            stride=self.stride,
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            hdu=self.hdu,
            plane=self.plane,
            gain=gain,
            softening=self.softening,
            allow_mixed=self.allow_mixed,
            progress=self.progress,
            pairs=self.pairs,
            pair_key=self.pair_key,
        )
        if self.deep_as_clean and prepared.units != "electron":
            if _counts_photons(self.pairing.noise):
                raise UserError(
                    f"data.deep_as_clean with a Poisson noise model needs frames in electrons, "
                    f"but {root} stays in {prepared.units}; pass data.gain=<e-/DN> (with "
                    "PHOTMJSR and an exposure time in the headers) or use noise=gaussian"
                )
        use_frame_stats(prepared, frame_statistics(prepared, self.normalizer))
        if getattr(self.normalizer, "per_pixel", False):
            use_sky_maps(prepared, frame_sky_maps(prepared, self.normalizer))
        if self.wants_frame_noise:
            self.frame_noise = frame_noise_models(prepared, root, self.read_noise)
            for split, models in self.frame_noise.items():
                for i, noise in enumerate(models):
                    log.info("data=%s %s frame %d: %s", self.data_name, split, i, noise.describe())
        s = prepared.summary()
        log.info(
            "data=%s: %s frames, %s %s, tiles %s, in %s; the network sees them asinh-normalised "
            "per %s",
            self.data_name,
            s["files"],
            "bands of them" if s["bands"] else "frames",
            s["frames"],
            s["tiles"],
            s["units"],
            "patch (after the injected noise)"
            if self.deep_as_clean
            else "band"
            if s["bands"]
            else "whole frame",
        )
        self.prepared = prepared
        return prepared

    # ------------------------------------------------------------------ sets
    def build_sets(self) -> tuple[Dataset, Dataset, Dataset | None]:
        prepared = self._prepare()
        p, n = self.patch_size, self.val_patches
        if self.pairs:
            train = ExposurePairs(
                prepared, "train", p, self.patches_per_epoch, min_valid=self.min_valid
            )

            def fixed(split: str) -> Dataset:
                return ExposurePairs(
                    prepared, split, p, n, min_valid=self.min_valid, fixed_seed=self.seed
                )
        else:
            train = SourceTileCrops(
                prepared,
                "train",
                p,
                self.patches_per_epoch,
                min_valid=self.min_valid,
                source_patch_fraction=self._source_patch_fraction,
                softening=self.softening,
            )

            def fixed(split: str) -> Dataset:
                return FixedTileCrops(prepared, split, p, n, min_valid=self.min_valid)

        val, test = fixed("val"), None
        if prepared.frames["test"]:
            test = fixed("test")
        if self.frame_noise is not None:
            for split, dataset in (("train", train), ("val", val), ("test", test)):
                if dataset is not None:
                    dataset.frame_values = self._noise_values(split)
        else:
            # Too few pointings for a test split (split_counts keeps one for training and one
            # for validation first) or data.test_fraction=0: train and validate, skip the test.
            log.info(
                "data=%s: no test split (%d pointing group(s), data.test_fraction=%g); "
                "the test after training is skipped",
                self.data_name,
                len({r.group for r in prepared.rows}),
                self.test_fraction,
            )
        return tuple(
            FrameItems(d, self.deep_as_clean) if d is not None else None for d in (train, val, test)
        )

    def need_frame_noise(self) -> None:
        """Find each frame's noise model at set-up even where the pairing does not ask: a
        network bounded by each frame's noise (``model.net.noise.photons_per_unit=frame``)
        is given it per batch. Frames with a truth or a pair draw or carry their own noise."""
        if not (self.pairs or self.deep_as_clean):
            self.wants_frame_noise = True
            self.provides = self.provides | {"frame_noise"}

    def _noise_values(self, split: str) -> dict[str, np.ndarray]:
        """The split's frames' gain (e-/unit) and read-noise sigma (units), as the recorrupting
        pairing reads them (``FRAME_NOISE_KEYS``)."""
        models = self.frame_noise[split]
        return {
            "noise_gain": np.array([m.gain for m in models], np.float64),
            "noise_read": np.array([m.read_noise for m in models], np.float64),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self._prepare()
        super().setup(stage)

    # ------------------------------------------------------------------ curriculum
    def stage_settings(self) -> dict:
        settings = super().stage_settings()
        if not self.deep_as_clean:
            # The noise model is never drawn from on frames used as they are: an exposure range
            # would change nothing, so a curriculum that sets one is refused, not ignored.
            settings.pop("exposure_range", None)
        if not self.pairs:
            settings["source_patch_fraction"] = self._set_source_patch_fraction
        return settings

    def _set_source_patch_fraction(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise UserError(f"data.source_patch_fraction={value} is invalid: use a value in [0, 1]")
        self._source_patch_fraction = float(value)
        if self.train_set is not None:  # workers copy the dataset each epoch, so this reaches them
            self.train_set.dataset.source_patch_fraction = float(value)
