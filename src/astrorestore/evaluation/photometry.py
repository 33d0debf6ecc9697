"""Aperture photometry and depth: does a restoration keep fluxes, and how much fainter does it see?

Fluxes are sums in circular apertures minus a sky that is either known (simulations, or a sky map)
or the sigma-clipped median of an annulus. Bias and scatter are robust (median and 1.4826 MAD)
because a handful of blended sources should not decide the verdict. Depth is the magnitude at
which completeness falls to 90 % while purity stays at least 90 %, searched over detection
thresholds, so a method cannot buy depth with spurious detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.stats import SigmaClip
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture

_MAD_TO_SIGMA = 1.4826


def aperture_fluxes(
    image: np.ndarray,
    xy: np.ndarray,
    radius: float,
    *,
    sky: float | np.ndarray | None = None,
    annulus: tuple[float, float] | None = None,
) -> np.ndarray:
    """Sky-subtracted aperture sums (electrons) at ``xy`` (``(N, 2)`` of x, y).

    ``sky``: a level per pixel (scalar) or a sky map; if ``None`` the sky is the sigma-clipped
    median in ``annulus`` = (r_in, r_out), default (2, 3) times ``radius``. NaN pixels are
    masked (their share of the aperture is lost, not invented).
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0)
    mask = ~np.isfinite(image)
    aperture = CircularAperture(xy, r=radius)
    if sky is not None and np.ndim(sky) == 2:
        # A sky map: subtract it pixel by pixel, then the aperture sum is already sky-free.
        stats = ApertureStats(image - sky, aperture, mask=mask, sum_method="exact")
        return np.atleast_1d(np.asarray(stats.sum, float))
    stats = ApertureStats(image, aperture, mask=mask, sum_method="exact")
    total = np.atleast_1d(np.asarray(stats.sum, float))
    area = np.atleast_1d(np.asarray(stats.sum_aper_area.value, float))
    if sky is None:
        r_in, r_out = annulus or (2.0 * radius, 3.0 * radius)
        ring = ApertureStats(
            image, CircularAnnulus(xy, r_in, r_out), mask=mask, sigma_clip=SigmaClip(sigma=3.0)
        )
        level = np.atleast_1d(np.asarray(ring.median, float))
    else:
        level = np.full(len(xy), float(sky))
    return total - level * area


def magnitudes(flux: np.ndarray, zeropoint: float = 0.0) -> np.ndarray:
    """``zeropoint - 2.5 log10(flux)``; NaN for flux <= 0."""
    flux = np.asarray(flux, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)


def flux_errors(measured: np.ndarray, true: np.ndarray) -> dict:
    """Relative error ``(measured - true) / true``: its median (bias) and robust scatter."""
    measured, true = np.asarray(measured, float), np.asarray(true, float)
    ok = np.isfinite(measured) & np.isfinite(true) & (true > 0)
    relative = (measured[ok] - true[ok]) / true[ok]
    if len(relative) == 0:
        return {"n": 0, "bias": None, "scatter": None, "relative": relative}
    bias = float(np.median(relative))
    scatter = float(_MAD_TO_SIGMA * np.median(np.abs(relative - bias)))
    return {"n": int(len(relative)), "bias": bias, "scatter": scatter, "relative": relative}


def binned_median(
    x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 3
) -> dict[str, list]:
    """Median and robust scatter of ``y`` in bins of ``x``; bins with too few points are left out."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    centers, medians, scatters, counts = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (x >= lo) & (x < hi) & np.isfinite(y)
        if inside.sum() < min_count:
            continue
        values = y[inside]
        med = float(np.median(values))
        centers.append(float(0.5 * (lo + hi)))
        medians.append(med)
        scatters.append(float(_MAD_TO_SIGMA * np.median(np.abs(values - med))))
        counts.append(int(inside.sum()))
    return {"center": centers, "median": medians, "scatter": scatters, "count": counts}


def magnitude_edges(mags: np.ndarray, width: float = 0.5) -> np.ndarray:
    """Bin edges of ``width`` magnitudes covering the finite values of ``mags``."""
    finite = np.asarray(mags, float)[np.isfinite(mags)]
    if len(finite) == 0:
        return np.array([0.0, width])
    lo = np.floor(finite.min() / width) * width
    hi = np.ceil(finite.max() / width) * width + width
    return np.arange(lo, hi + 1e-9, width)


def completeness_curve(mags: np.ndarray, matched: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Fraction of reference sources found, per magnitude bin (empty bins left out)."""
    mags, matched = np.asarray(mags, float), np.asarray(matched, bool)
    centers, fractions, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (mags >= lo) & (mags < hi)
        if inside.any():
            centers.append(float(0.5 * (lo + hi)))
            fractions.append(float(matched[inside].mean()))
            counts.append(int(inside.sum()))
    return {"center": centers, "completeness": fractions, "count": counts}


def magnitude_at_completeness(
    mags: np.ndarray, matched: np.ndarray, level: float = 0.9, window: int = 10
) -> float | None:
    """Faintest magnitude at which completeness is still ``level``.

    Sources are sorted bright to faint and completeness is measured in running windows of
    ``window`` sources (so sparse fields still give a curve). The limit is interpolated
    between the faintest window at or above ``level`` and the next one. Taking the faintest
    such window, rather than the first one below, keeps one blended bright star from setting
    the depth. ``None`` if no window reaches ``level`` or there are fewer than ``window`` sources.
    """
    mags, matched = np.asarray(mags, float), np.asarray(matched, bool)
    finite = np.isfinite(mags)
    order = np.argsort(mags[finite])
    mags, matched = mags[finite][order], matched[finite][order].astype(float)
    if len(mags) < window:
        return None
    kernel = np.ones(window) / window
    running = np.convolve(matched, kernel, mode="valid")
    centre = np.convolve(mags, kernel, mode="valid")
    above = np.nonzero(running >= level - 1e-12)[0]
    if len(above) == 0:
        return None
    last = above[-1]
    if last == len(running) - 1:
        return float(centre[-1])
    c0, c1 = running[last], running[last + 1]
    m0, m1 = centre[last], centre[last + 1]
    return float(m0 + (c0 - level) / (c0 - c1) * (m1 - m0))


def depth_at_purity(
    mags: np.ndarray,
    matched_by_threshold: Sequence[np.ndarray],
    n_detected: Sequence[int],
    n_spurious: Sequence[int],
    *,
    completeness: float = 0.9,
    purity: float = 0.9,
) -> dict:
    """Deepest 90 %-completeness magnitude over the thresholds whose purity is >= 90 %.

    Returns ``magnitude`` (``None`` if no threshold qualifies) and the ``threshold_index``
    that reached it.
    """
    best, best_index = None, None
    for index, (found, n_det, n_spur) in enumerate(
        zip(matched_by_threshold, n_detected, n_spurious, strict=True)
    ):
        if n_det == 0 or (n_det - n_spur) / n_det < purity:
            continue
        limit = magnitude_at_completeness(mags, found, completeness)
        if limit is not None and (best is None or limit > best):
            best, best_index = limit, index
    return {"magnitude": best, "threshold_index": best_index}


def finite_median(values: np.ndarray | list) -> float | None:
    """Median of the finite values, ``None`` (not NaN) when there are none."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None
