"""PSNR and SSIM against a clean truth, always with the data range they are quoted against.

PSNR depends entirely on its data range, so every figure states it. Two conventions:

- **Normalised space** (training logs, the default figures in docs/, ``bench/``): per image in
  the asinh-normalised space the network works in, against the range of *its clean truth* in
  that space (``max(truth) - min(truth)``). PSNR then reads "how large is the error compared
  with the brightest structure above the sky", without an arbitrary constant. Averages are over
  images (:func:`psnr_per_image`, :func:`ssim_per_image`, :class:`RestorationMetrics`).
- **Physical units** (``infer.py report=``, evaluation reports): an astronomical image's
  max - min is set by one bright star core, so the default range is the truth's 0.5-99.5
  percentile range in electrons (robust to a single core and to hot pixels), and every result
  carries the range it used (:func:`data_range`, :func:`psnr`, :func:`ssim`); with the
  empty-sky noise ratio, :func:`quality_metrics` is a report's quality block.
- **Photographs** (colorization and super-resolution of 8-bit pictures): RGB in [0, 1], data
  range 1 (:func:`photo_ssim_per_image`, :func:`photo_ssim`).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from astrorestore.data.normalization.asinh import AsinhNormalizer

DEFAULT_PERCENTILES = (0.5, 99.5)


def truth_data_range(truth: torch.Tensor) -> torch.Tensor:
    """Per-image data range (B,) of the clean truth, floored to avoid log(0)."""
    flat = truth.flatten(1)
    return (flat.amax(dim=1) - flat.amin(dim=1)).clamp_min(1e-6)


def psnr_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image, data range = that image's truth range."""
    ranges = truth_data_range(truth)
    return torch.stack(
        [
            peak_signal_noise_ratio(p[None], t[None], data_range=float(r))
            for p, t, r in zip(pred.float(), truth.float(), ranges, strict=False)
        ]
    )


def ssim_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """SSIM of each image, data range = that image's truth range (images shifted to >= 0)."""
    values = []
    for p, t, r in zip(pred.float(), truth.float(), truth_data_range(truth), strict=False):
        low = t.amin()
        values.append(
            structural_similarity_index_measure(
                (p - low)[None], (t - low)[None], data_range=float(r), kernel_size=7
            )
        )
    return torch.stack(values)


class RestorationMetrics(Metric):
    """Accumulates the mean per-image PSNR and SSIM over an epoch (DDP-safe sums)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "psnr_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "ssim_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        pred, truth = pred.detach(), truth.detach()
        self.psnr_sum += psnr_per_image(pred, truth).sum().double()
        self.ssim_sum += ssim_per_image(pred, truth).sum().double()
        self.count += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp_min(1)
        return {"psnr": (self.psnr_sum / count).float(), "ssim": (self.ssim_sum / count).float()}


# ----------------------------------------------------------------- physical units
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


def empty_sky_mask(
    truth: np.ndarray,
    fwhm: float,
    tolerance: float | None = None,
    sky_map: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels where the truth is sky, at least 2 FWHM from any source light.

    Source light is where the truth exceeds its median by ``tolerance`` (default 0.5 % of the
    median, at least 0.05 e-); that mask is grown by 2 FWHM. With ``sky_map`` (the noisy
    frame's sky map, as ``data.normalizer.background=map`` measures it) the sky is that map and
    the default tolerance 0.5 % of it per pixel: the bright half of a sky gradient is sky too,
    not source light. (A map of the noiseless truth itself cannot be measured: with no noise
    the source masking has no threshold; tried, it was off by 27 e- on a vignetted field.)
    """
    finite = np.isfinite(truth)
    sky = float(np.nanmedian(truth)) if sky_map is None else np.asarray(sky_map, float)
    if tolerance is None:
        tolerance = np.maximum(0.005 * np.abs(sky), 0.05)
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
    restored: np.ndarray,
    noisy: np.ndarray,
    truth: np.ndarray,
    *,
    fwhm: float,
    sky_map: np.ndarray | None = None,
) -> dict:
    """PSNR/SSIM (electrons and normalised) of restored and noisy, and the empty-sky noise ratio
    (empty sky around ``sky_map`` when given, see :func:`empty_sky_mask`)."""
    value_range = data_range(truth)
    mask = empty_sky_mask(truth, fwhm, sky_map=sky_map)
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


# -------------------------------------------------------------------- photographs
def photo_ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """SSIM of each pair of (B, C, H, W) photographs in [0, 1] (clamped there), data range 1."""
    a_np, b_np = a.clamp(0, 1).double().numpy(), b.clamp(0, 1).double().numpy()
    return [
        float(structural_similarity(x, y, data_range=1.0, channel_axis=0))
        for x, y in zip(a_np, b_np, strict=True)
    ]


def photo_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean :func:`photo_ssim_per_image` of a batch."""
    return float(np.mean(photo_ssim_per_image(a, b)))
