"""Realistic simulated deep fields: stars and PSF-convolved Sersic galaxies on a sky.

A network trained on one PSF learns it and imposes it on real stars, so each field can draw its own
PSF (Moffat, Gaussian or Airy-like with spikes; FWHM from undersampled to well sampled), sky level,
crowding and saturation; with scalar options the field is exactly today's single-PSF field.

Every source is rendered on a small local stamp (not the full frame) and the stamp is normalised
to the source's catalog flux, so a 256x256 field takes a few tens of milliseconds and the pixels
of an isolated source sum exactly to its catalog flux (less whatever falls off the frame edge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.modeling.models import Sersic2D
from scipy.signal import fftconvolve

from astrorestore.checks import check_range
from astrorestore.data.simulation.background import apply_background, draw_background
from astrorestore.data.simulation.draws import check_probability, draw_flag
from astrorestore.data.simulation.draws import draw_count as _draw_count
from astrorestore.data.simulation.draws import draw_float as _draw_float
from astrorestore.data.simulation.extended import add_extended
from astrorestore.data.simulation.psf import (
    PSF,
    PSF_FAMILIES,
    StampPSF,
    bin_oversampled,
    moffat_alpha,
    oversampled_grid,
)
from astrorestore.errors import UserError

__all__ = ["PSF", "moffat_alpha", "power_law_fluxes", "render_field", "render_psf_stamp"]

# Galaxies are truncated at this many effective radii (the flux beyond is negligible for the image).
_GALAXY_EXTENT = 4.0
_MAX_GALAXY_RADIUS = 48
# Brightest-star flux band, as a fraction of the top of star_flux_range: the cores of these stars
# reach ~1e4 e- so every field has the dynamic range of a real deep image.
_BRIGHT_BAND = 3.0


def power_law_fluxes(
    rng: np.random.Generator, n: int, lo: float, hi: float, slope: float
) -> np.ndarray:
    """Draw ``n`` fluxes with dN/dF proportional to F^-(slope+1) on [lo, hi] (inverse CDF)."""
    u = rng.random(n)
    if abs(slope) < 1e-9:
        # slope 0 is the log-uniform limit of the formula below.
        return lo * (hi / lo) ** u
    a, b = lo**-slope, hi**-slope
    return (a - u * (a - b)) ** (-1.0 / slope)


def _add_stamp(image: np.ndarray, stamp: np.ndarray, cx: int, cy: int) -> None:
    """Add ``stamp`` centred on pixel (cx, cy), clipping it at the frame edges."""
    r = stamp.shape[0] // 2
    h, w = image.shape
    y0, y1 = cy - r, cy + r + 1
    x0, x1 = cx - r, cx + r + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1 = stamp.shape[0] - max(0, y1 - h)
    sx1 = stamp.shape[1] - max(0, x1 - w)
    image[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] += stamp[sy0:sy1, sx0:sx1]


def _check_flux_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    return check_range(name, value, low=0.0, strict_low=True)


def _draw_family(rng: np.random.Generator, psf) -> str:
    """A family name, or one drawn from a ``{family: probability}`` mapping."""
    if isinstance(psf, str):
        return psf
    try:
        names = [str(k) for k in psf]
        weights = np.array([float(psf[k]) for k in psf], dtype=np.float64)
    except (TypeError, ValueError, KeyError):
        names, weights = [], np.zeros(0)
    unknown = [n for n in names if n not in PSF_FAMILIES]
    if not names or unknown or np.any(weights < 0) or not weights.sum() > 0:
        raise UserError(
            f"scene.psf={psf!r} is invalid: use one of {', '.join(PSF_FAMILIES)} or a mapping "
            "of them to probabilities >= 0 (not all 0)"
        )
    cdf = np.cumsum(weights / weights.sum())
    return names[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(names) - 1)]


def render_field(
    size: int | tuple[int, int],
    rng: np.random.Generator,
    *,
    sky: float | Sequence[float] = 20.0,
    n_stars: int | Sequence[int] = 60,
    n_galaxies: int | Sequence[int] = 25,
    psf_fwhm: float | Sequence[float] = 2.5,
    psf_beta: float | Sequence[float] = 3.0,
    star_flux_range: tuple[float, float] = (3e2, 3e5),
    galaxy_flux_range: tuple[float, float] = (5e2, 1e5),
    flux_slope: float = 1.5,
    n_bright_stars: int = 2,
    psf: str | Mapping[str, float] = "moffat",
    spikes: int = 0,
    spike_length: float = 10.0,
    spike_intensity: float = 0.05,
    saturation: float | None = None,
    background: Mapping | None = None,
    extended: Mapping | None = None,
    bleed: float = 0.0,
    psf_file: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Render a noiseless field in electrons, sky included, and its source catalog.

    Star and galaxy fluxes follow power-law number counts (dN/dF ~ F^-(slope+1)) so most sources
    are faint; in addition ``n_bright_stars`` of the ``n_stars`` are drawn log-uniformly from the
    top of ``star_flux_range`` (within a factor 3 of its maximum), since a pure power law over a
    small field rarely produces the 1e4 e- cores that make real data hard. Sources sit at
    sub-pixel positions and are integrated over the pixels (oversampled, then binned).

    Every keyword marked "or range" takes a scalar (used as is) or ``[lo, hi]`` (one value drawn
    per field), so one config can train on many PSFs, skies and crowding levels; the defaults
    reproduce the original single-PSF field bit for bit.

    Args:
        size: ``H`` for a square field, or ``(H, W)``.
        rng: source of all randomness (same generator state -> identical field).
        sky: flat sky level (electrons per pixel), or range (log-uniform).
        n_stars: number of stars, bright ones included, or inclusive range (crowding).
        n_galaxies: number of galaxies, or inclusive range.
        psf_fwhm: PSF FWHM (pixels), or range (log-uniform: 1.2 px undersampled to 5 px).
        psf_beta: Moffat power index (smaller = stronger wings), or range (uniform).
        star_flux_range: total star flux limits (electrons).
        galaxy_flux_range: total galaxy flux limits (electrons).
        flux_slope: power-law slope of the number counts.
        n_bright_stars: stars drawn from the top of the flux range.
        psf: ``moffat``, ``gaussian`` or ``airy``, or ``{family: probability}`` to mix them.
        spikes: diffraction spikes of the ``airy`` family (0, 4 or 6).
        spike_length: e-folding length of the spikes (pixels).
        spike_intensity: fraction of a star's flux in its spikes, in [0, 1).
        saturation: full well (electrons); pixels above it are clipped to it. ``None``: off.
        background: ``scene.background`` (see ``background.BACKGROUND_DEFAULTS``): per-field
            gradient, vignetting, nebulosity and subtracted pedestal, each with its probability.
        extended: ``scene.extended`` (see ``extended.EXTENDED_DEFAULTS``): Sersic galaxies larger
            than a patch, with dust lanes.
        bleed: probability that a field's saturated charge bleeds along its columns (needs
            ``saturation``) instead of being clipped away.
        psf_file: a FITS stamp of a measured star, used instead of the analytic ``psf``.

    Everything added after the PSF and the sky (large galaxies, gradient, nebulosity,
    vignetting, bleeding, pedestal) is drawn after the stars and galaxies, and only when switched
    on, so the fields of configs without it are unchanged bit for bit. The returned image is the
    clean field *after* the pedestal was subtracted (negative where the sky was over-subtracted);
    ``catalog["pedestal"]`` is that level, and the photons that arrived are
    ``image + catalog["pedestal"]`` (the level the noise must be drawn from).

    Returns:
        ``(image, catalog)``: ``image`` is float32 ``(H, W)``; ``catalog`` holds arrays ``x``
        (column), ``y`` (row), ``flux`` (electrons), ``kind`` (0 star, 1 galaxy), ``r_eff``
        (pixels, 0 for stars), ``sersic_n`` (0 for stars), ``saturated`` (bool: the source's
        central pixel reached the full well), and the scalars ``sky``, ``psf_fwhm``,
        ``psf_beta`` (NaN outside Moffat), ``psf_family``, ``saturation`` and ``psf`` (the
        keywords that rebuild this field's PSF, e.g. ``render_psf_stamp(**catalog["psf"])``),
        and, when any of ``background``, ``extended``, ``bleed`` or ``psf_file`` is given,
        ``pedestal`` (electrons subtracted after detection, 0 when off), ``background`` (the
        drawn background features), ``extended`` (a list of the large galaxies' draws) and
        ``bleed`` (whether saturated charge bled).
    """
    h, w = _field_shape(size)
    settings = _draw_field_settings(rng, psf, psf_fwhm, psf_beta, sky, n_stars, n_galaxies)
    _check_counts_and_levels(settings, n_bright_stars, saturation)
    # A user's PSF replaces the analytic one; the family and width are still drawn above, so the
    # rest of the field's stream does not depend on whether a file is given.
    field_psf = _make_psf(
        psf_file,
        settings.family,
        settings.fwhm,
        settings.beta,
        spikes,
        spike_length,
        spike_intensity,
    )
    star_range = _check_flux_range("scene.star_flux_range", star_flux_range)
    galaxy_range = _check_flux_range("scene.galaxy_flux_range", galaxy_flux_range)

    image = np.full((h, w), float(settings.sky), dtype=np.float64)
    stars = _add_stars(
        image, rng, field_psf, settings.n_stars, n_bright_stars, star_range, flux_slope
    )
    galaxies = _add_galaxies(image, rng, field_psf, settings.n_galaxies, galaxy_range, flux_slope)
    large = add_extended(image, rng, extended, field_psf)
    drawn_background = draw_background(rng, background, settings.sky)
    apply_background(image, rng, drawn_background, settings.sky)
    check_probability("scene.bleed", bleed)
    bleeds = saturation is not None and draw_flag(rng, "scene.bleed", bleed)
    if bleeds:
        # Charge above the full well runs along the column instead of being lost.
        bleed_columns(image, float(saturation))
    saturated = _saturate(
        image,
        np.concatenate([stars.x, galaxies.x]),
        np.concatenate([stars.y, galaxies.y]),
        saturation,
    )
    if drawn_background.pedestal:
        image -= drawn_background.pedestal
    catalog = _catalog(stars, galaxies, saturated, settings, field_psf, saturation)
    if background is not None or extended is not None or bleed or psf_file is not None:
        # Only calls that use these options get their keys: older catalogs stay as they were.
        catalog.update(
            pedestal=drawn_background.pedestal,
            background=drawn_background.as_dict(),
            extended=large,
            bleed=bool(bleeds),
        )
    return image.astype(np.float32), catalog


