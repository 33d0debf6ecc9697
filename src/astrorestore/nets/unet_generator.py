"""U-Net generator for colorization (pix2pix-style), with its depth fitted to the image size.

The pix2pix generator halves a 256-pixel input eight times down to 1x1; applied to 64-pixel
Galaxy10 images that design runs out of pixels. Here ``depth`` defaults to the number of
halvings that leave a 4x4 bottleneck for ``image_size`` (4 for 64 px, 5 for 128 px), so the
deepest features still have a spatial layout.

:class:`ColorizationGenerator` wraps it for the colour spaces: in ``rgb`` it predicts the three
channels; in ``lab``/``ycbcr`` it predicts chroma only and recombines it with the input
luminance, which is therefore kept exactly. Its last convolution starts at zero there, so the
untrained chroma generator returns the neutral grey of the input's luminance (in ``ycbcr``
exactly "grey copied to three channels", the baseline to beat) and training only adds colour;
at small budgets this is what lets it beat that baseline. It takes and gives normalised photographs
(:mod:`astrorestore.colour`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from astrorestore.colour import check_colour_space, compose_rgb, from_unit, to_unit
from astrorestore.nets.common import check_input_size, group_count


def fitted_depth(image_size: int, bottleneck: int = 4, max_depth: int = 7) -> int:
    """Halvings of ``image_size`` that leave a ``bottleneck``-pixel map (at least 1)."""
    return max(1, min(max_depth, int(math.log2(max(image_size // bottleneck, 2)))))


class UNetGenerator(nn.Module):
    """Encoder of stride-2 4x4 convolutions, decoder of transposed convolutions, skips by
    concatenation, dropout in the deepest decoder blocks (pix2pix's noise source).

    Args:
        in_channels, out_channels: image channels in and out.
        base_channels: width of the first level (doubles per level up to ``max_channels``).
        depth: number of halvings; None = :func:`fitted_depth` of ``image_size``.
        image_size: training image size, used only when ``depth`` is None.
        dropout: dropout probability of the deepest decoder blocks (up to 3 of them).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        base_channels: int = 32,
        depth: int | None = None,
        image_size: int = 64,
        max_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.depth = int(depth) if depth is not None else fitted_depth(int(image_size))
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        widths = [min(base_channels * 2**level, max_channels) for level in range(self.depth + 1)]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        for level in range(self.depth):
            self.down.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(widths[level], widths[level + 1], 4, stride=2, padding=1),
                    nn.GroupNorm(group_count(widths[level + 1]), widths[level + 1]),
                )
            )
        self.up = nn.ModuleList()
        for i, level in enumerate(reversed(range(self.depth))):
            in_width = widths[level + 1] * (1 if i == 0 else 2)
            self.up.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.ConvTranspose2d(in_width, widths[level], 4, stride=2, padding=1),
                    nn.GroupNorm(group_count(widths[level]), widths[level]),
                    nn.Dropout(dropout if i < min(3, self.depth - 1) else 0.0),
                )
            )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * widths[0], out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple)
        features = self.stem(x)
        skips = [features]
        for down in self.down:
            features = down(features)
            skips.append(features)
        skips.pop()  # the bottleneck itself
        for up in self.up:
            features = torch.cat([up(features), skips.pop()], dim=1)
        return self.head(features)


class ColorizationGenerator(nn.Module):
    """Grey (normalised luminance) -> normalised RGB, in the chosen colour space.

    Args:
        color_space: ``rgb`` (predict RGB) or ``lab``/``ycbcr`` (predict chroma, keep luminance);
            must match the pairing's (``${data.pairing.color_space}`` in the configs).
        Others: see :class:`UNetGenerator`.
    """

    def __init__(
        self,
        color_space: str = "rgb",
        base_channels: int = 32,
        depth: int | None = None,
        image_size: int = 64,
        max_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.color_space = check_colour_space(color_space, "model.net.color_space")
        self.unet = UNetGenerator(
            1,
            3 if self.color_space == "rgb" else 2,
            base_channels,
            depth,
            image_size,
            max_channels,
            dropout,
        )
        if self.color_space != "rgb":
            # Zero chroma = the grey copy; the weights still get gradients from its input.
            last = self.unet.head[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    @property
    def size_multiple(self) -> int:
        return self.unet.size_multiple

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        out = self.unet(grey)
        if self.color_space == "rgb":
            return out
        # Chroma-only: recombine with the exact input luminance, in [0, 1] pixel units.
        rgb = compose_rgb(to_unit(grey.float()), out.float(), self.color_space)
        return from_unit(rgb).to(out.dtype)
