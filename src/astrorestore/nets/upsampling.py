"""Regression super-resolution: bicubic up-sampling followed by a residual U-Net correction.

The non-generative reference beside SR3 (``model=sr_regression``): trained with L1, it predicts
the conditional median, so it does not invent texture, which is what a photometrist wants.
The residual U-Net starts as the identity, so an untrained model is plain bicubic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from astrorestore.nets.res_unet import ResidualUNet


class UpsamplingResidualUNet(nn.Module):
    """Args: channels, scale; base_channels, depth, dilations of the inner
    :class:`~astrorestore.nets.res_unet.ResidualUNet` (which runs on the high-resolution grid)."""

    def __init__(
        self,
        channels: int = 3,
        scale: int = 2,
        base_channels: int = 16,
        depth: int = 3,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.scale = int(scale)
        self.refine = ResidualUNet(channels, base_channels, depth, dilations)

    @property
    def size_multiple(self) -> int:
        """Multiple the low-resolution input must be."""
        return max(1, math.ceil(self.refine.size_multiple / self.scale))

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return self.refine(up)
