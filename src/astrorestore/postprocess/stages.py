"""The ``postprocess`` config: which stages run after the network, with what settings.

``postprocess`` is a mapping from stage name to its settings (a mapping) or null (off); a stage
not named is left as it is: off in training, the checkpoint's at ``infer.py`` (where the
``postprocess=`` choice is laid over the stages the checkpoint stores, key by key). Stages:

- ``give_back`` (:class:`~astrorestore.postprocess.give_back.GiveBack`): in the normalised
  space, on every restored tile; validation and test apply it too, so a run's figures are those
  of what ``infer.py`` gives. Needs the asinh normaliser's noise model.
- ``psf_cores`` (:class:`~astrorestore.postprocess.psf_cores.PSFCores`): on whole grey frames in
  their own units, after tiles are stitched (``infer.py``, and the benches that score frames);
  training refuses it, since it validates on patches.

Every stage is a callable ``stage(observed, restored, ...) -> restored``: the network's input,
its output, and the noise (the normaliser's :class:`AsinhNoise` for a tile stage; a frame stage
measures the sky noise on the frame and is given the gain).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.errors import UserError
from astrorestore.postprocess.give_back import GiveBack
from astrorestore.postprocess.psf_cores import SETTINGS as PSF_CORES_SETTINGS
from astrorestore.postprocess.psf_cores import PSFCores, describe, from_settings

#: Each stage's settings (``postprocess.<stage>.<key>``).
STAGES: dict[str, tuple[str, ...]] = {
    "give_back": tuple(f.name for f in fields(GiveBack)),
    "psf_cores": PSF_CORES_SETTINGS,
}
#: Stages that work on normalised tiles (the rest work on whole frames in their own units).
TILE_STAGES = ("give_back",)


#: The give-back's settings as networks carried them before it was a stage (``model.net.flux_*``,
#: infer.py's ``give_back.flux_*``) -> its ``postprocess.give_back`` keys: for a one-line error
#: naming the new spelling, and for upgrading old checkpoints (:mod:`astrorestore.checkpoint`).
OLD_GIVE_BACK_KEYS = {
    "flux_sigma": "detect_scale",
    "flux_threshold": "threshold",
    "flux_ramp_from": "ramp_from",
    "flux_footprint": "footprint_scale",
    "flux_chi2": "chi2_from",
    "flux_stack_snr": "stack_snr",
}


def renamed_key(key: str) -> str | None:
    """How an override key of an earlier version is spelled today (None: not a renamed key)."""
    head, _, leaf = key.rpartition(".")
    if key == "psf_cores.enabled":
        return "psf_cores.enabled=true is now postprocess=psf_cores (postprocess=none: off)"
    if head == "psf_cores":
        return f"{key} is now postprocess.{key}, with postprocess=psf_cores"
    if head in ("give_back", "model.net") and leaf in OLD_GIVE_BACK_KEYS:
        return (
            f"{key} is now postprocess.give_back.{OLD_GIVE_BACK_KEYS[leaf]}, with "
            "postprocess=give_back (flux_sigma=null is postprocess=none)"
        )
    if head == "model.net" and leaf in ("softening", "photons_per_unit"):
        return f"{key} is now model.net.noise.{leaf}"
    return None


def check_postprocess(settings: Mapping | None) -> dict[str, dict | None]:
    """``settings`` (the ``postprocess`` config) as plain dicts, with every stage name and key
    checked: a one-line UserError names the key and the allowed values."""
    if settings is None:
        return {}
    if isinstance(settings, DictConfig):
        settings = OmegaConf.to_container(settings, resolve=True)
    if not isinstance(settings, Mapping):
        raise UserError(
            f"postprocess={settings!r} is invalid: choose a config, e.g. postprocess=none, "
            "postprocess=give_back or postprocess=psf_cores"
        )
    checked: dict[str, dict | None] = {}
    for stage, values in settings.items():
        if stage not in STAGES:
            raise UserError(
                f"postprocess.{stage} is not a post-processing stage; use {', '.join(STAGES)} "
                "(postprocess=none turns them all off)"
            )
        if values is None:
            checked[stage] = None
            continue
        if not isinstance(values, Mapping):
            raise UserError(
                f"postprocess.{stage}={values!r} is invalid: give its settings "
                f"({', '.join(STAGES[stage])}) or null (off)"
            )
        unknown = [key for key in values if key not in STAGES[stage]]
        if unknown:
            raise UserError(
                f"postprocess.{stage}.{unknown[0]} is not a setting of {stage}; use "
                f"{', '.join(STAGES[stage])}"
            )
        checked[stage] = {str(k): _plain(v) for k, v in values.items()}
    return checked


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def merge_postprocess(stored: Mapping | None, override: Mapping | None) -> dict[str, dict | None]:
    """The stages a checkpoint stores (``stored``) with ``override`` laid over them: a stage
    set to null is off, a stage's settings replace the stored ones key by key."""
    merged = dict(check_postprocess(stored))
    for stage, values in check_postprocess(override).items():
        if values is None or merged.get(stage) is None:
            merged[stage] = values
        else:
            merged[stage] = {**merged[stage], **values}
    return merged


