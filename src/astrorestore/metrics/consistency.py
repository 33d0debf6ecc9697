"""Consistency of a restoration with its own data: degrade the output again, compare with the input.

A super-resolved or colourised frame is one of many that explain the observation; whatever it
invents, the known forward model applied to it must give back the input within its noise.
``consistency_error`` is rms((forward(output) - input) / sigma) per image: ~1 for an output
consistent with the data (only the input's own noise remains), 0 for a noiseless input
reproduced exactly, > 1 when the output contradicts the data. With ``sigma = 1/255`` on [0, 1]
photographs it reads in 8-bit levels.

The forward model is a callable (B, C, H, W) -> the input's shape, e.g.
``SuperResolutionPairing(2, psf_sigma=1.0).degrade`` (blur + area down-sampling) or
``functools.partial(luminance, space="ycbcr")`` (colour -> grey) from
:mod:`astrorestore.data.pairings`; taking it as an argument keeps this measure independent of how
the pairing was built.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.metrics.arrays import as_batch, as_float_tensor

ForwardModel = Callable[[Tensor], Tensor]


def _sigma_like(sigma: Tensor | np.ndarray | float, observed: Tensor) -> Tensor:
    """The noise sigma as a tensor broadcast to the observed batch, refused where <= 0."""
    value = as_float_tensor(sigma).to(device=observed.device, dtype=observed.dtype)
    if value.dim() in (2, 3):
        value = as_batch(value, "sigma")  # a map for one image, as the image itself would be
    try:
        value = torch.broadcast_to(value, observed.shape)
    except RuntimeError:
        raise UserError(
            f"noise sigma of shape {tuple(value.shape)} does not fit the input's "
            f"{tuple(observed.shape)}: use a scalar or a map of the input's size"
        ) from None
    if bool((value[torch.isfinite(value)] <= 0).any()):
        raise UserError("noise sigma must be > 0 wherever it is finite")
    return value


def consistency_residual(
    output: Tensor | np.ndarray,
    observed: Tensor | np.ndarray,
    forward: ForwardModel,
    sigma: Tensor | np.ndarray | float,
) -> Tensor:
    """(forward(output) - observed) / sigma, shaped like the observed batch (B, C, h, w)."""
    out, obs = as_batch(output, "output"), as_batch(observed, "input")
    with torch.no_grad():
        predicted = forward(out.to(obs.device))
    if predicted.shape != obs.shape:
        raise UserError(
            f"the forward model maps the output {tuple(out.shape)} to {tuple(predicted.shape)}, "
            f"but the input is {tuple(obs.shape)}: use the forward model that made the input"
        )
    return (predicted.to(obs.dtype) - obs) / _sigma_like(sigma, obs)


def consistency_error(
    output: Tensor | np.ndarray,
    observed: Tensor | np.ndarray,
    forward: ForwardModel,
    sigma: Tensor | np.ndarray | float,
) -> Tensor:
    """Per-image rms (B,) of :func:`consistency_residual` over its finite pixels (a NaN input or
    sigma pixel is left out); ~1 = consistent within the input's noise."""
    residual = consistency_residual(output, observed, forward, sigma).flatten(1)
    finite = torch.isfinite(residual)
    total = torch.where(finite, residual, 0.0).square().sum(1)
    return (total / finite.sum(1).clamp_min(1)).sqrt()
