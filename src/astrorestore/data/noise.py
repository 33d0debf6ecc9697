"""Noise models applied to whole batches of clean images, on whatever device the batch is on.

A model maps a clean batch in electrons to ``(noisy, target)``: ``target`` is the clean scene as
seen at a per-image exposure factor ``t`` (``t * clean``), ``noisy`` a noisy realisation of it.
Drawing ``t`` per image lets one model cover a range of signal-to-noise ratios; a curriculum
changes ``exposure_range`` between epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from astrorestore.errors import UserError


def _as_range(value: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(
            f"noise.exposure_range={value!r} is invalid: use [lo, hi] with 0 < lo <= hi"
        ) from None
    if not (0.0 < lo <= hi):
        raise UserError(
            f"noise.exposure_range={value!r} is invalid: use [lo, hi] with 0 < lo <= hi"
        )
    return lo, hi


class NoiseModel:
    """Base class: per-image exposure scaling plus a model-specific noise draw."""

    def __init__(self, exposure_range: Sequence[float] = (1.0, 1.0)) -> None:
        self.exposure_range = exposure_range

    @property
    def exposure_range(self) -> tuple[float, float]:
        """Range of the per-image exposure factor, drawn log-uniformly."""
        return self._exposure_range

    @exposure_range.setter
    def exposure_range(self, value: Sequence[float]) -> None:
        # Validated on every change: a curriculum stage sets it from config values.
        self._exposure_range = _as_range(value)

    def scale(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``t * clean`` with one exposure factor ``t`` per image, log-uniform in the range."""
        lo, hi = self._exposure_range
        clean = clean.float()
        if lo == hi:
            # No draw at all, so a fixed exposure does not shift the generator's stream.
            return clean * lo
        shape = (clean.shape[0],) + (1,) * (clean.dim() - 1)
        u = torch.rand(shape, generator=generator, device=clean.device)
        log_lo, log_hi = math.log(lo), math.log(hi)
        t = torch.exp(log_lo + u * (log_hi - log_lo))
        return clean * t

    def draw(self, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One noisy realisation of ``target`` (electrons)."""
        raise NotImplementedError

    def __call__(
        self, clean: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(noisy, target)``, float32, same shape and device as ``clean``."""
        target = self.scale(clean, generator)
        return self.draw(target, generator), target

    def sample_pair(
        self, clean: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Two independent noisy realisations of the same scaled scene: ``(noisy1, noisy2, target)``."""
        target = self.scale(clean, generator)
        return self.draw(target, generator), self.draw(target, generator), target


class PoissonGaussianNoise(NoiseModel):
    """Photon shot noise (Poisson in detected photons) plus Gaussian read noise.

    ``noisy = Poisson(target * gain) / gain + N(0, read_noise^2)``, so
    ``Var(noisy - target) = target / gain + read_noise^2`` (electrons).
    """

    def __init__(
        self,
        gain: float = 1.0,
        read_noise: float = 5.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
    ) -> None:
        if not gain > 0:
            raise UserError(f"noise.gain={gain!r} is invalid: use a value > 0")
        if not read_noise >= 0:
            raise UserError(f"noise.read_noise={read_noise!r} is invalid: use a value >= 0")
        super().__init__(exposure_range)
        self.gain = float(gain)
        self.read_noise = float(read_noise)

    def draw(self, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # Negative rates (never in a physical scene, possible in real sky-subtracted data) have
        # no photons to count.
        rate = (target * self.gain).clamp_min(0.0)
        noisy = torch.poisson(rate, generator=generator) / self.gain
        if self.read_noise > 0:
            noisy = noisy + self.read_noise * torch.randn(
                target.shape, generator=generator, device=target.device, dtype=target.dtype
            )
        return noisy

    def __repr__(self) -> str:
        return (
            f"PoissonGaussianNoise(gain={self.gain}, read_noise={self.read_noise}, "
            f"exposure_range={self.exposure_range})"
        )


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise of fixed ``sigma`` (electrons)."""

    def __init__(self, sigma: float = 10.0, exposure_range: Sequence[float] = (1.0, 1.0)) -> None:
        if not sigma >= 0:
            raise UserError(f"noise.sigma={sigma!r} is invalid: use a value >= 0")
        super().__init__(exposure_range)
        self.sigma = float(sigma)

    def draw(self, target: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return target + self.sigma * torch.randn(
            target.shape, generator=generator, device=target.device, dtype=target.dtype
        )

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma}, exposure_range={self.exposure_range})"
