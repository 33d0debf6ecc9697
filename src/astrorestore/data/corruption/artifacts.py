"""Detector artefacts on top of photon and read noise: drop-outs, cosmic rays, hot/dead pixels and
1/f striping.

Real frames are not Poisson-Gaussian alone; a denoiser that never saw a cosmic-ray hit or NIRCam
banding during training will "restore" them as sources or smear them. Each artefact is a
``NoiseModel`` that corrupts an image in place of a draw, so it works alone (on the clean target)
or stacked after a base model in ``CompositeNoise``. All draws are batched on the image's device
with the caller's generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from astrorestore.checks import check_range
from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.errors import UserError


def _check_fraction(key: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise UserError(f"{key}={value!r} is invalid: use a value in [0, 1)")
    return value


class BernoulliDropout(NoiseModel):
    """Multiplicative pixel drop-out (as in Noise2Noise): each pixel is zeroed with probability
    ``p``, independently. Drop-outs are missing data, not noise: ``noise_sigma`` is ``None``."""

    def __init__(self, p: float = 0.1, exposure_range: Sequence[float] = (1.0, 1.0)) -> None:
        super().__init__(exposure_range)
        self.p = _check_fraction("noise.p", p)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        keep = torch.rand(image.shape, generator=rng, device=image.device) >= self.p
        return image * keep

    def __repr__(self) -> str:
        return f"BernoulliDropout(p={self.p}, exposure_range={self.exposure_range})"


class CosmicRays(NoiseModel):
    """Cosmic-ray hits added on top of the image: short straight tracks of deposited charge.

    Hits per image are Poisson with mean ``rate`` per megapixel; each deposits an energy drawn
    from a power law dN/dE ~ E^-(slope+1) on ``energy_range`` (electrons), spread evenly along a
    track of uniform random length in ``[0, max_length]`` px and random direction (length 0 is a
    single-pixel hit, as most are on thin detectors).
    """

    def __init__(
        self,
        rate: float = 500.0,
        energy_range: Sequence[float] = (500.0, 2e4),
        energy_slope: float = 1.0,
        max_length: float = 6.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
    ) -> None:
        if not rate >= 0:
            raise UserError(f"noise.rate={rate!r} is invalid: use hits per megapixel >= 0")
        if not max_length >= 0:
            raise UserError(f"noise.max_length={max_length!r} is invalid: use pixels >= 0")
        super().__init__(exposure_range)
        self.rate = float(rate)
        self.energy_range = check_range(
            "noise.energy_range", energy_range, low=0.0, strict_low=True
        )
        self.energy_slope = float(energy_slope)
        self.max_length = float(max_length)

    def _energies(self, n: int, device: torch.device, rng: torch.Generator | None) -> Tensor:
        lo, hi = self.energy_range
        u = torch.rand(n, generator=rng, device=device, dtype=torch.float64)
        if abs(self.energy_slope) < 1e-9:
            return (lo * (hi / lo) ** u).float()
        a, b = lo**-self.energy_slope, hi**-self.energy_slope
        return ((a - u * (a - b)) ** (-1.0 / self.energy_slope)).float()

    def hits(self, shape: torch.Size, device: torch.device, rng: torch.Generator | None):
        """The deposited charge map (electrons) of one draw, shape ``shape``."""
        b, h, w = shape[0], shape[-2], shape[-1]
        planes = int(math.prod(shape[:-2]))
        out = torch.zeros(planes * h * w, device=device)
        mean = torch.full((b,), self.rate * h * w / 1e6, device=device)
        counts = torch.poisson(mean, generator=rng).long()
        n = int(counts.sum())
        if n == 0:
            return out.view(shape)
        # Every channel of one image gets the same hits (one detector, one exposure).
        per_plane = planes // b
        image = torch.repeat_interleave(torch.arange(b, device=device), counts)
        x0 = torch.rand(n, generator=rng, device=device) * w
        y0 = torch.rand(n, generator=rng, device=device) * h
        length = torch.rand(n, generator=rng, device=device) * self.max_length
        angle = torch.rand(n, generator=rng, device=device) * (2.0 * math.pi)
        energy = self._energies(n, device, rng)
        steps = max(int(math.ceil(self.max_length)) * 2 + 1, 1)
        t = torch.linspace(0.0, 1.0, steps, device=device)
        xs = (x0[:, None] + t * (length * torch.cos(angle))[:, None]).floor().long()
        ys = (y0[:, None] + t * (length * torch.sin(angle))[:, None]).floor().long()
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        deposit = (energy / steps)[:, None].expand(-1, steps)
        for c in range(per_plane):
            plane = (image * per_plane + c)[:, None].expand(-1, steps)
            index = (plane * h + ys) * w + xs
            out.index_add_(0, index[inside], deposit[inside])
        return out.view(shape)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        return image + self.hits(image.shape, image.device, rng).to(image.dtype)

    def __repr__(self) -> str:
        return (
            f"CosmicRays(rate={self.rate}, energy_range={self.energy_range}, "
            f"energy_slope={self.energy_slope}, max_length={self.max_length})"
        )


class HotDeadPixels(NoiseModel):
    """Hot pixels (``hot_level`` electrons added, uniform in its range) and dead pixels (read 0).

    The map is drawn per image in ``resample``, so both frames of a ``sample_pair`` share it, as
    two exposures of one detector do; a new batch gets a new map.
    """

    def __init__(
        self,
        hot_fraction: float = 1e-4,
        dead_fraction: float = 1e-4,
        hot_level: Sequence[float] = (1e3, 2e4),
        exposure_range: Sequence[float] = (1.0, 1.0),
    ) -> None:
        super().__init__(exposure_range)
        self.hot_fraction = _check_fraction("noise.hot_fraction", hot_fraction)
        self.dead_fraction = _check_fraction("noise.dead_fraction", dead_fraction)
        if self.hot_fraction + self.dead_fraction >= 1.0:
            raise UserError(
                f"noise.hot_fraction + noise.dead_fraction = {hot_fraction + dead_fraction} is "
                "invalid: keep their sum below 1"
            )
        self.hot_level = check_range("noise.hot_level", hot_level, low=0.0)
        self._hot: Tensor | None = None
        self._dead: Tensor | None = None

    def resample(self, target: Tensor, rng: torch.Generator | None = None) -> None:
        shape = (target.shape[0], 1, *target.shape[-2:])
        u = torch.rand(shape, generator=rng, device=target.device)
        lo, hi = self.hot_level
        level = lo + (hi - lo) * torch.rand(shape, generator=rng, device=target.device)
        self._dead = u < self.dead_fraction
        hot = (u >= self.dead_fraction) & (u < self.dead_fraction + self.hot_fraction)
        self._hot = level * hot

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        if self._hot is None or self._hot.shape[0] != image.shape[0]:
            self.resample(image, rng)
        return torch.where(self._dead, torch.zeros_like(image), image + self._hot)

    @property
    def defect_mask(self) -> Tensor | None:
        """Pixels of the latest map that are hot or dead, ``(B, 1, H, W)`` bool (for masking)."""
        return None if self._hot is None else self._dead | (self._hot > 0)

    def __repr__(self) -> str:
        return (
            f"HotDeadPixels(hot_fraction={self.hot_fraction}, "
            f"dead_fraction={self.dead_fraction}, hot_level={self.hot_level})"
        )


class Striping(NoiseModel):
    """Correlated 1/f readout noise as stripes, like NIRCam's horizontal banding.

    Each row (``axis="row"``; each column for ``"column"``) gets its own 1/f^``alpha`` series
    along it, independent of the other rows: the low frequencies dominate, so a row is nearly a
    constant offset that drifts slowly. Rows are independent because reference-pixel correction
    removes the slow drift between them. ``amplitude`` is the standard deviation (electrons).
    """

    def __init__(
        self,
        amplitude: float = 2.0,
        axis: str = "row",
        alpha: float = 1.0,
        exposure_range: Sequence[float] = (1.0, 1.0),
    ) -> None:
        if not amplitude >= 0:
            raise UserError(f"noise.amplitude={amplitude!r} is invalid: use a value >= 0")
        if axis not in ("row", "column"):
            raise UserError(f"noise.axis={axis!r} is invalid: use row or column")
        if not alpha >= 0:
            raise UserError(f"noise.alpha={alpha!r} is invalid: use a value >= 0")
        super().__init__(exposure_range)
        self.amplitude = float(amplitude)
        self.axis = axis
        self.alpha = float(alpha)

    def stripes(
        self, shape: torch.Size, device: torch.device, rng: torch.Generator | None
    ) -> Tensor:
        """One draw of the stripe pattern (electrons), shape ``shape``."""
        # Work with the stripe direction last, then transpose back for columns.
        work = list(shape) if self.axis == "row" else [*shape[:-2], shape[-1], shape[-2]]
        n = work[-1]
        white = torch.randn(work, generator=rng, device=device)
        freq = torch.fft.rfftfreq(n, device=device)
        # The zero frequency takes the lowest non-zero one's weight: every stripe has an offset.
        weight = freq.clamp_min(1.0 / n) ** (-self.alpha / 2.0)
        # Exact variance of the filtered series (Parseval over the full two-sided spectrum).
        full = torch.fft.fftfreq(n, device=device).abs().clamp_min(1.0 / n) ** (-self.alpha)
        scale = self.amplitude / math.sqrt(float(full.mean()))
        out = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * weight, n=n, dim=-1) * scale
        return out if self.axis == "row" else out.transpose(-1, -2)

    def corrupt(self, image: Tensor, rng: torch.Generator | None = None) -> Tensor:
        return image + self.stripes(image.shape, image.device, rng).to(image.dtype)

    def noise_sigma(self, target: Tensor) -> Tensor:
        return torch.full_like(target, self.amplitude, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"Striping(amplitude={self.amplitude}, axis={self.axis!r}, alpha={self.alpha})"
