"""Self-supervised training by SURE for Poisson-Gaussian noise (``model=sure``).

Stein's unbiased risk estimate, in the Poisson-Gaussian form of Le Montagner et al. (2014),
estimates the supervised squared error of a network at the noisy frame itself from the frame
and its noise model alone: the residual to the noisy input, the network's divergence (how much
each output pixel follows its own input pixel) and, for the Poisson part, its second derivative
(:func:`astrorestore.losses.noise_model.sure_poisson_gaussian_map`). Unlike Recorrupted-to-
Recorrupted it trains on the frame as it is (no noisier input), and unlike a blind spot every
pixel is a target. The divergences are Monte-Carlo: one random probe per batch, so the network
runs two (first order) or four (with the second-order term) times per training step.

**The space the SURE is written in.** The network sees ``z = asinh(u)``, ``u = (y - offset) /
scale`` (``data/normalization/asinh.py``), where the noise is neither Poisson nor Gaussian. SURE
is exact only for the noise model in its own space, so the loss is computed in the linear units
``u``: the network as a function of ``u`` is ``F(u) = sinh(net(asinh(u)))``, and the frame's
noise model carries over exactly (``u`` is affine in ``y``): Poisson counts of ``gamma / scale``
units each on top of the pedestal ``offset / scale``, read variance ``r / scale^2``. The per-pixel
SURE is then an unbiased estimate (to first order in ``gamma``, as Le Montagner's) of
``(F(u) - x_u)^2``, i.e. of the squared error in the frame's units divided by ``scale^2`` per
image, and its mean is the loss. Approximations: the normaliser's ``offset``/``scale`` are
treated as fixed numbers although they are statistics of the same noisy frame (a median and a
MAD over the frame: one pixel's noise moves them by ~1/N); and the Poisson term is Le
Montagner's Taylor expansion (exact for a linear network). The loss therefore weighs pixels as
the electrons do, bright cores more than the sky, as PSNR in electrons does.

**Finite differences.** Each pixel's step is ``tau`` in ``z`` (``model.tau``, ``curvature_tau``
for the second derivative), i.e. ``tau * cosh(z)`` in ``u``: a fixed step in ``u`` would be lost
to float32 rounding in bright cores (``z ~ 10``, whose ulp is 1e-6) or be far larger than the
sky's noise. So the training step needs float32 (mixed precision is refused).

Why our own: DeepInverse 0.5.0's ``SurePGLoss`` (read from its wheel) takes scalar ``sigma`` and
``gain`` and its own ``Physics``/model wrappers; frames need per-pixel maps, a pedestal, and the
asinh network seen in linear units.

Validation scores the same SURE of the restoring network on the fixed validation crops, with a
fixed probe (``val/loss``, the run's monitor where there is no truth); restoration is one plain
pass of the network on the frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from astrorestore.data.normalization.asinh import Z_LIMIT, frame_noise
from astrorestore.data.pairings.frame_noise import NOISE_MODEL_KEYS
from astrorestore.errors import UserError
from astrorestore.losses.noise_model import sure_poisson_gaussian_map
from astrorestore.losses.pixel import masked_mean
from astrorestore.modules.regression import RegressionModule


def _check_step(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"model.{name}={value!r} is invalid: use a number > 0 (in asinh units)")
    if not (math.isfinite(value) and 0 < value <= 0.1):
        raise UserError(
            f"model.{name}={value!r} is invalid: use a finite-difference step in (0, 0.1] "
            "(asinh units; the sky noise there is 1/softening)"
        )
    return float(value)


class SureModule(RegressionModule):
    """Args:
    net: the network (an ``nn.Module``), already built from its config.
    optimizer, scheduler: as :class:`RegressionModule`.
    tau: finite-difference step of the Monte-Carlo divergence, in the normalised (asinh) space.
    curvature_tau: step of the second derivative (a larger one: it is divided by its square).
    second_order: include the Poisson second-order term (two more network passes per step).
    loss: must be None (a pixel loss from the ``loss`` group is refused: the loss is SURE).
    Other arguments: see :class:`~astrorestore.modules.base.RestorationModule`.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        tau: float = 1e-3,
        curvature_tau: float = 1e-2,
        second_order: bool = True,
        loss: Any = None,
        **base: Any,
    ) -> None:
        if loss is not None:
            raise UserError(
                "model=sure is trained by its own loss (SURE, computed with the network's "
                "derivatives), not model.loss: drop the loss= override"
            )
        steps = _check_step("tau", tau), _check_step("curvature_tau", curvature_tau)
        if not isinstance(second_order, bool):
            raise UserError(f"model.second_order={second_order!r} is invalid: use true or false")
        super().__init__(net=net, loss=None, optimizer=optimizer, scheduler=scheduler, **base)
        self.tau, self.curvature_tau = steps
        self.second_order = second_order

    def on_fit_start(self) -> None:
        precision = str(getattr(self.trainer, "precision", "32"))
        if "16" in precision:
            raise UserError(
                f"model=sure computes finite differences of the network, which "
                f"trainer.precision={precision} rounds away: use trainer.precision=32"
            )

    def sure(
        self, net: Callable[[Tensor], Tensor], batch: dict[str, Tensor], generator=None
    ) -> Tensor:
        """Per-pixel SURE of ``net`` on ``batch["input"]`` in the linear units ``u`` (see the
        module doc): an estimate of ``(F(u) - x_u)^2`` at every pixel."""
        missing = [key for key in NOISE_MODEL_KEYS if key not in batch]
        if missing:
            raise ValueError(f"model=sure needs the frame's noise model in the batch: {missing}")
        z = batch["input"].clamp(-Z_LIMIT, Z_LIMIT)
        scale = batch["scale"]

        def in_linear_units(u: Tensor) -> Tensor:
            return torch.sinh(net(torch.asinh(u)).clamp(-Z_LIMIT, Z_LIMIT))

        # A step of tau in z is tau * cosh(z) in u.
        slope = torch.cosh(z)
        return sure_poisson_gaussian_map(
            in_linear_units,
            torch.sinh(z),
            batch["poisson_scale"] / scale,
            batch["read_variance"] / scale.square(),
            tau=self.tau * slope,
            curvature_tau=self.curvature_tau * slope,
            pedestal=batch["offset"] / scale,
            second_order=self.second_order,
            generator=generator,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # A network bounded by each frame's noise (the shipped one, adapted) is given the batch's.
        with frame_noise(batch.get("photons_per_unit")):
            loss = masked_mean(self.sure(self.net, batch), batch.get("loss_mask"))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input"].shape[0])
        return loss

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # The same probe every epoch, so val/loss compares checkpoints, not probe draws.
        generator = torch.Generator(device=batch["input"].device).manual_seed(0)
        sure = self.sure(self.inference_net, batch, generator)
        loss = masked_mean(sure, batch.get("loss_mask"))
        return loss, self.restore(batch["observed"])