def _make_psf(
    psf_file, family, fwhm, beta, spikes, spike_length, spike_intensity
) -> PSF | StampPSF:
    """The user's measured stamp when ``psf_file`` is given, else the analytic family."""
    if psf_file is not None:
        return StampPSF(psf_file)
    return PSF(
        family, float(fwhm), float(beta), int(spikes), float(spike_length), float(spike_intensity)
    )


@dataclass(frozen=True)
class _FieldSettings:
    """The per-field draws of a scene: PSF family and shape, sky, source counts."""

    family: str
    fwhm: float
    beta: float
    sky: float
    n_stars: int
    n_galaxies: int


@dataclass(frozen=True)
class _Sources:
    """Positions (pixels), fluxes (electrons) and, for galaxies, Sersic ``n`` and ``r_eff``."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    sersic_n: np.ndarray | None = None
    r_eff: np.ndarray | None = None


def _field_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int | np.integer) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise UserError(f"scene size={size!r} is invalid: use a positive int or (H, W)")
    return h, w


def _draw_field_settings(
    rng: np.random.Generator, psf, psf_fwhm, psf_beta, sky, n_stars, n_galaxies
) -> _FieldSettings:
    # Per-field draws happen only for the options given as ranges or mixtures, before any source
    # is drawn, so a scalar-only call consumes exactly the random stream it always did.
    return _FieldSettings(
        family=_draw_family(rng, psf),
        fwhm=_draw_float(rng, "scene.psf_fwhm", psf_fwhm, low=0.0, log=True),
        beta=_draw_float(rng, "scene.psf_beta", psf_beta, low=1.0, log=False),
        sky=_draw_float(rng, "scene.sky", sky, low=0.0, log=True),
        n_stars=_draw_count(rng, "scene.n_stars", n_stars),
        n_galaxies=_draw_count(rng, "scene.n_galaxies", n_galaxies),
    )


def _check_counts_and_levels(
    settings: _FieldSettings, n_bright_stars: int, saturation: float | None
) -> None:
    n_stars, n_galaxies, sky = settings.n_stars, settings.n_galaxies, settings.sky
    if n_stars < 0 or n_galaxies < 0 or n_bright_stars < 0:
        raise UserError(
            f"scene n_stars={n_stars}, n_galaxies={n_galaxies}, n_bright_stars={n_bright_stars}"
            " are invalid: use counts >= 0"
        )
    if sky < 0:
        raise UserError(f"scene.sky={sky!r} is invalid: use a level >= 0 (electrons)")
    if saturation is not None and not float(saturation) > sky:
        raise UserError(
            f"scene.saturation={saturation!r} is invalid: use a full well above the sky "
            f"({sky:g} e-) or null to turn it off"
        )


def _add_stars(
    image: np.ndarray,
    rng: np.random.Generator,
    field_psf: PSF,
    n_stars: int,
    n_bright_stars: int,
    flux_range: tuple[float, float],
    flux_slope: float,
) -> _Sources:
    """Draw the stars (the brightest ``n_bright_stars`` from the top of the range) and add them
    to ``image`` at sub-pixel positions."""
    h, w = image.shape
    low, high = flux_range
    n_bright = min(n_bright_stars, n_stars)
    flux = np.concatenate(
        [
            high * (1.0 / _BRIGHT_BAND) ** rng.random(n_bright),
            power_law_fluxes(rng, n_stars - n_bright, low, high, flux_slope),
        ]
    )
    xs = rng.uniform(0.0, w - 1.0, n_stars)
    ys = rng.uniform(0.0, h - 1.0, n_stars)
    for x, y, f in zip(xs, ys, flux, strict=True):
        cx, cy = round(x), round(y)
        radius = field_psf.star_radius(f)
        _add_stamp(image, f * field_psf.stamp(radius, x - cx, y - cy), cx, cy)
    return _Sources(xs, ys, flux)


def _add_galaxies(
    image: np.ndarray,
    rng: np.random.Generator,
    field_psf: PSF,
    n_galaxies: int,
    flux_range: tuple[float, float],
    flux_slope: float,
) -> _Sources:
    """Draw Sersic galaxies, convolve each with the field's PSF and add them to ``image``."""
    h, w = image.shape
    flux = power_law_fluxes(rng, n_galaxies, *flux_range, flux_slope)
    xs = rng.uniform(0.0, w - 1.0, n_galaxies)
    ys = rng.uniform(0.0, h - 1.0, n_galaxies)
    sersic_n = rng.uniform(0.5, 4.0, n_galaxies)
    r_eff = rng.uniform(1.5, 8.0, n_galaxies)
    ellipticity = rng.uniform(0.0, 0.7, n_galaxies)
    theta = rng.uniform(0.0, math.pi, n_galaxies)
    # One centred PSF kernel serves every galaxy; its truncation (5 FWHM for the core) loses a
    # little light, which the per-stamp renormalisation below puts back.
    kernel = field_psf.stamp(field_psf.kernel_radius())
    for x, y, f, n, reff, ellip, angle in zip(
        xs, ys, flux, sersic_n, r_eff, ellipticity, theta, strict=True
    ):
        cx, cy = round(x), round(y)
        radius = int(min(math.ceil(_GALAXY_EXTENT * reff), _MAX_GALAXY_RADIUS))
        xx, yy = oversampled_grid(radius, x - cx, y - cy)
        # Truncate at the extent ellipse-independently (a circle) so the stamp has no square edge.
        profile = Sersic2D.evaluate(xx, yy, 1.0, reff, n, 0.0, 0.0, ellip, angle)
        profile[np.hypot(xx, yy) > radius] = 0.0
        stamp = bin_oversampled(profile)
        # "full" convolution keeps all the light: the result grows by the kernel radius.
        stamp = np.clip(fftconvolve(stamp, kernel, mode="full"), 0.0, None)
        _add_stamp(image, f * stamp / stamp.sum(), cx, cy)
    return _Sources(xs, ys, flux, sersic_n, r_eff)


