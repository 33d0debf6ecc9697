"""Residual U-Net: predicts the noise and subtracts it from the input.

GroupNorm instead of BatchNorm because training batches are small and patch statistics of
astronomical frames (mostly sky, a few bright cores) vary a lot between patches. A stack of
dilated convolutions at the bottleneck widens the receptive field (extended galaxy halos,
PSF wings) without another down-sampling step.
"""

from __future__ import annotations

import torch
from torch import nn

from astrorestore.nets.common import check_input_size, group_count


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, plus a 1x1 skip (a residual block)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(group_count(out_channels), out_channels),
        )
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class DilatedBottleneck(nn.Module):
    """Residual blocks with growing dilation (1, 2, 4, ...)."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ConvBlock(channels, channels, d) for d in dilations])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualUNet(nn.Module):
    """U-Net whose head predicts the noise; ``forward`` returns ``input - noise``.

    Args:
        in_channels: image channels (1 for astronomical frames; colour goes through luminance).
        base_channels: width of the first level; doubles at each down-sampling.
        depth: number of down-sampling steps. Input height/width must be multiples of
            ``2**depth`` (see ``size_multiple``).
        dilations: dilation rates of the bottleneck blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList()
        self.encoders = nn.ModuleList()
        for level in range(depth):
            self.down.append(nn.Conv2d(widths[level], widths[level], 3, stride=2, padding=1))
            self.encoders.append(ConvBlock(widths[level], widths[level + 1]))
        self.bottleneck = DilatedBottleneck(widths[-1], tuple(dilations))
        self.up = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.up.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(widths[level + 1], widths[level], 3, padding=1),
                )
            )
            self.decoders.append(ConvBlock(2 * widths[level], widths[level]))
        self.noise_head = nn.Conv2d(widths[0], in_channels, 1)
        # Start as the identity map (zero predicted noise): early training cannot damage flux.
        nn.init.zeros_(self.noise_head.weight)
        nn.init.zeros_(self.noise_head.bias)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple)
        features = self.stem(x)
        skips = []
        for down, encoder in zip(self.down, self.encoders, strict=False):
            skips.append(features)
            features = encoder(down(features))
        features = self.bottleneck(features)
        for up, decoder, skip in zip(self.up, self.decoders, reversed(skips), strict=False):
            features = decoder(torch.cat([up(features), skip], dim=1))
        return self.noise_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.predict_noise(x)
