"""Self-supervised losses that use the frame's noise model, with per-pixel noise maps.

Astronomical noise is known (gain and read noise, or a JWST/HST product's VAR maps), and losses
built on it are unbiased estimates of the supervised squared error, which a blind spot is not.

- **Recorrupted-to-Recorrupted (R2R; Pang et al. 2021)** for Gaussian noise of per-pixel
  variance ``v``: with ``a = sqrt(alpha / (1 - alpha))`` and ``w ~ N(0, v)``, the network sees
  ``y + a w`` and is scored against ``y - w / a``. The two noises are independent, so
  ``E|f(y + a w) - (y - w / a)|^2 = E|f(y + a w) - x|^2 + v / alpha`` per pixel: the supervised
  error of the network on an input ``1 / (1 - alpha)`` times noisier, plus a constant.
- **Generalised R2R (GR2R; Monroy, Bacca & Tachella 2024)** for Poisson counts: binomial
  thinning ``w ~ Bin(z, alpha)`` of the counts ``z = gain * y`` splits them into two independent
  Poisson halves, input ``(z - w) / (gain (1 - alpha))`` and target ``w / (gain alpha)``;
  the constant is ``x / (gain alpha)``, estimated without bias by ``y / (gain alpha)``.
- **Poisson-Gaussian R2R.** GR2R has no exact split for Poisson plus read noise (the counts are
  not observed under the read noise). The Gaussian recorruption with the unbiased variance
  estimate ``v = y / gain + read_variance`` makes input and target noises uncorrelated, which is
  exact for a linear network and first-order for others (the Poisson third moment is left; it
  matters only at a few counts per pixel, where :func:`recorrupt_poisson` applies instead).
- **SURE for Poisson-Gaussian noise** (Le Montagner et al. 2014): an estimate of the supervised
  error at the *unperturbed* input, from the residual, a Monte-Carlo divergence and its
  second-order Poisson correction, with per-pixel gain and read-noise maps.

Why our own code: DeepInverse 0.5.0 (read from its wheel, ``deepinv/loss/r2r.py`` and
``sure.py``) implements R2R for Gaussian, Poisson (binomial thinning) and Gamma noise but not
Poisson plus Gaussian; its ``SurePGLoss`` takes scalar ``sigma`` and ``gain`` floats; and both
are bound to its ``Physics``/model-wrapper interfaces. We need per-pixel maps in frame units and
functions that a training step calls on a batch, so these are a few short functions.

Units: ``noisy`` in frame units; ``gain`` in electrons per frame unit (scalar or a map that
broadcasts to the batch); variances in frame units squared. Every draw uses the caller's
generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from astrorestore.data.corruption.recorruption import (  # noqa: F401 (re-exported)
    _as_map,
    recorrupt_gaussian,
    recorrupt_poisson,
    recorrupt_poisson_gaussian,
)
from astrorestore.losses.pixel import masked_mean


def recorrupted_mse(
    prediction: Tensor,
    target: Tensor,
    constant: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """``mean((prediction - target)^2) - mean(constant)`` over ``mask``.

    With ``constant`` from a ``recorrupt_*`` function the value estimates the supervised MSE
    (against the clean truth) without bias; the constant has no gradient, so training is the
    same with or without it, but logged values become comparable with supervised runs.
    """
    loss = masked_mean((prediction - target).square(), mask)
    if constant is not None:
        loss = loss - masked_mean(constant.detach(), mask)
    return loss


def sure_poisson_gaussian(
    net: Callable[[Tensor], Tensor],
    noisy: Tensor,
    gain: Tensor | float,
    read_variance: Tensor | float,
    *,
    tau: Tensor | float | None = None,
    second_order: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SURE estimate of ``mean((net(noisy) - x)^2)`` for Poisson + Gaussian noise, per pixel maps.

    ``gain`` (e-/unit) and ``read_variance`` (units^2) may be maps. ``tau``: the finite-difference
    step of the Monte-Carlo divergence, default 1e-3 of the batch's robust spread (it must be
    small against the signal but large against float rounding). The second-order term corrects
    the first-order divergence for the Poisson part; it vanishes for a linear network.
    Per image: the mean of :func:`sure_poisson_gaussian_map` over its pixels.
    """
    if tau is None:
        tau = 1e-3 * float((noisy - noisy.median()).abs().median().clamp_min(1e-6))
    gamma = 1.0 / _as_map(gain, noisy, "gain")  # frame units per electron
    sure = sure_poisson_gaussian_map(
        net, noisy, gamma, read_variance, tau=tau, second_order=second_order, generator=generator
    )
    return sure.flatten(1).mean(1)


def sure_poisson_gaussian_map(
    net: Callable[[Tensor], Tensor],
    noisy: Tensor,
    gamma: Tensor | float,
    read_variance: Tensor | float,
    *,
    tau: Tensor | float,
    pedestal: Tensor | float = 0.0,
    curvature_tau: Tensor | float | None = None,
    second_order: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-pixel SURE for ``noisy = gamma * Poisson((x + pedestal) / gamma) - pedestal + N(0, r)``.

    Each pixel's value is an unbiased estimate (first order in ``gamma``, as Le Montagner et al.
    2014) of ``(net(noisy) - x)^2`` there, so any mean over pixels chosen without looking at the
    noise (a mask of valid pixels) estimates the supervised MSE over them.

    ``gamma``: units per electron (0 where only a variance is known: Gaussian SURE with
    variance ``read_variance``). ``pedestal``: what the Poisson counts had on top of ``x`` and
    was subtracted (a normaliser's sky offset over its scale), so the per-pixel variance
    estimate is ``gamma * (noisy + pedestal) + read_variance``. ``tau``/``curvature_tau`` (for
    the second-order term; default ``tau``): finite-difference steps, scalars or per-pixel maps
    (each pixel's divergence is divided by its own step, so the estimate stays unbiased). All
    maps broadcast to ``noisy``; one that does not is a UserError.
    """
    gamma = _as_map(gamma, noisy, "gain")
    read = _as_map(read_variance, noisy, "read variance")
    tau = _as_map(tau, noisy, "finite-difference step")
    variance = gamma * (noisy + _as_map(pedestal, noisy, "pedestal")) + read
    output = net(noisy)
    signs = torch.randint(0, 2, noisy.shape, generator=generator, device=noisy.device)
    probe = signs.to(noisy.dtype) * 2 - 1
    divergence = probe * (net(noisy + tau * probe) - output) / tau
    loss = (output - noisy).square() + 2.0 * variance * divergence - variance
    if second_order:
        # Two-point probe with E[c] = 0, E[c^2] = 1, E[c^3] = 1 (Le Montagner et al. 2014).
        step = tau if curvature_tau is None else _as_map(curvature_tau, noisy, "curvature step")
        p = 0.5 + 0.5 * math.sqrt(0.2)
        draw = torch.rand(noisy.shape, generator=generator, device=noisy.device, dtype=noisy.dtype)
        probe2 = torch.where(
            draw < p,
            torch.full_like(noisy, -math.sqrt((1 - p) / p)),
            torch.full_like(noisy, math.sqrt(p / (1 - p))),
        )
        shifted = step * probe2
        curvature = net(noisy + shifted) + net(noisy - shifted) - 2.0 * output
        loss = loss - 2.0 * gamma * read * probe2 * curvature / step.square()
    return loss
