"""Calibration of a sampler's uncertainty: is the truth within the spread of the samples?

From N samples of the same restoration (shape (N, ...)), the per-pixel mean is the estimate and
the per-pixel standard deviation its uncertainty. If that uncertainty is right, the truth lies
within 1 sigma of the mean for about 68 % of pixels and within 2 sigma for about 95 %; an
overconfident sampler (too little spread) covers less, an underconfident one more.

With few samples the expected coverage is lower than 68 % / 95 %, even for a perfect sampler:
the mean itself is uncertain (by sigma / sqrt(N)) and the sample std is a noisy estimate, so
(truth - mean) / (std sqrt(1 + 1/N)) follows Student's t with N - 1 degrees of freedom.
``expected_coverage`` gives that reference (62 % / 90 % for N = 8), to read a measured coverage
against the right number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.metrics.arrays import as_float_tensor, check_same_shape


def _samples(samples: Tensor | np.ndarray) -> Tensor:
    tensor = as_float_tensor(samples)
    if tensor.dim() < 2 or tensor.shape[0] < 2:
        raise UserError(
            f"calibration needs at least 2 samples stacked on the first axis, got shape "
            f"{tuple(tensor.shape)}; draw more with num_samples >= 2"
        )
    return tensor


def sample_mean_std(samples: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Per-pixel mean and standard deviation (with Bessel's correction) over the first axis."""
    tensor = _samples(samples)
    return tensor.mean(0), tensor.std(0, correction=1)


def coverage(
    mean: Tensor | np.ndarray,
    std: Tensor | np.ndarray,
    truth: Tensor | np.ndarray,
    k: float = 1.0,
) -> Tensor:
    """Fraction of pixels (scalar) with |truth - mean| <= k * std, over pixels where all three
    are finite."""
    mean_, std_, truth_ = (as_float_tensor(v) for v in (mean, std, truth))
    check_same_shape(mean_, truth_, "sample mean and truth")
    check_same_shape(std_, truth_, "sample std and truth")
    good = torch.isfinite(mean_) & torch.isfinite(std_) & torch.isfinite(truth_)
    inside = (truth_ - mean_).abs() <= k * std_
    return (inside & good).sum() / good.sum().clamp_min(1)


def expected_coverage(k: float, n_samples: int | None = None) -> float:
    """Coverage of a calibrated Gaussian sampler: erf(k / sqrt 2) for the true mean and sigma
    (``n_samples=None``), or the Student-t value for the mean and std of ``n_samples`` draws."""
    if n_samples is None:
        return math.erf(k / math.sqrt(2.0))
    if n_samples < 2:
        raise UserError(f"n_samples={n_samples} is invalid: use >= 2")
    from scipy.stats import t

    bound = k / math.sqrt(1.0 + 1.0 / n_samples)
    return float(2.0 * t.cdf(bound, df=n_samples - 1) - 1.0)


def calibration_summary(
    samples: Tensor | np.ndarray,
    truth: Tensor | np.ndarray,
    levels: Sequence[float] = (1.0, 2.0),
) -> dict[str, float]:
    """Measured and expected coverage at each level: ``coverage_1sigma``, ``expected_1sigma``
    (for this number of samples), ..., plus ``n_samples`` and ``mean_std`` (the mean per-pixel
    standard deviation, in the samples' units)."""
    tensor = _samples(samples)
    mean, std = sample_mean_std(tensor)
    return moments_calibration(mean, std, tensor.shape[0], truth, levels)


def moments_calibration(
    mean: Tensor | np.ndarray,
    std: Tensor | np.ndarray,
    n_samples: int,
    truth: Tensor | np.ndarray,
    levels: Sequence[float] = (1.0, 2.0),
) -> dict[str, float]:
    """:func:`calibration_summary` from the per-pixel mean and std (Bessel-corrected) of
    ``n_samples`` samples, when only those were kept (``infer.py num_samples=N``)."""
    if n_samples < 2:
        raise UserError(f"calibration needs at least 2 samples, got {n_samples}")
    std_ = as_float_tensor(std)
    summary: dict[str, float] = {"n_samples": float(n_samples)}
    for k in levels:
        name = f"{k:g}sigma"
        summary[f"coverage_{name}"] = float(coverage(mean, std_, truth, k))
        summary[f"expected_{name}"] = expected_coverage(k, n_samples)
    summary["mean_std"] = float(std_[torch.isfinite(std_)].mean())
    return summary