def _saturate(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, saturation: float | None
) -> np.ndarray:
    """Clip ``image`` at the full well in place; whether each source's central pixel reached it."""
    if saturation is None:
        return np.zeros(len(x), dtype=bool)
    full_well = float(saturation)
    centre = image[np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)]
    # A saturated pixel reads the full well: the light above it is lost, as on a detector.
    np.minimum(image, full_well, out=image)
    return centre >= full_well


def bleed_columns(image: np.ndarray, full_well: float) -> None:
    """Let the charge above ``full_well`` bleed along the columns, in place, as on a CCD.

    Each run of saturated pixels in a column is set to the full well and its excess charge is
    poured into the pixels above and below it, half each way, filling each to the full well
    before the next; charge that reaches the frame edge is lost. Other columns are untouched,
    no pixel exceeds the full well, and a column's charge is conserved up to the edge.
    """
    columns = np.flatnonzero((image > full_well).any(axis=0))
    for x in columns:
        column = image[:, x]
        over = column > full_well
        # Runs of saturated pixels: starts and (exclusive) ends.
        edges = np.diff(np.concatenate([[0], over.astype(np.int8), [0]]))
        for top, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            excess = float((column[top:end] - full_well).sum())
            column[top:end] = full_well
            _pour(column[:top][::-1], excess / 2.0, full_well)
            _pour(column[end:], excess / 2.0, full_well)


