"""Small separable filters on (B, C, H, W) tensors, shared by pairings and losses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` pixels, radius ceil(3 sigma)."""
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, C, H, W) batch, reflecting at the borders (flux kept)."""
    if sigma <= 0:
        return image
    kernel = gaussian_kernel(sigma, image.device).to(image.dtype)
    channels, radius = image.shape[1], kernel.numel() // 2
    if radius >= min(image.shape[-2:]):  # reflect padding needs the image to be wider
        radius = min(image.shape[-2:]) - 1
        kernel = kernel[kernel.numel() // 2 - radius : kernel.numel() // 2 + radius + 1]
        kernel = kernel / kernel.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)
