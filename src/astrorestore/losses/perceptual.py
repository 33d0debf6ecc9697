"""Pixel losses plus an optional perceptual term (LPIPS on real AlexNet ImageNet weights).

A perceptual term only means something with a backbone trained on real images, so it follows
the LPIPS metric's rule (:mod:`astrorestore.metrics.lpips_metric`): the weights come from the
torch hub cache or a configured path; without them the term is skipped with one warning and
training goes on with the pixel terms. The LPIPS network is kept outside the module tree, so it
never enters a checkpoint, and it is frozen (gradients flow through its input only).
"""

from __future__ import annotations

import torch

from astrorestore.errors import UserError
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.metrics.lpips_metric import build_lpips


def _lpips_space(x: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """To [-1, 1] by the target's own per-image range, grey copied to three channels."""
    x = 2.0 * (x - low) / span - 1.0
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class PerceptualRestorationLoss(RestorationLoss):
    """:class:`RestorationLoss` + ``perceptual_weight`` x LPIPS(pred, target).

    Args:
        perceptual_weight: weight of the LPIPS term (0: off, nothing is loaded).
        lpips_weights: path to AlexNet weights; None looks in the torch hub cache.
        Other arguments: see :class:`RestorationLoss`.
    """

    def __init__(
        self,
        perceptual_weight: float = 0.1,
        lpips_weights: str | None = None,
        **pixel_terms: float,
    ) -> None:
        if perceptual_weight < 0:
            raise UserError(
                f"model.loss.perceptual_weight={perceptual_weight} is invalid: use a value >= 0"
            )
        super().__init__(**pixel_terms)
        network = build_lpips(lpips_weights) if perceptual_weight > 0 else None
        # Outside the module tree: no LPIPS tensors in state_dict or checkpoints.
        self.__dict__["lpips"] = network
        self.perceptual_weight = float(perceptual_weight) if network is not None else 0.0

    @property
    def supports_mask(self) -> bool:
        return super().supports_mask and self.perceptual_weight == 0

    def check_mask_support(self) -> None:
        if self.perceptual_weight > 0:
            raise UserError(
                "this training masks the loss (blind spots or bad pixels), but the perceptual "
                "term compares whole images and cannot be masked; set model.loss.perceptual_weight=0"
            )
        super().check_mask_support()

    def perceptual(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance, differentiable in ``pred``."""
        flat = target.detach().flatten(1)
        low = flat.amin(1).view(-1, 1, 1, 1)
        span = (flat.amax(1).view(-1, 1, 1, 1) - low).clamp_min(1e-6)
        self.lpips.to(pred.device)
        return self.lpips(_lpips_space(pred, low, span), _lpips_space(target, low, span)).mean()

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, terms = super().forward(pred, target, mask)
        if self.perceptual_weight > 0:
            value = self.perceptual(pred.float(), target.float())
            terms["perceptual"] = value
            total = total + self.perceptual_weight * value
        return total, terms
