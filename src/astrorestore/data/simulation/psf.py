"""Point-spread functions of the simulated fields: Moffat, Gaussian and Airy-like (with spikes).

A denoiser trained on one PSF learns it as a prior and imposes it on every star, so the scene
renderer draws a PSF per field. Rendering and evaluation (PSF fits, aperture corrections) must use
the very same profile, which is why it lives here, in one place, as a small value object.

Profiles are evaluated on a grid ``_OVERSAMPLE`` times finer than the pixels and binned, so pixel
values approximate the pixel-integrated flux even for an undersampled 1.2 px core.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.modeling.models import Moffat2D
from scipy.ndimage import shift as subpixel_shift
from scipy.special import j1

from astrorestore.errors import UserError
from astrorestore.io.images import read_image

PSF_FAMILIES = ("moffat", "gaussian", "airy")

_OVERSAMPLE = 3
# A star stamp extends until the profile drops below this (electrons per pixel): far below the
# sky noise (~4.5 e- for a 20 e- sky), so truncating the wings leaves no visible edge.
_WING_FLOOR = 0.02
_MAX_STAR_RADIUS = 64
# FWHM of the Airy pattern in units of lambda/D.
_AIRY_FWHM = 1.028993969962188
_GAUSS_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


# (2 J1(v) / v)^2 tabulated once: interpolating it is several times cheaper than Bessel calls on
# every oversampled pixel of every star; a 0.005 step keeps the error below 1e-5 of the peak.
_AIRY_STEP = 0.005
_AIRY_V = np.arange(0.0, 2000.0, _AIRY_STEP)
_AIRY_TABLE = np.ones_like(_AIRY_V)
_AIRY_TABLE[1:] = (2.0 * j1(_AIRY_V[1:]) / _AIRY_V[1:]) ** 2


def _airy_intensity(v: np.ndarray) -> np.ndarray:
    """Normalised Airy intensity (2 J1(v) / v)^2, 1 at the centre (linear in the table)."""
    # The table is uniform, so the index is a multiplication, not np.interp's binary search.
    pos = np.minimum(v * (1.0 / _AIRY_STEP), len(_AIRY_V) - 2.0)
    index = pos.astype(np.intp)
    frac = pos - index
    lower = _AIRY_TABLE[index]
    return lower + frac * (_AIRY_TABLE[index + 1] - lower)


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width alpha (astropy's ``gamma``) that gives the requested FWHM."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def oversampled_grid(radius: int, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates of a (2r+1)^2 stamp, relative to a source at (dx, dy)."""
    n = 2 * radius + 1
    step = 1.0 / _OVERSAMPLE
    # Sub-sample centres within each pixel, e.g. -1/3, 0, +1/3 for an oversampling of 3.
    sub = (np.arange(n * _OVERSAMPLE) + 0.5) * step - 0.5 - radius
    return np.meshgrid(sub - dx, sub - dy)


def bin_oversampled(samples: np.ndarray) -> np.ndarray:
    """Sum each ``_OVERSAMPLE``^2 block of sub-samples into one pixel."""
    n = samples.shape[0] // _OVERSAMPLE
    return samples.reshape(n, _OVERSAMPLE, n, _OVERSAMPLE).sum(axis=(1, 3))


