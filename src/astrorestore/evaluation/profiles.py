"""Surface-brightness profiles of extended galaxies: does a restoration keep their light?

Star photometry (``photometry``) judges compact sources; a galaxy's faint outskirts are where
a denoiser that smooths or biases low surface brightness shows it. The galaxies are found on the
truth (photutils segmentation and ``SourceCatalog``); each gets elliptical annuli (photutils
``EllipticalAnnulus``, centre and shape from the catalog) out to where the truth's mean falls to
one noise sigma above the sky. The same pixels are then averaged in any image of the frame, so
every method is measured on identical annuli.

The bias of an annulus is relative to the truth's light above the sky,
``(mean(image) - mean(truth)) / (mean(truth) - mean(sky))``. Relative, not in sigma of the
annulus mean: a galaxy's profile is read as a shape (Sersic index, scale length) and a total
magnitude, both of which a fractional error distorts the same way at every brightness, whereas
in sigma of the mean the bright core's many-sigma but sub-percent errors would dominate. The
denominator never nears zero because the annuli stop where the truth is one sigma above the sky.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# Compact sources (stars, unresolved galaxies) have second-moment sigmas of ~1-2 px; an
# extended galaxy is wider than this along its major axis.
MIN_SEMIMAJOR_SIGMA = 3.0
# The segmentation threshold above the sky (noise sigmas) and the smallest segment (pixels).
DETECT_SIGMA = 2.0
MIN_PIXELS = 25
# Annuli along the semi-major axis: at least FIRST px wide, then GROWTH of their inner radius
# (thin where the profile is steep, wider outside where its light is faint).
FIRST = 2.0
GROWTH = 0.2
# An annulus needs this many pixels (and half its area) inside the frame and off other sources.
MIN_ANNULUS_PIXELS = 12


@dataclass
class Annulus:
    """One elliptical annulus of one galaxy: the flat indices of its pixels and the truth's
    light above the sky there (mean, in the image's units)."""

    galaxy: int
    a_in: float
    a_out: float
    pixels: np.ndarray
    sky: float
    excess: float


def _value(source, name: str, before_photutils_3: str) -> float:
    """A catalog attribute under its photutils 3 name, or the older one (project: >= 1.12)."""
    value = (
        getattr(source, name)
        if hasattr(type(source), name)
        else getattr(source, before_photutils_3)
    )
    return float(getattr(value, "value", value))


def _ring(shape, xy, a_in, a_out, q, theta) -> np.ndarray:
    from photutils.aperture import EllipticalAnnulus, EllipticalAperture

    if a_in > 0:
        aperture = EllipticalAnnulus(xy, a_in, a_out, q * a_out, theta=theta)
    else:
        aperture = EllipticalAperture(xy, a_out, q * a_out, theta=theta)
    return aperture.to_mask(method="center").to_image(shape).astype(bool)


def galaxy_annuli(
    truth: np.ndarray,
    sky: np.ndarray,
    sigma: float,
    count: int = 3,
    max_annuli: int = 30,
) -> list[Annulus]:
    """The annuli of the ``count`` largest extended galaxies of ``truth`` (above ``sky``, a map
    or a number; ``sigma``: the noisy frame's noise), largest first; [] when there is none.

    Extended: a segment whose semi-major second-moment sigma is at least
    ``MIN_SEMIMAJOR_SIGMA`` px. Pixels of other segments are left out of each annulus, so a
    neighbour's light is not counted as the galaxy's.
    """
    from photutils.segmentation import SourceCatalog, detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning

    excess = np.asarray(truth, np.float64) - sky
    sky_map = np.broadcast_to(np.asarray(sky, np.float64), excess.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # no galaxy: [] below
        segments = detect_sources(excess, DETECT_SIGMA * sigma, MIN_PIXELS)
    if segments is None:
        return []
    catalog = SourceCatalog(excess, segments)
    extended = [
        s
        for s in catalog
        if np.isfinite(_value(s, "semimajor_axis", "semimajor_sigma"))
        and _value(s, "semimajor_axis", "semimajor_sigma") >= MIN_SEMIMAJOR_SIGMA
    ]
    extended.sort(key=lambda s: -float(s.area.value))
    annuli: list[Annulus] = []
    for number, source in enumerate(extended[:count]):
        others = (segments.data != 0) & (segments.data != source.label)
        xy = (_value(source, "x_centroid", "xcentroid"), _value(source, "y_centroid", "ycentroid"))
        q = max(1.0 - float(source.ellipticity.value), 0.05)
        theta = float(source.orientation.to("rad").value)
        a_in, a_out, kept = 0.0, FIRST, 0
        while kept < max_annuli:
            area = np.pi * q * (a_out**2 - a_in**2)
            if area < 2 * MIN_ANNULUS_PIXELS:  # a small core: widen its first annulus
                a_out += FIRST
                continue
            ring = _ring(excess.shape, xy, a_in, a_out, q, theta) & ~others
            pixels = np.flatnonzero(ring)
            if pixels.size < max(MIN_ANNULUS_PIXELS, 0.5 * area):
                break  # mostly off the frame or under other sources
            mean_excess = float(excess.flat[pixels].mean())
            if mean_excess < sigma:
                break
            annuli.append(
                Annulus(number, a_in, a_out, pixels, float(sky_map.flat[pixels].mean()),
                        mean_excess)
            )  # fmt: skip
            kept += 1
            a_in, a_out = a_out, a_out + max(FIRST, GROWTH * a_out)
    return annuli


def profile_biases(image: np.ndarray, truth: np.ndarray, annuli: list[Annulus]) -> np.ndarray:
    """Each annulus's ``(mean(image) - mean(truth)) / (truth's mean above the sky)``."""
    image, truth = np.asarray(image, np.float64), np.asarray(truth, np.float64)
    return np.array(
        [(image.flat[a.pixels].mean() - truth.flat[a.pixels].mean()) / a.excess for a in annuli]
    )


def profile_bias_summary(
    image: np.ndarray, truth: np.ndarray, annuli: list[Annulus]
) -> dict[str, float]:
    """Median and worst (largest in size, signed) relative bias over all annuli of all the
    galaxies; NaN without annuli."""
    biases = profile_biases(image, truth, annuli)
    if biases.size == 0:
        return {"median": float("nan"), "worst": float("nan")}
    return {"median": float(np.median(biases)), "worst": float(biases[np.argmax(np.abs(biases))])}
