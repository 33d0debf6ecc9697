"""The PSF-robustness fields shared by ``bench_psf_robustness.py`` and ``bench_psf_fitting.py``:
the held-out seed, scene and PSF cells, and the bright-star measures both score with."""

from __future__ import annotations

import numpy as np

# Seeds of the held-out fields: far from data.seed (0) and bench_supervised's 987_654.
HELD_OUT_SEED = 31_415_926
SKY, READ_NOISE, GAIN = 20.0, 5.0, 1.0
BRIGHT_PEAK = 1000.0  # e- above the sky at the true peak pixel
SCENE = {
    "sky": SKY,
    "n_stars": 60,
    "n_galaxies": 25,
    "n_bright_stars": 12,
    "saturation": None,
}
CELLS = [
    {"name": f"moffat fwhm={f} beta={b}", "psf": "moffat", "psf_fwhm": f, "psf_beta": b}
    for b in (2.5, 4.5)
    for f in (1.2, 1.6, 2.5, 3.5, 5.0)
] + [
    {
        "name": "jwst-like airy fwhm=1.8 + 6 spikes",
        "psf": "airy",
        "psf_fwhm": 1.8,
        "spikes": 6,
        "spike_length": 12.0,
        "spike_intensity": 0.05,
    }
]


def bright_stars(truth: np.ndarray, catalog: dict, fwhm: float) -> list[tuple[int, int, float]]:
    """Isolated bright stars away from the edges: (row, col, x, y) of their true peak pixel."""
    h, w = truth.shape
    xs, ys, fluxes = catalog["x"], catalog["y"], catalog["flux"]
    margin = int(np.ceil(3 * fwhm)) + 2
    stars = []
    for i in np.flatnonzero(catalog["kind"] == 0):
        x, y = xs[i], ys[i]
        if not (margin <= x < w - margin and margin <= y < h - margin):
            continue
        distance = np.hypot(xs - x, ys - y)
        neighbours = (distance < 4 * fwhm) & (distance > 0) & (fluxes > 0.01 * fluxes[i])
        if neighbours.any():
            continue
        row, col = int(round(y)), int(round(x))
        box = truth[row - 1 : row + 2, col - 1 : col + 2]
        dr, dc = np.unravel_index(int(np.argmax(box)), box.shape)
        row, col = row + dr - 1, col + dc - 1
        if truth[row, col] - SKY >= BRIGHT_PEAK:
            stars.append((row, col, float(x), float(y)))
    return stars


def star_shapes(image, truth, stars, fwhm) -> tuple[np.ndarray, np.ndarray]:
    """Peak-pixel ratios and fitted-FWHM ratios (image / truth) of the given stars."""
    from photutils.psf import fit_fwhm

    if not stars:
        return np.zeros(0), np.zeros(0)
    peaks = np.array([(image[r, c] - SKY) / (truth[r, c] - SKY) for r, c, _, _ in stars])
    xy = [(x, y) for _, _, x, y in stars]
    shape = max(5, 2 * int(round(1.5 * fwhm)) + 1)
    fit = lambda a: fit_fwhm(a - SKY, xypos=xy, fwhm=fwhm, fit_shape=shape)  # noqa: E731
    return peaks, fit(image) / fit(truth)


def aperture_errors(image, truth, catalog, fwhm) -> np.ndarray:
    from photutils.aperture import CircularAperture, aperture_photometry

    stars = catalog["kind"] == 0
    aperture = CircularAperture(
        np.column_stack([catalog["x"][stars], catalog["y"][stars]]), 2 * fwhm
    )
    true_flux = aperture_photometry(truth, aperture)["aperture_sum"].data - SKY * aperture.area
    flux = aperture_photometry(image, aperture)["aperture_sum"].data - SKY * aperture.area
    noise = np.sqrt(aperture.area * (SKY / GAIN + READ_NOISE**2) + np.clip(true_flux, 0, None))
    keep = true_flux > 10 * noise
    return (flux[keep] - true_flux[keep]) / true_flux[keep]
