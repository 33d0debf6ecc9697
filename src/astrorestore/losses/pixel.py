"""Pixel losses for restoration: L1, L2, 1 - SSIM, image-gradient L1, and their weighted sum.

All inputs are normalised (asinh) images of shape (B, C, H, W). Pixel-wise terms reduce with
``masked_mean``, so a blind-spot or bad-pixel mask applies to them in one place. Terms that
compare neighbourhoods (SSIM, gradients) cannot be restricted to isolated pixels: given a
mask they refuse it, instead of silently using every pixel (with which a blind-spot network
would learn the identity).
"""

from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import nn

from astrorestore.errors import UserError


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is true (all pixels if None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    return masked_mean((pred - target).abs(), mask)


def l2_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    return masked_mean((pred - target).square(), mask)


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
    """``l1·L1 + l2·L2 + ssim·(1 - SSIM) + gradient·gradient-L1`` (weights from config).

    ``forward`` returns the total and a dict of the individual terms for logging. L1 and L2
    honour a mask; SSIM and the gradient term refuse one (see the module docstring).
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        ssim_weight: float = 0.2,
        gradient_weight: float = 0.1,
        ssim_window: int = 7,
        l2_weight: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("l1_weight", l1_weight),
            ("l2_weight", l2_weight),
            ("ssim_weight", ssim_weight),
            ("gradient_weight", gradient_weight),
        ):
            if value < 0:
                raise UserError(f"model.loss.{name}={value} is invalid: use a value >= 0")
        if l1_weight + l2_weight + ssim_weight + gradient_weight <= 0:
            raise UserError("model.loss has every weight at 0: set at least one of them > 0")
        self.l1_weight = l1_weight
        self.l2_weight = l2_weight
        self.ssim_weight = ssim_weight
        self.gradient_weight = gradient_weight
        self.ssim_window = ssim_window

    @property
    def supports_mask(self) -> bool:
        """True when every active term can be restricted to a mask."""
        return self.ssim_weight == 0 and self.gradient_weight == 0

    def check_mask_support(self) -> None:
        if not self.supports_mask:
            raise UserError(
                "this training masks the loss (blind spots or bad pixels), but the SSIM and "
                "gradient terms compare neighbourhoods and cannot be masked; set "
                "model.loss.ssim_weight=0 model.loss.gradient_weight=0 (e.g. loss=l1)"
            )

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # SSIM's Gaussian window is float32-sensitive; keep it out of bf16 autocast.
        pred, target = pred.float(), target.float()
        if mask is not None:
            self.check_mask_support()
        weighted = {}
        if self.l1_weight > 0:
            weighted["l1"] = (self.l1_weight, l1_loss(pred, target, mask))
        if self.l2_weight > 0:
            weighted["l2"] = (self.l2_weight, l2_loss(pred, target, mask))
        if self.ssim_weight > 0:
            weighted["ssim"] = (self.ssim_weight, ssim_loss(pred, target, self.ssim_window))
        if self.gradient_weight > 0:
            weighted["gradient"] = (self.gradient_weight, gradient_loss(pred, target))
        total = sum(weight * value for weight, value in weighted.values())
        return total, {name: value for name, (_, value) in weighted.items()}