def noise_of(net: Any, normalizer: Any) -> AsinhNoise | None:
    """The noise model tile stages use: the network's own (a bounded network is given one),
    else the asinh normaliser's sky noise; None for other normalisers."""
    noise = getattr(net, "noise", None)
    if isinstance(noise, AsinhNoise):
        return noise
    softening = getattr(normalizer, "softening", None)
    return None if softening is None else AsinhNoise(softening)


class Postprocess:
    """The configured stages, built and checked; :meth:`tiles` and :meth:`frame` apply them.

    (A plain class, not a dataclass: Hydra would turn a dataclass passed to ``instantiate``
    into a config.)"""

    def __init__(
        self,
        settings: dict[str, dict | None] | None = None,
        give_back: GiveBack | None = None,
        psf_cores: PSFCores | None = None,
        noise: AsinhNoise | None = None,
    ) -> None:
        self.settings = dict(settings or {})
        self.give_back = give_back
        self.psf_cores = psf_cores
        self.noise = noise

    def __repr__(self) -> str:
        return f"Postprocess({self.settings!r}, noise={self.noise!r})"

    @property
    def on_tiles(self) -> bool:
        """True when a stage works on normalised tiles."""
        return self.give_back is not None

    @property
    def on_frames(self) -> bool:
        """True when a stage works on whole frames in their own units."""
        return self.psf_cores is not None

    def tiles(self, observed: Tensor, restored: Tensor) -> Tensor:
        """The tile stages applied to ``restored``, the network's output for ``observed``."""
        if self.give_back is not None:
            restored = self.give_back(observed, restored, self.noise)
        return restored

    def frame(self, observed: np.ndarray, restored: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The frame stages applied to a restored frame; returns it and one line per stage."""
        lines = []
        if self.psf_cores is not None:
            restored = self.psf_cores(observed, restored)
            lines.append(describe(self.psf_cores.info))
        return restored, lines

    def describe(self, tiles_only: bool = False) -> list[str]:
        """One line per stage that is on, with its settings (for HISTORY and logs);
        ``tiles_only``: the tile stages (frame stages describe what they did per frame)."""
        return [
            f"post-processing {stage}: "
            + ", ".join(f"{key}={value}" for key, value in sorted(values.items()))
            for stage, values in self.settings.items()
            if values is not None and (stage in TILE_STAGES or not tiles_only)
        ]


def build_postprocess(
    settings: Mapping | None, noise: AsinhNoise | None = None, gain: float = 1.0
) -> Postprocess:
    """The stages ``settings`` (the ``postprocess`` config) ask for. ``noise``: the tile
    stages' noise model (:func:`noise_of`); ``gain``: e- per data unit for frame stages whose
    ``gain`` is null."""
    checked = check_postprocess(settings)
    give_back = checked.get("give_back")
    cores = checked.get("psf_cores")
    built = Postprocess(settings=checked, noise=noise)
    if give_back is not None:
        built.give_back = GiveBack(**give_back)
        if noise is None:
            raise UserError(
                "postprocess.give_back works in the asinh normaliser's noise units: use it with "
                "data.normalizer=asinh (astronomical frames), or postprocess=none"
            )
    if cores is not None:
        built.psf_cores = from_settings(cores, gain)
    return built
