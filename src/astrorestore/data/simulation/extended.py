"""Galaxies far larger than a training patch: Sersic profiles with effective radii of tens to
hundreds of pixels, optionally crossed by a dust lane, convolved with the field's PSF.

A 64 px crop of such a galaxy is a smooth, sloped background with structure: what a network
trained on small galaxies on a flat sky has never seen, and what it must neither flatten nor
lift. The profile is evaluated on the whole frame at pixel centres (no oversampling: with
``r_eff`` of tens of pixels only the central pixel of a steep n = 4 core is undersampled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from astropy.modeling.models import Sersic2D
from scipy.signal import fftconvolve

from astrorestore.data.simulation.draws import draw_bounded, draw_count, draw_flag, options

#: Keys of ``scene.extended`` and their defaults: off.
EXTENDED_DEFAULTS: dict = {
    "probability": 0.0,
    "count": [1, 2],
    "sersic_n": [0.5, 4.0],
    "r_eff": [40.0, 160.0],
    "ellipticity": [0.0, 0.7],
    "surface_brightness": [5.0, 300.0],
    "dust_probability": 0.0,
    "dust_depth": [0.3, 0.9],
    "dust_width": [0.03, 0.12],
}


def _galaxy_draws(rng: np.random.Generator, cfg: dict, shape: tuple[int, int]) -> dict:
    h, w = shape
    key = "scene.extended."
    n = draw_bounded(
        rng, key + "sersic_n", cfg["sersic_n"], 0.2, 10.0, "Sersic indices in [0.2, 10]"
    )
    r_eff = draw_bounded(
        rng, key + "r_eff", cfg["r_eff"], 0.0, math.inf, "radii > 0 (pixels)", log=True
    )
    ellip = draw_bounded(
        rng, key + "ellipticity", cfg["ellipticity"], 0.0, 0.95, "ellipticities in [0, 0.95]"
    )
    brightness = draw_bounded(
        rng, key + "surface_brightness", cfg["surface_brightness"], 0.0, math.inf,
        "levels > 0 (e-/pixel at r_eff)", log=True,
    )  # fmt: skip
    draws = {
        "x": float(rng.uniform(0.0, w - 1.0)),
        "y": float(rng.uniform(0.0, h - 1.0)),
        "sersic_n": n,
        "r_eff": r_eff,
        "ellipticity": ellip,
        "theta": float(rng.uniform(0.0, math.pi)),
        "surface_brightness": brightness,
        "dust_depth": 0.0,
        "dust_width": 0.0,
        "dust_offset": 0.0,
    }
    if draw_flag(rng, key + "dust_probability", cfg["dust_probability"]):
        depth = draw_bounded(
            rng, key + "dust_depth", cfg["dust_depth"], 0.0, 1.0, "absorbed fractions in [0, 1]"
        )
        width = draw_bounded(
            rng, key + "dust_width", cfg["dust_width"], 1e-6, 10.0, "fractions of r_eff > 0"
        )
        draws["dust_depth"], draws["dust_width"] = depth, width
        # The lane runs along the major axis, a little off the nucleus as in an inclined disc.
        draws["dust_offset"] = float(rng.uniform(-0.3, 0.3))
    return draws


def sersic_image(shape: tuple[int, int], g: dict) -> np.ndarray:
    """Surface brightness (e-/pixel) of one drawn galaxy at the pixel centres, dust included."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = Sersic2D.evaluate(
        xx, yy, g["surface_brightness"], g["r_eff"], g["sersic_n"], g["x"], g["y"],
        g["ellipticity"], g["theta"],
    )  # fmt: skip
    if g["dust_depth"] > 0:
        c, s = math.cos(g["theta"]), math.sin(g["theta"])
        along = (xx - g["x"]) * c + (yy - g["y"]) * s
        across = -(xx - g["x"]) * s + (yy - g["y"]) * c
        # Across: a Gaussian lane dust_width * r_eff wide, offset from the nucleus along the minor
        # axis (foreshortened by the axis ratio); along: it fades beyond ~1.5 r_eff.
        axis_ratio = 1.0 - g["ellipticity"]
        centre = g["dust_offset"] * g["r_eff"] * axis_ratio
        width = max(g["dust_width"] * g["r_eff"] * axis_ratio, 0.5)
        lane = np.exp(-0.5 * ((across - centre) / width) ** 2)
        lane *= np.exp(-0.5 * (along / (1.5 * g["r_eff"])) ** 2)
        image *= 1.0 - g["dust_depth"] * lane
    return image


def add_extended(
    image: np.ndarray, rng: np.random.Generator, given: Mapping | None, psf
) -> list[dict]:
    """Draw this field's large galaxies (``scene.extended``), convolve them with the field's
    ``psf`` and add them to ``image`` in place; returns their draws."""
    cfg = options("scene.extended", given, EXTENDED_DEFAULTS)
    if not draw_flag(rng, "scene.extended.probability", cfg["probability"]):
        return []
    count = draw_count(rng, "scene.extended.count", cfg["count"])
    galaxies = [_galaxy_draws(rng, cfg, image.shape) for _ in range(count)]
    if not galaxies:
        return []
    light = sum(sersic_image(image.shape, g) for g in galaxies)
    kernel = psf.stamp(psf.kernel_radius())
    # FFT ringing can leave tiny negatives far from the light: no source emits negative light.
    image += np.clip(fftconvolve(light, kernel, mode="same"), 0.0, None)
    return galaxies
