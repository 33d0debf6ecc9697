"""PSNR/SSIM in physical units with the data range stated, and empty-sky noise reduction.

PSNR depends entirely on the data range it is quoted against, and an astronomical image's
max - min is set by one bright star core. Here the default range is the truth's 0.5-99.5
percentile range in electrons (robust to a single core and to hot pixels) and every result
carries the range it used, so numbers from different reports can be compared honestly. The
project's normalised-space convention (asinh space, truth max - min there) is reported too,
through ``astrorestore.metrics.image_quality``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.metrics.image_quality import psnr_per_image, ssim_per_image

DEFAULT_PERCENTILES = (0.5, 99.5)


def data_range(truth: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> float:
    """Truth's percentile range (electrons), floored so a flat truth does not give log(0)."""
    lo, hi = np.nanpercentile(truth, percentiles)
    return float(max(hi - lo, 1e-6))


def psnr(pred: np.ndarray, truth: np.ndarray, value_range: float) -> float:
    """PSNR (dB) over finite truth pixels against an explicit ``value_range``."""
    ok = np.isfinite(truth) & np.isfinite(pred)
    mse = float(np.mean((np.asarray(pred, float)[ok] - np.asarray(truth, float)[ok]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(value_range**2 / mse))


def ssim(pred: np.ndarray, truth: np.ndarray, value_range: float) -> float:
    """SSIM (7x7 Gaussian-free window) against an explicit ``value_range``; NaNs set to the median."""
    fill = float(np.nanmedian(truth))
    t = np.where(np.isfinite(truth), truth, fill).astype(float)
    p = np.where(np.isfinite(pred) & np.isfinite(truth), pred, fill).astype(float)
    return float(structural_similarity(p, t, data_range=value_range, win_size=7))


def empty_sky_mask(truth: np.ndarray, fwhm: float, tolerance: float | None = None) -> np.ndarray:
    """Pixels where the truth is sky, at least 2 FWHM from any source light.

    Source light is where the truth exceeds its median by ``tolerance`` (default 0.5 % of the
    median, at least 0.05 e-); that mask is grown by 2 FWHM.
    """
    finite = np.isfinite(truth)
    sky = float(np.nanmedian(truth))
    tolerance = max(0.005 * abs(sky), 0.05) if tolerance is None else tolerance
    source = ~finite | (np.where(finite, truth, sky) - sky > tolerance)
    grow = max(int(np.ceil(2 * fwhm)), 1)
    structure = np.hypot(*np.mgrid[-grow : grow + 1, -grow : grow + 1]) <= grow
    return ~ndimage.binary_dilation(source, structure=structure)


def empty_sky_noise_ratio(
    restored: np.ndarray, noisy: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> float | None:
    """std(restored - truth) / std(noisy - truth) over the ``mask`` pixels (None if empty)."""
    if mask.sum() < 16:
        return None
    return float(np.std((restored - truth)[mask]) / np.std((noisy - truth)[mask]))


def _normalised_metrics(restored, noisy, truth) -> dict:
    """PSNR/SSIM in the network's asinh space (stats from the noisy frame), project convention."""
    normalizer = AsinhNormalizer()

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]

    offset, scale = normalizer.stats(as_tensor(noisy))
    fill = float(np.nanmedian(truth))
    t = normalizer.forward(as_tensor(np.where(np.isfinite(truth), truth, fill)), offset, scale)
    out = {
        "data_range": float(t.max() - t.min()),
        "definition": "asinh((x-sky)/(3 sigma)); truth max-min",
    }
    for name, image in (("restored", restored), ("noisy", noisy)):
        p = normalizer.forward(as_tensor(np.where(np.isfinite(truth), image, fill)), offset, scale)
        out[name] = {"psnr": float(psnr_per_image(p, t)[0]), "ssim": float(ssim_per_image(p, t)[0])}
    return out


def quality_metrics(
    restored: np.ndarray, noisy: np.ndarray, truth: np.ndarray, *, fwhm: float
) -> dict:
    """PSNR/SSIM (electrons and normalised) of restored and noisy, and the empty-sky noise ratio."""
    value_range = data_range(truth)
    mask = empty_sky_mask(truth, fwhm)
    return {
        "data_range_e": value_range,
        "data_range_definition": "truth 0.5-99.5 percentile range, in the frame's unit",
        "restored": {
            "psnr": psnr(restored, truth, value_range),
            "ssim": ssim(restored, truth, value_range),
        },
        "noisy": {"psnr": psnr(noisy, truth, value_range), "ssim": ssim(noisy, truth, value_range)},
        "normalised": _normalised_metrics(restored, noisy, truth),
        "empty_sky_pixels": int(mask.sum()),
        "empty_sky_noise_ratio": empty_sky_noise_ratio(restored, noisy, truth, mask),
    }