@dataclass(frozen=True)
class PSF:
    """One field's PSF.

    Attributes:
        family: ``moffat`` (seeing-limited, ground), ``gaussian`` or ``airy`` (diffraction-limited,
            space); only ``airy`` has diffraction spikes, since they come from the secondary
            mirror's supports of a diffraction-limited telescope.
        fwhm: full width at half maximum of the core (pixels).
        beta: Moffat power index (smaller = stronger wings); unused by the other families.
        spikes: number of diffraction spikes (0, 4 or 6; the first points along +y as on NIRCam).
        spike_length: e-folding length of a spike's brightness along it (pixels).
        spike_intensity: fraction of the total flux in the spikes, in [0, 1).
    """

    family: str = "moffat"
    fwhm: float = 2.5
    beta: float = 3.0
    spikes: int = 0
    spike_length: float = 10.0
    spike_intensity: float = 0.05

    def __post_init__(self) -> None:
        if self.family not in PSF_FAMILIES:
            raise UserError(
                f"scene.psf={self.family!r} is invalid: use one of {', '.join(PSF_FAMILIES)}"
            )
        if not self.fwhm > 0 or (self.family == "moffat" and not self.beta > 1):
            raise UserError(
                f"scene psf_fwhm={self.fwhm}, psf_beta={self.beta} are invalid: "
                "use fwhm > 0, beta > 1"
            )
        if self.spikes not in (0, 4, 6):
            raise UserError(f"scene.spikes={self.spikes!r} is invalid: use 0, 4 or 6")
        if not self.spike_length > 0:
            raise UserError(f"scene.spike_length={self.spike_length!r} is invalid: use a value > 0")
        if not 0.0 <= self.spike_intensity < 1.0:
            raise UserError(
                f"scene.spike_intensity={self.spike_intensity!r} is invalid: use a value in [0, 1)"
            )

    @property
    def has_spikes(self) -> bool:
        return self.family == "airy" and self.spikes > 0 and self.spike_intensity > 0

    def as_scene_keywords(self) -> dict:
        """The ``render_field``/``render_psf_stamp`` keywords that reproduce this PSF."""
        d = asdict(self)
        return {
            "psf": d["family"],
            "psf_fwhm": float(d["fwhm"]),
            # beta means nothing outside the Moffat family; NaN says so in the catalog.
            "psf_beta": float(d["beta"]) if self.family == "moffat" else math.nan,
            "spikes": int(d["spikes"]) if self.family == "airy" else 0,
            "spike_length": float(d["spike_length"]),
            "spike_intensity": float(d["spike_intensity"]),
        }

    def _core(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Core surface brightness; unit total flux except Moffat (peak 1, renormalised later)."""
        if self.family == "moffat":
            alpha = moffat_alpha(self.fwhm, self.beta)
            return Moffat2D.evaluate(xx, yy, 1.0, 0.0, 0.0, alpha, self.beta)
        r2 = xx * xx + yy * yy
        if self.family == "gaussian":
            sigma = self.fwhm / _GAUSS_FWHM
            return np.exp(-0.5 * r2 / sigma**2) / (2.0 * math.pi * sigma**2)
        scale = self.fwhm / _AIRY_FWHM  # lambda/D in pixels
        v = np.sqrt(r2) * (np.pi / scale)
        return (math.pi / (4.0 * scale**2)) * _airy_intensity(v)

    def _spikes(self, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Unit-flux sum of the spikes: exponential along each ray, core-wide Gaussian across."""
        sigma = self.fwhm / _GAUSS_FWHM
        total = np.zeros_like(xx)
        # Spikes come in opposite pairs (4 or 6), so each pair is one line through the centre:
        # half as many exponentials as rays.
        for k in range(self.spikes // 2):
            theta = math.pi / 2 + 2.0 * math.pi * k / self.spikes
            c, s = math.cos(theta), math.sin(theta)
            along = np.abs(xx * c + yy * s)
            across = xx * (s / sigma) - yy * (c / sigma)
            total += np.exp(-along / self.spike_length - 0.5 * across * across)
        return total / (self.spikes * self.spike_length * math.sqrt(2.0 * math.pi) * sigma)

    def stamp(self, radius: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """Pixel-integrated ``(2r+1)^2`` stamp of a source at sub-pixel offset (dx, dy), summing
        to 1 (the light beyond the stamp is put back into it)."""
        xx, yy = oversampled_grid(radius, dx, dy)
        if self.has_spikes:
            f = self.spike_intensity
            profile = (1.0 - f) * self._core(xx, yy) + f * self._spikes(xx, yy)
        else:
            profile = self._core(xx, yy)
        stamp = bin_oversampled(profile)
        return stamp / stamp.sum()

    def kernel_radius(self) -> int:
        """Radius of a centred kernel holding the core (5 FWHM) and, if any, the spikes."""
        radius = math.ceil(5 * self.fwhm)
        if self.has_spikes:
            radius = max(radius, math.ceil(3 * self.spike_length))
        return int(min(radius, _MAX_STAR_RADIUS))

    def star_radius(self, flux: float) -> int:
        """Stamp half-size at which a star of ``flux`` electrons falls below the wing floor."""
        if self.family == "moffat":
            alpha = moffat_alpha(self.fwhm, self.beta)
            peak = flux * (self.beta - 1.0) / (math.pi * alpha**2)
            ratio = max(peak / _WING_FLOOR, 1.0)
            r = alpha * math.sqrt(ratio ** (1.0 / self.beta) - 1.0)
        elif self.family == "gaussian":
            sigma = self.fwhm / _GAUSS_FWHM
            peak = flux / (2.0 * math.pi * sigma**2)
            r = sigma * math.sqrt(2.0 * math.log(max(peak / _WING_FLOOR, 1.0)))
        else:
            # Airy rings are bounded by 8 / (pi v^3) of the peak, the peak being pi/(4 L^2).
            scale = self.fwhm / _AIRY_FWHM
            v = (2.0 * flux / (scale**2 * _WING_FLOOR)) ** (1.0 / 3.0)
            r = v * scale / math.pi
        if self.has_spikes:
            sigma = self.fwhm / _GAUSS_FWHM
            spike_peak = (
                flux
                * self.spike_intensity
                / (self.spikes * self.spike_length * math.sqrt(2.0 * math.pi) * sigma)
            )
            r = max(r, self.spike_length * math.log(max(spike_peak / _WING_FLOOR, 1.0)))
        return int(min(max(math.ceil(r), math.ceil(3 * self.fwhm)), _MAX_STAR_RADIUS))


@lru_cache(maxsize=8)
def _load_stamp(path: str, mtime_ns: int) -> tuple[np.ndarray, float, float]:
    """The file's stamp padded to odd sides, clipped at 0 and normalised, and its centroid's
    offset from the central pixel (``mtime_ns`` only keys the cache)."""
    try:
        data = read_image(path).data
    except UserError as exc:
        raise UserError(f"scene.psf_file={path!r} is invalid: {exc}") from None
    if data.ndim != 2 or min(data.shape) < 3 or not np.all(np.isfinite(data)):
        raise UserError(
            f"scene.psf_file={path!r} is invalid: it holds a {'x'.join(map(str, data.shape))} "
            "image with non-finite pixels or not 2-D; use a 2-D stamp (>= 3x3) of one star"
        )
    # A measured stamp carries sky noise: its negative pixels are noise, not negative light.
    stamp = np.clip(data.astype(np.float64), 0.0, None)
    total = stamp.sum()
    if not total > 0:
        raise UserError(f"scene.psf_file={path!r} is invalid: the stamp holds no positive flux")
    side = max(stamp.shape) | 1  # odd, square: a central pixel to centre sources on
    square = np.zeros((side, side))
    square[: stamp.shape[0], : stamp.shape[1]] = stamp / total
    yy, xx = np.mgrid[0:side, 0:side]
    c = side // 2
    return square, float((square * xx).sum() - c), float((square * yy).sum() - c)


class StampPSF:
    """A PSF measured by the user (``scene.psf_file``: a FITS stamp of a star), used in place of
    the analytic families: sources are placed at its flux centroid, shifted to their sub-pixel
    position by cubic-spline interpolation, and every stamp is renormalised to unit flux."""

    family = "file"
    has_spikes = False
    beta = math.nan

    def __init__(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        mtime = path.stat().st_mtime_ns if path.is_file() else 0
        self.path = str(path)
        self.data, self.x0, self.y0 = _load_stamp(self.path, mtime)
        half = self.data.shape[0] // 2
        # FWHM of a circle with the area of the pixels above half the peak.
        area = float(np.count_nonzero(self.data >= 0.5 * self.data.max()))
        self.fwhm = 2.0 * math.sqrt(area / math.pi)
        self._radius = int(min(half, _MAX_STAR_RADIUS))

    def as_scene_keywords(self) -> dict:
        return {"psf_file": self.path}

    def kernel_radius(self) -> int:
        return self._radius

    def star_radius(self, flux: float) -> int:
        return self._radius

    def stamp(self, radius: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
        """Unit-flux ``(2r+1)^2`` stamp of a source at sub-pixel offset (dx, dy)."""
        shifted = self.data
        if dx - self.x0 or dy - self.y0:
            shifted = subpixel_shift(self.data, (dy - self.y0, dx - self.x0), order=3)
            shifted = np.clip(shifted, 0.0, None)
        half, n = self.data.shape[0] // 2, 2 * radius + 1
        out = np.zeros((n, n))
        r = min(radius, half)
        out[radius - r : radius + r + 1, radius - r : radius + r + 1] = shifted[
            half - r : half + r + 1, half - r : half + r + 1
        ]
        return out / out.sum()
