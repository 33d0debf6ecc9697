"""Pixel losses for restoration: L1, 1 - SSIM, image-gradient L1, and their weighted sum.

All inputs are normalised (asinh) images of shape (B, C, H, W). Each term reduces with
``masked_mean`` so a future blind-spot or NaN mask is handled in one place.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import nn


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is true (all pixels if None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    return masked_mean((pred - target).abs(), mask)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y (shapes H x W-1 and H-1 x W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between image gradients: penalises blurred edges and PSF cores."""
    pred_dx, pred_dy = image_gradients(pred)
    target_dx, target_dy = image_gradients(target)
    return 0.5 * ((pred_dx - target_dx).abs().mean() + (pred_dy - target_dy).abs().mean())


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """1 - SSIM, with the data range taken per batch from the target (normalised units)."""
    data_range = (target.amax() - target.amin()).clamp_min(1e-6).item()
    # SSIM's constants are defined relative to a non-negative range: shift both images alike.
    low = target.amin()
    value = ssim(
        pred - low, target - low, data_range=data_range, size_average=True, win_size=win_size
    )
    return 1.0 - value


class RestorationLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM) + gradient_weight * gradient L1``.

    ``forward`` returns the total and a dict of the individual terms for logging.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        ssim_weight: float = 0.2,
        gradient_weight: float = 0.1,
        ssim_window: int = 7,
    ) -> None:
        super().__init__()
        for name, value in (
            ("l1_weight", l1_weight),
            ("ssim_weight", ssim_weight),
            ("gradient_weight", gradient_weight),
        ):
            if value < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {value}")
        self.l1_weight = l1_weight
        self.ssim_weight = ssim_weight
        self.gradient_weight = gradient_weight
        self.ssim_window = ssim_window

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # SSIM's Gaussian window is float32-sensitive; keep it out of bf16 autocast.
        pred, target = pred.float(), target.float()
        terms = {"l1": l1_loss(pred, target, mask)}
        if self.ssim_weight > 0:
            terms["ssim"] = ssim_loss(pred, target, self.ssim_window)
        if self.gradient_weight > 0:
            terms["gradient"] = gradient_loss(pred, target)
        total = self.l1_weight * terms["l1"]
        total = total + self.ssim_weight * terms.get("ssim", 0.0)
        total = total + self.gradient_weight * terms.get("gradient", 0.0)
        return total, terms
