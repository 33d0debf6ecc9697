"""Noise models applied to whole batches of clean images, on whatever device the batch is on.

A model maps a clean batch in electrons to ``(noisy, target)``: ``target`` is the clean scene as
seen at a per-image exposure factor ``t`` (``t * clean``), ``noisy`` a noisy realisation of it.
Drawing ``t`` per image lets one model cover a range of signal-to-noise ratios; a curriculum
changes ``exposure_range`` between epochs.

Models with per-image parameters (a sigma, read-noise or gain range) draw them once per call:
the two realisations of ``sample_pair`` share them, as two exposures of one detector do, and
``noise_sigma`` describes the latest draw. Every draw uses the caller's ``torch.Generator`` (never
the global RNG) so a seeded run is reproducible on any device. Detector artefacts (drop-outs,
cosmic rays, hot pixels, striping) live in ``corruption.artifacts`` and stack with ``CompositeNoise``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from astrorestore.checks import check_range
from astrorestore.errors import UserError


def _as_range(value: Sequence[float]) -> tuple[float, float]:
    return check_range("noise.exposure_range", value, low=0.0, strict_low=True)


def _matching(param: Tensor | float, target: Tensor) -> Tensor | float:
    """A per-image parameter of the latest draw, checked against the batch it describes."""
    if isinstance(param, Tensor) and param.shape[0] != target.shape[0]:
        raise ValueError(
            f"noise_sigma got a batch of {target.shape[0]} images but the latest draw was for "
            f"{param.shape[0]}: call it with the target of that draw"
        )
    return param


def per_image_uniform(
    target: Tensor, lo: float, hi: float, rng: torch.Generator | None, log: bool = False
) -> Tensor:
    """One value per image, shaped ``(B, 1, ..., 1)`` to broadcast; uniform (or log-uniform)."""
    shape = (target.shape[0],) + (1,) * (target.dim() - 1)
    u = torch.rand(shape, generator=rng, device=target.device, dtype=torch.float32)
    if log:
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


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

    def exposure(self, clean: Tensor, rng: torch.Generator | None = None) -> Tensor | float:
        """One exposure factor ``t`` per image (``(B, 1, ..., 1)``), log-uniform in the range."""
        lo, hi = self._exposure_range
        if lo == hi:
            # No draw at all, so a fixed exposure does not shift the generator's stream.
            return lo
        shape = (clean.shape[0],) + (1,) * (clean.dim() - 1)
        u = torch.rand(shape, generator=rng, device=clean.device)
        log_lo, log_hi = math.log(lo), math.log(hi)
        return torch.exp(log_lo + u * (log_hi - log_lo))

    def scale(self, clean: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """``t * clean`` with one exposure factor ``t`` per image, log-uniform in the range."""
        return clean.float() * self.exposure(clean, rng)

    def resample(self, target: Tensor, rng: torch.Generator | None = None) -> None:
        """Draw the per-image parameters (none by default) used by the next ``corrupt`` calls."""

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """Corrupt ``image`` (electrons) with the current parameters; subclasses implement it.

        Additive and defect models also act on an already noisy image, which is how
        ``CompositeNoise`` stacks them.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither draw nor corrupt")

    def draw(self, target: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """One noisy realisation of ``target`` (electrons), with freshly drawn parameters."""
        self.resample(target, rng)
        return self.corrupt(target, rng)

    def noise_sigma(self, target: Tensor) -> Tensor | None:
        """Per-pixel noise standard deviation (electrons) of a draw from ``target`` with the
        latest parameters; ``None`` for artefacts that have no sigma (drop-outs, cosmic rays)."""
        return None

    def shot_gain(self, target: Tensor) -> Tensor | float | None:
        """Photons per unit of the latest draw's shot noise (one per image, or a number): what
        a network bounded by each frame's noise (``photons_per_unit=frame``) is given; inf for
        noise without shot noise; None where the model does not say."""
        return None

    def _scaled(
        self, clean: Tensor, rng: torch.Generator | None, pedestal: Tensor | None
    ) -> tuple[Tensor, Tensor | float]:
        """``(target, offset)``: the scaled clean scene and the scaled pedestal (0 if none)."""
        t = self.exposure(clean, rng)
        target = clean.float() * t
        return target, (0.0 if pedestal is None else pedestal.float() * t)

    def __call__(
        self, clean: Tensor, rng: torch.Generator | None = None, pedestal: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(noisy, target)``, float32, same shape and device as ``clean``.

        ``pedestal`` (electrons, broadcastable to ``clean``) is a level subtracted from the frame
        after detection (an over-subtracted sky makes ``clean`` negative): the noise is drawn on
        the photons that arrived, ``clean + pedestal``, and the pedestal subtracted afterwards,
        so the noisy frame's variance is the true photons' while its mean stays ``target``.
        """
        target, offset = self._scaled(clean, rng, pedestal)
        if pedestal is None:
            return self.draw(target, rng), target
        return self.draw(target + offset, rng) - offset, target

    def sample_pair(
        self, clean: Tensor, rng: torch.Generator | None = None, pedestal: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Two independent noisy realisations of the same scaled scene: ``(noisy1, noisy2,
        target)`` (``pedestal`` as in ``__call__``)."""
        target, offset = self._scaled(clean, rng, pedestal)
        photons = target + offset
        if type(self).draw is not NoiseModel.draw:
            # A subclass written against the older API (draw only): two full draws.
            return self.draw(photons, rng) - offset, self.draw(photons, rng) - offset, target
        # One set of per-image parameters (same detector), two independent noise draws.
        self.resample(photons, rng)
        return self.corrupt(photons, rng) - offset, self.corrupt(photons, rng) - offset, target


class PoissonGaussianNoise(NoiseModel):
    """Photon shot noise (Poisson in detected photons) plus Gaussian read noise.

    ``noisy = Poisson(target * gain) / gain + N(0, read_noise^2)``, so
    ``Var(noisy - target) = target / gain + read_noise^2`` (electrons). ``read_noise_range``
    (uniform) and ``gain_range`` (log-uniform) draw them per image instead, so one model covers
    several detectors and readout modes.
    """

    def __init__(
        self,
        gain: float = 1.0,
        read_noise: float = 5.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
        read_noise_range: Sequence[float] | None = None,
        gain_range: Sequence[float] | None = None,
    ) -> None:
        if not gain > 0:
            raise UserError(f"noise.gain={gain!r} is invalid: use a value > 0")
        if not read_noise >= 0:
            raise UserError(f"noise.read_noise={read_noise!r} is invalid: use a value >= 0")
        super().__init__(exposure_range)
        self.gain = float(gain)
        self.read_noise = float(read_noise)
        self.read_noise_range = (
            None
            if read_noise_range is None
            else check_range("noise.read_noise_range", read_noise_range, low=0.0)
        )
        self.gain_range = (
            None
            if gain_range is None
            else check_range("noise.gain_range", gain_range, low=0.0, strict_low=True)
        )
        self._gain: Tensor | float = self.gain
        self._read: Tensor | float = self.read_noise

    def resample(self, target: Tensor, rng: torch.Generator | None = None) -> None:
        # Fixed values draw nothing, so the stream (and every seeded result) is as before.
        self._gain, self._read = self.gain, self.read_noise
        if self.gain_range is not None:
            self._gain = per_image_uniform(target, *self.gain_range, rng, log=True)
        if self.read_noise_range is not None:
            self._read = per_image_uniform(target, *self.read_noise_range, rng)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        # Negative rates (never in a physical scene, possible in real sky-subtracted data) have
        # no photons to count.
        rate = (image * self._gain).clamp_min(0.0)
        noisy = torch.poisson(rate, generator=rng) / self._gain
        if isinstance(self._read, Tensor) or self._read > 0:
            noisy = noisy + self._read * torch.randn(
                image.shape, generator=rng, device=image.device, dtype=image.dtype
            )
        return noisy

    def drawn_gain_read(self, target: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """``(gain, read_noise)`` of the latest draw (per image where drawn from a range), as
        a recorrupting pairing needs them to estimate each pixel's variance from the noisy one."""
        return _matching(self._gain, target), _matching(self._read, target)

    def shot_gain(self, target: Tensor) -> Tensor | float:
        return self.drawn_gain_read(target)[0]

    def noise_sigma(self, target: Tensor) -> Tensor:
        gain, read = self.drawn_gain_read(target)
        var = target.clamp_min(0.0) / gain + torch.as_tensor(read, device=target.device) ** 2
        return torch.sqrt(var).expand_as(target)

    def __repr__(self) -> str:
        return (
            f"PoissonGaussianNoise(gain={self.gain}, read_noise={self.read_noise}, "
            f"exposure_range={self.exposure_range}, read_noise_range={self.read_noise_range}, "
            f"gain_range={self.gain_range})"
        )


class PoissonNoise(PoissonGaussianNoise):
    """Photon shot noise alone: ``Poisson(target * gain) / gain`` (electrons; integers for gain 1).

    ``gain`` is in detected photons per electron of the target, so ``Var = target / gain``.
    """

    def __init__(
        self,
        gain: float = 1.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
        gain_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__(gain, 0.0, exposure_range, gain_range=gain_range)

    def __repr__(self) -> str:
        return (
            f"PoissonNoise(gain={self.gain}, exposure_range={self.exposure_range}, "
            f"gain_range={self.gain_range})"
        )


class GaussianNoise(NoiseModel):
    """Additive white Gaussian noise: fixed ``sigma``, or per image uniform in ``sigma_range``
    (electrons)."""

    def __init__(
        self,
        sigma: float = 10.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
        sigma_range: Sequence[float] | None = None,
    ) -> None:
        if not sigma >= 0:
            raise UserError(f"noise.sigma={sigma!r} is invalid: use a value >= 0")
        super().__init__(exposure_range)
        self.sigma = float(sigma)
        self.sigma_range = (
            None if sigma_range is None else check_range("noise.sigma_range", sigma_range, low=0.0)
        )
        self._sigma: Tensor | float = self.sigma

    def resample(self, target: Tensor, rng: torch.Generator | None = None) -> None:
        self._sigma = self.sigma
        if self.sigma_range is not None:
            self._sigma = per_image_uniform(target, *self.sigma_range, rng)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        return image + self._sigma * torch.randn(
            image.shape, generator=rng, device=image.device, dtype=image.dtype
        )

    def shot_gain(self, target: Tensor) -> float:
        return math.inf  # no shot noise

    def noise_sigma(self, target: Tensor) -> Tensor:
        sigma = torch.as_tensor(_matching(self._sigma, target), device=target.device)
        return sigma.expand_as(target).float()

    def __repr__(self) -> str:
        return (
            f"GaussianNoise(sigma={self.sigma}, exposure_range={self.exposure_range}, "
            f"sigma_range={self.sigma_range})"
        )


class CompositeNoise(NoiseModel):
    """A base model (e.g. Poisson-Gaussian) followed by additive and defect models, in order.

    Each later model corrupts the running image: ``models=[PoissonGaussianNoise(), Striping(),
    CosmicRays(), HotDeadPixels()]`` is a NIRCam-like frame. Only the first model may count
    photons (Poisson): a later one would count them on an already noisy image. The composite's
    ``exposure_range`` applies; the members' own ones are ignored.
    """

    def __init__(
        self, models: Sequence[NoiseModel], exposure_range: Sequence[float] = (1.0, 1.0)
    ) -> None:
        models = list(models)
        if not models or not all(isinstance(m, NoiseModel) for m in models):
            raise UserError(
                f"noise.models={models!r} is invalid: use a non-empty list of noise models"
            )
        for m in models[1:]:
            if isinstance(m, PoissonGaussianNoise):
                raise UserError(
                    f"noise.models has {type(m).__name__} after the first model: put the "
                    "Poisson model first (it counts photons of the clean target)"
                )
        super().__init__(exposure_range)
        self.models = models

    def resample(self, target: Tensor, rng: torch.Generator | None = None) -> None:
        for m in self.models:
            m.resample(target, rng)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        for m in self.models:
            image = m.corrupt(image, rng)
        return image

    def shot_gain(self, target: Tensor) -> Tensor | float | None:
        """Only the first model counts photons (see the class docstring)."""
        return self.models[0].shot_gain(target)

    def noise_sigma(self, target: Tensor) -> Tensor | None:
        """Independent noises add in variance; artefacts without a sigma add nothing."""
        sigmas = [s for s in (m.noise_sigma(target) for m in self.models) if s is not None]
        if not sigmas:
            return None
        return torch.sqrt(sum(s.double() ** 2 for s in sigmas)).float()

    def __repr__(self) -> str:
        inner = ", ".join(repr(m) for m in self.models)
        return f"CompositeNoise(models=[{inner}], exposure_range={self.exposure_range})"
