"""Errors against a truth measured in electrons, for real frames with injected noise.

The training metrics (:mod:`astrorestore.metrics.image_quality`) work in the network's asinh
space with the truth's full range. On a real frame in electrons one hot pixel or saturated star
would set that range, so here the data range is the truth's robust span, p0.5 to p99.5, and
the figures read in electrons: PSNR, SSIM (7x7 Gaussian window, images shifted by the truth's
p0.5) and the rms error left in empty sky.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

#: Percentiles of the truth that define the data range.
RANGE_PERCENTILES = (0.5, 99.5)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return tensor.reshape(1, 1, *tensor.shape[-2:])


def robust_range(truth: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """``(low, high)``: the truth's p0.5 and p99.5 (finite pixels)."""
    data = np.asarray(truth, dtype=np.float64)
    low, high = np.percentile(data[np.isfinite(data)], RANGE_PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def psnr_electrons(restored: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB) with the data range p0.5..p99.5 of the truth."""
    low, high = robust_range(truth)
    return float(peak_signal_noise_ratio(_tensor(restored), _tensor(truth), data_range=high - low))


def ssim_electrons(restored: np.ndarray, truth: np.ndarray) -> float:
    """SSIM with the data range p0.5..p99.5 of the truth (both shifted by its p0.5)."""
    low, high = robust_range(truth)
    return float(
        structural_similarity_index_measure(
            _tensor(restored) - low, _tensor(truth) - low, data_range=high - low, kernel_size=7
        )
    )


def sky_error_rms(restored: np.ndarray, truth: np.ndarray, sky: np.ndarray) -> float:
    """RMS of ``restored - truth`` over the boolean ``sky`` pixels: the noise left in empty sky."""
    error = (np.asarray(restored, np.float64) - np.asarray(truth, np.float64))[
        np.asarray(sky, bool)
    ]
    error = error[np.isfinite(error)]
    return float(np.sqrt(np.mean(error**2))) if error.size else float("nan")
