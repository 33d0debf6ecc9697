"""The sky of a simulated field as real frames have it, drawn per field: a smooth gradient,
vignetting, diffuse nebulosity and the level the reduction subtracted (which can exceed the true
sky: an over-subtracted, negative background).

Physics kept apart on purpose: gradient and nebulosity add light; vignetting multiplies
everything that reaches the detector (sky and sources alike); the subtracted pedestal removes a
level *after* detection, so the photon noise still comes from the photons that arrived. The
renderer therefore returns the pedestal next to the clean field, and the noise model draws on
``clean + pedestal`` (see ``NoiseModel.__call__``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from astrorestore.data.simulation.draws import draw_bounded, draw_flag, options

#: Keys of ``scene.background`` and their defaults: every feature off.
BACKGROUND_DEFAULTS: dict = {
    "gradient_probability": 0.0,
    "gradient": [0.05, 0.5],
    "vignetting_probability": 0.0,
    "vignetting": [0.1, 0.9],
    "nebulosity_probability": 0.0,
    "nebulosity": [0.05, 2.0],
    "nebulosity_slope": [2.5, 4.0],
    "pedestal_probability": 0.0,
    "pedestal": [0.9, 1.5],
}


@dataclass(frozen=True)
class Background:
    """One field's drawn background (0 / 1 where a feature is off)."""

    gradient: float = 0.0  # sky change from the centre to the farthest corner, fraction of sky
    gradient_angle: float = 0.0  # direction of the increase (radians from +x)
    vignetting: float = 1.0  # transmission at the corners (1 at the centre)
    nebulosity: float = 0.0  # mean nebulosity level, fraction of the sky
    nebulosity_slope: float = 0.0  # power spectrum P(k) ~ k^-slope
    pedestal: float = 0.0  # level subtracted after detection (electrons)

    def as_dict(self) -> dict:
        return {k: float(v) for k, v in self.__dict__.items()}


def draw_background(rng: np.random.Generator, given: Mapping | None, sky: float) -> Background:
    """Draw the background features of one field from ``scene.background``."""
    cfg = options("scene.background", given, BACKGROUND_DEFAULTS)
    key = "scene.background."
    values: dict = {}
    if draw_flag(rng, key + "gradient_probability", cfg["gradient_probability"]):
        values["gradient"] = draw_bounded(
            rng, key + "gradient", cfg["gradient"], 0.0, 1.0, "fractions of the sky in [0, 1]"
        )
        values["gradient_angle"] = float(rng.uniform(0.0, 2.0 * math.pi))
    if draw_flag(rng, key + "vignetting_probability", cfg["vignetting_probability"]):
        values["vignetting"] = draw_bounded(
            rng, key + "vignetting", cfg["vignetting"], 1e-6, 1.0, "corner transmissions in (0, 1]"
        )
    if draw_flag(rng, key + "nebulosity_probability", cfg["nebulosity_probability"]):
        values["nebulosity"] = draw_bounded(
            rng, key + "nebulosity", cfg["nebulosity"], 0.0, math.inf,
            "mean levels > 0 (fractions of the sky)", log=True,
        )  # fmt: skip
        values["nebulosity_slope"] = draw_bounded(
            rng, key + "nebulosity_slope", cfg["nebulosity_slope"], 0.0, 10.0,
            "power-spectrum slopes in [0, 10]",
        )  # fmt: skip
    if draw_flag(rng, key + "pedestal_probability", cfg["pedestal_probability"]):
        values["pedestal"] = sky * draw_bounded(
            rng, key + "pedestal", cfg["pedestal"], 0.0, math.inf,
            "subtracted levels >= 0, as fractions of the true sky (> 1: negative sky)",
        )  # fmt: skip
    return Background(**values)


def _centred_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel offsets from the field centre and the centre-to-corner distance (pixel centres)."""
    h, w = shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return xx - cx, yy - cy, max(math.hypot(cx, cy), 1e-9)


def gradient_map(shape: tuple[int, int], sky: float, fraction: float, angle: float) -> np.ndarray:
    """A plane through the sky level at the centre, ``sky * (1 +- fraction)`` at the corners
    farthest along ``angle`` (never negative for ``fraction <= 1``)."""
    dx, dy, corner = _centred_grid(shape)
    along = dx * math.cos(angle) + dy * math.sin(angle)
    return sky * fraction * along / corner


def vignetting_map(shape: tuple[int, int], corner: float) -> np.ndarray:
    """Transmission 1 at the centre falling as r^2 (the cos^4 law's leading term) to ``corner``
    at the corners' pixel centres."""
    dx, dy, reach = _centred_grid(shape)
    return 1.0 - (1.0 - corner) * (dx * dx + dy * dy) / (reach * reach)


def nebulosity_map(
    shape: tuple[int, int], rng: np.random.Generator, mean: float, slope: float
) -> np.ndarray:
    """Diffuse emission of mean ``mean``: a log-normal field whose log has the power spectrum
    ``P(k) ~ k^-slope`` (a Gaussian random field, unit variance), so it is positive, filamentary
    and smooth on the scales a steep slope favours."""
    h, w = shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = np.inf  # no mean term: the mean is set below
    amplitude = k ** (-slope / 2.0)
    phases = rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))
    field = np.fft.irfft2(amplitude * phases, s=(h, w))
    std = field.std()
    field = field / std if std > 0 else field
    # exp(g - 1/2) of a unit-variance Gaussian has mean 1.
    return mean * np.exp(field - 0.5)


def apply_background(
    image: np.ndarray, rng: np.random.Generator, background: Background, sky: float
) -> None:
    """Add the gradient and the nebulosity to ``image`` (photons, sky and sources) and vignette
    it, in place."""
    shape = image.shape
    if background.gradient > 0:
        image += gradient_map(shape, sky, background.gradient, background.gradient_angle)
    if background.nebulosity > 0:
        image += nebulosity_map(
            shape, rng, background.nebulosity * sky, background.nebulosity_slope
        )
    if background.vignetting < 1.0:
        image *= vignetting_map(shape, background.vignetting)
