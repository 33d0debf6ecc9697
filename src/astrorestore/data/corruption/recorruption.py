"""Recorruption: one fresh draw from a noisy frame's own noise model splits it in two.

Given a noisy frame ``y`` and its per-pixel noise model, these functions make an input and a
target whose noises are independent (Recorrupted-to-Recorrupted, Pang et al. 2021; its
Poisson generalisation GR2R, Monroy, Bacca & Tachella 2024): the corruption side of the
noise-model self-supervised losses (:mod:`astrorestore.losses.noise_model`, whose module
docstring gives the derivations and where their unbiasedness is unit-tested) and of the
recorrupting pairing (:mod:`astrorestore.data.pairings.recorrupted`).

Units: ``noisy`` in frame units; ``gain`` in electrons per frame unit (scalar or a map that
broadcasts to the batch); variances in frame units squared. Every draw uses the caller's
generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from astrorestore.errors import UserError


def _check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise UserError(f"recorruption alpha={alpha} must be in (0, 1); 0.5 is the usual choice")
    return float(alpha)


def _as_map(value: Tensor | float, like: Tensor, name: str) -> Tensor:
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        return torch.broadcast_to(tensor, like.shape)
    except RuntimeError:
        raise UserError(
            f"the {name} map has shape {tuple(tensor.shape)} but the batch is "
            f"{tuple(like.shape)}: pass a scalar or a map of the frame's shape"
        ) from None


def recorrupt_gaussian(
    noisy: Tensor,
    variance: Tensor | float,
    alpha: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """R2R pair for Gaussian noise of per-pixel ``variance``: ``(input, target, constant)``.

    ``constant`` (per pixel) is ``E|target - x|^2 = variance / alpha``; subtract its mean from
    the squared error to read the loss as the supervised MSE (see :func:`recorrupted_mse`).
    """
    alpha = _check_alpha(alpha)
    var = _as_map(variance, noisy, "variance")
    if bool((var < 0).any()):
        raise UserError("a noise variance map has negative values: pass variances (sigma^2 >= 0)")
    scale = math.sqrt(alpha / (1.0 - alpha))
    draw = torch.randn(noisy.shape, generator=generator, device=noisy.device, dtype=noisy.dtype)
    extra = draw * var.sqrt()
    return noisy + scale * extra, noisy - extra / scale, var / alpha


def recorrupt_poisson(
    noisy: Tensor,
    gain: Tensor | float,
    alpha: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """GR2R pair for Poisson counts ``gain * noisy`` by binomial thinning.

    The counts are rounded to integers (exact for photon-counting data; an approximation where
    the frame was rescaled). ``constant`` estimates ``E|target - x|^2 = x / (gain alpha)``
    without bias.
    """
    alpha = _check_alpha(alpha)
    gain_map = _as_map(gain, noisy, "gain")
    counts = (noisy * gain_map).round().clamp_min(0)
    probability = torch.full_like(counts, alpha, dtype=torch.float32)
    kept = torch.binomial(counts.float(), probability, generator=generator).to(noisy.dtype)
    net_input = (counts - kept) / (gain_map * (1.0 - alpha))
    target = kept / (gain_map * alpha)
    return net_input, target, noisy.clamp_min(0) / (gain_map * alpha)


def recorrupt_poisson_gaussian(
    noisy: Tensor,
    gain: Tensor | float,
    read_variance: Tensor | float,
    alpha: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """R2R pair for Poisson + Gaussian noise, with the per-pixel variance estimated from ``noisy``.

    ``variance = noisy / gain + read_variance`` is unbiased for the true variance; where it is
    negative (a pixel more than ``gain * read_variance`` below zero, ~3 sigma for 3 e- read
    noise) it is held at 0, which is the only departure from exactness for linear networks.
    """
    gain_map = _as_map(gain, noisy, "gain")
    read_map = _as_map(read_variance, noisy, "read variance")
    variance = (noisy / gain_map + read_map).clamp_min(0)
    return recorrupt_gaussian(noisy, variance, alpha, generator)
