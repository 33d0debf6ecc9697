"""SR3 denoising U-Net: ``net(x_t, noise_level, cond) -> prediction``.

Following SR3 (Saharia et al. 2021) the network sees the noisy high-resolution estimate ``x_t``
concatenated with the bicubically up-sampled low-resolution frame ``cond``, and is conditioned
on the continuous noise level ``sqrt(gamma)`` (the signal amplitude in ``x_t``), not on an
integer timestep. Any number of sampling steps therefore works without retraining: the sampler
just passes the levels of its own schedule.

The level enters through a sinusoidal embedding and an MLP, and each residual block adds a
per-channel scale and shift from it (FiLM). No attention layers: on 64-128 px tiles the
convolutional receptive field covers the tile, and attention would dominate the CPU cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from astrorestore.nets.common import group_count


def level_embedding(level: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels in [0, 1] (scaled by 1000 so they spread over the
    frequencies as integer timesteps would)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=level.device, dtype=torch.float32) / half
    )
    angles = 1000.0 * level.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class LevelResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a FiLM scale/shift from the level embedding."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(self.act(h)))
        return h + self.skip(x)


class SR3UNet(nn.Module):
    """Args:
    channels: image channels (3 for colour photographs, 1 for grey frames).
    scale: super-resolution factor (carried for the record; the net works on the HR grid).
    base_channels: width of the first level; ``channel_mults`` per level (length = depth).
    depth: number of halvings (used when ``channel_mults`` is None: 1, 2, 2, 4, ...).
    dropout: in the residual blocks (SR3 uses 0.1-0.2 on small data sets).
    """

    def __init__(
        self,
        channels: int = 3,
        scale: int = 2,
        base_channels: int = 32,
        depth: int = 3,
        channel_mults: list[int] | tuple[int, ...] | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        mults = list(channel_mults) if channel_mults else [min(2**i, 4) for i in range(depth)]
        self.depth = len(mults)
        self.channels = int(channels)
        self.scale = int(scale)
        embed_dim = 4 * base_channels
        self.embed_dim = embed_dim
        self.level_mlp = nn.Sequential(
            nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.base_channels = base_channels
        widths = [base_channels] + [base_channels * m for m in mults]
        self.stem = nn.Conv2d(2 * channels, base_channels, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level in range(self.depth):
            self.encoders.append(
                LevelResBlock(widths[level], widths[level + 1], embed_dim, dropout)
            )
            self.downs.append(nn.Conv2d(widths[level + 1], widths[level + 1], 3, 2, 1))
        self.middle = nn.ModuleList(
            [LevelResBlock(widths[-1], widths[-1], embed_dim, dropout) for _ in range(2)]
        )
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(self.depth)):
            self.ups.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(widths[level + 1], widths[level + 1], 3, padding=1),
                )
            )
            self.decoders.append(
                LevelResBlock(2 * widths[level + 1], widths[level], embed_dim, dropout)
            )
        self.head = nn.Sequential(
            nn.GroupNorm(group_count(base_channels), base_channels),
            nn.SiLU(),
            nn.Conv2d(base_channels, channels, 3, padding=1),
        )

    @property
    def size_multiple(self) -> int:
        """Multiple the low-resolution input must be (the HR grid needs ``2**depth``)."""
        return max(1, math.ceil(2**self.depth / self.scale))

    def forward(
        self, x_t: torch.Tensor, noise_level: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        """``x_t``, ``cond``: (B, C, H, W) on the HR grid; ``noise_level``: (B,) sqrt(gamma)."""
        embedding = self.level_mlp(level_embedding(noise_level, self.base_channels).to(x_t.dtype))
        h = self.stem(torch.cat([x_t, cond], dim=1))
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            h = encoder(h, embedding)
            skips.append(h)
            h = down(h)
        for block in self.middle:
            h = block(h, embedding)
        for up, decoder in zip(self.ups, self.decoders, strict=True):
            h = decoder(torch.cat([up(h), skips.pop()], dim=1), embedding)
        return self.head(h)