def _pour(pixels: np.ndarray, charge: float, full_well: float) -> None:
    """Fill ``pixels`` (a view, in order away from the core) up to the full well with
    ``charge``; whatever does not fit leaves the frame."""
    room = np.clip(full_well - pixels, 0.0, None)
    filled = np.cumsum(room)
    n_full = int(np.searchsorted(filled, charge, side="right"))
    pixels[:n_full] += room[:n_full]
    if n_full < len(pixels):
        pixels[n_full] += charge - (filled[n_full - 1] if n_full else 0.0)


def _catalog(
    stars: _Sources,
    galaxies: _Sources,
    saturated: np.ndarray,
    settings: _FieldSettings,
    field_psf: PSF | StampPSF,
    saturation: float | None,
) -> dict:
    """The field's source catalogue and the scalars that rebuild its PSF (see render_field)."""
    n_stars, n_galaxies = len(stars.x), len(galaxies.x)
    psf_keywords = field_psf.as_scene_keywords()
    return {
        "x": np.concatenate([stars.x, galaxies.x]),
        "y": np.concatenate([stars.y, galaxies.y]),
        "flux": np.concatenate([stars.flux, galaxies.flux]),
        "kind": np.concatenate(
            [np.zeros(n_stars, dtype=np.int64), np.ones(n_galaxies, dtype=np.int64)]
        ),
        "r_eff": np.concatenate([np.zeros(n_stars), galaxies.r_eff]),
        "sersic_n": np.concatenate([np.zeros(n_stars), galaxies.sersic_n]),
        "saturated": saturated,
        "sky": float(settings.sky),
        "psf_fwhm": float(field_psf.fwhm),
        "psf_beta": psf_keywords.get("psf_beta", math.nan),
        "psf_family": field_psf.family,
        "saturation": None if saturation is None else float(saturation),
        "psf": psf_keywords,
    }


def render_psf_stamp(
    radius: int | None = None,
    *,
    psf: str = "moffat",
    psf_fwhm: float = 2.5,
    psf_beta: float = 3.0,
    spikes: int = 0,
    spike_length: float = 10.0,
    spike_intensity: float = 0.05,
    dx: float = 0.0,
    dy: float = 0.0,
    psf_file: str | None = None,
) -> np.ndarray:
    """Unit-flux, pixel-integrated ``(2r+1)^2`` stamp of a field's PSF, for fits and apertures.

    Takes the same PSF keywords as ``render_field`` (scalars only), so the stamp of a rendered
    field is ``render_psf_stamp(**catalog["psf"])``. ``radius`` defaults to the galaxy kernel's
    (5 FWHM, longer with spikes); ``(dx, dy)`` shifts the source within the central pixel.
    """
    field_psf = _make_psf(psf_file, psf, psf_fwhm, psf_beta, spikes, spike_length, spike_intensity)
    if radius is None:
        radius = field_psf.kernel_radius()
    if int(radius) < 1:
        raise UserError(f"psf stamp radius={radius!r} is invalid: use an integer >= 1")
    return field_psf.stamp(int(radius), float(dx), float(dy))
