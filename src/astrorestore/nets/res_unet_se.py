"""Residual U-Net with squeeze-excitation, attention-gated skips and PixelShuffle up-sampling.

The Noise2Noise network (``model=n2n``). Each piece is there for a reason particular to sky
images:

- squeeze-excitation re-weights channels per image, so features tuned for empty sky and for
  bright cores are not mixed in the same proportion in every patch;
- attention gates let the decoder take from a skip connection only where the coarser context
  says there is structure, so encoder-level noise is not copied back into the sky;
- PixelShuffle (sub-pixel convolution) up-samples without the checkerboard of transposed
  convolutions and without the blur of bilinear interpolation;
- the head predicts the noise, subtracted from the input, and starts at zero (the identity);
- ``bound_sigmas`` makes that noise a prediction in units of each pixel's noise sigma, bounded at
  ``k`` sigma (:meth:`astrorestore.nets.bounded.NoiseBound.limit_noise`). Noise2Noise, like
  supervised training, otherwise learns the training PSF and flattens sharper cores; bounded, a
  core cannot move more than the noise allows while the sky is denoised in full.
"""

from __future__ import annotations

import torch
from torch import nn

from astrorestore.errors import UserError
from astrorestore.nets.bounded import NoiseBound, NoiseSigma, check_bound
from astrorestore.nets.common import check_input_size, group_count

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def make_activation(name: str) -> nn.Module:
    """An activation by config name (``model.net.activation``)."""
    if name not in ACTIVATIONS:
        raise UserError(f"model.net.activation={name!r} is invalid: use {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SqueezeExcitation(nn.Module):
    """Channel weights in (0, 1) from the globally pooled features (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int, activation: str) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            make_activation(activation),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class ResSEBlock(nn.Module):
    """conv-norm-act-conv-norm, squeeze-excitation, plus a (1x1 when widths differ) shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        activation: str,
        reduction: int,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(group_count(out_channels), out_channels),
            make_activation(activation),
            nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(group_count(out_channels), out_channels),
            SqueezeExcitation(out_channels, reduction, activation),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention (Oktay et al. 2018): the decoder's features decide, per pixel, how
    much of the skip connection passes."""

    def __init__(self, gate_channels: int, skip_channels: int, activation: str) -> None:
        super().__init__()
        inner = max(skip_channels // 2, 1)
        self.from_gate = nn.Conv2d(gate_channels, inner, 1)
        self.from_skip = nn.Conv2d(skip_channels, inner, 1, bias=False)
        self.act = make_activation(activation)
        self.weight = nn.Sequential(nn.Conv2d(inner, 1, 1), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.weight(self.act(self.from_gate(gate) + self.from_skip(skip)))


class PixelShuffleUp(nn.Module):
    """x2 up-sampling by sub-pixel convolution: a conv to 4x the channels, then PixelShuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels * 4, 3, padding=1), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResUNetSE(nn.Module):
    """Residual U-Net with SE blocks, attention gates and PixelShuffle; returns input - noise.

    Args:
        in_channels: image channels.
        base_channels: width of the first level; doubles at each down-sampling.
        depth: down-sampling steps; inputs must be multiples of ``2**depth``.
        activation: ``relu``, ``elu``, ``leaky_relu`` or ``silu``.
        se_reduction: channel reduction inside squeeze-excitation.
        attention: gate the skip connections (False: plain concatenation).
        dilations: dilation rates of the bottleneck blocks.
        bound_sigmas: predict the noise in sigma units, bounded at this many sigma; None: an
            unbounded noise prediction in normalised units.
        noise: the normaliser's noise model (``model.net.noise``); needed with a bound.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        activation: str = "elu",
        se_reduction: int = 4,
        attention: bool = True,
        dilations: tuple[int, ...] | list[int] = (1, 2),
        bound_sigmas: float | None = None,
        noise: NoiseSigma | None = None,
    ) -> None:
        super().__init__()
        if int(depth) != depth or depth < 1:
            raise UserError(f"model.net.depth={depth!r} is invalid: use a whole number >= 1")
        if int(se_reduction) != se_reduction or se_reduction < 1:
            raise UserError(
                f"model.net.se_reduction={se_reduction!r} is invalid: use a whole number >= 1"
            )
        make_activation(activation)  # one-line error before any layer is built
        check_bound(bound_sigmas, noise, "an unbounded noise prediction")
        self.noise = noise
        self.bound = None if bound_sigmas is None else NoiseBound(noise, bound_sigmas)
        self.depth = int(depth)
        self.attention = bool(attention)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.stem = ResSEBlock(in_channels, widths[0], activation, se_reduction)
        self.downs = nn.ModuleList(
            nn.Conv2d(widths[level], widths[level], 3, stride=2, padding=1)
            for level in range(depth)
        )
        self.encoders = nn.ModuleList(
            ResSEBlock(widths[level], widths[level + 1], activation, se_reduction)
            for level in range(depth)
        )
        self.bottleneck = nn.Sequential(
            *[ResSEBlock(widths[-1], widths[-1], activation, se_reduction, d) for d in dilations]
        )
        self.ups = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(PixelShuffleUp(widths[level + 1], widths[level]))
            self.gates.append(
                AttentionGate(widths[level], widths[level], activation)
                if attention
                else nn.Identity()
            )
            self.decoders.append(
                ResSEBlock(2 * widths[level], widths[level], activation, se_reduction)
            )
        self.noise_head = nn.Conv2d(widths[0], in_channels, 1)
        nn.init.zeros_(self.noise_head.weight)
        nn.init.zeros_(self.noise_head.bias)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple)
        features = self.stem(x)
        skips = []
        for down, encoder in zip(self.downs, self.encoders, strict=True):
            skips.append(features)
            features = encoder(down(features))
        features = self.bottleneck(features)
        for up, gate, decoder, skip in zip(
            self.ups, self.gates, self.decoders, reversed(skips), strict=True
        ):
            features = up(features)
            if self.attention:
                skip = gate(features, skip)
            features = decoder(torch.cat([features, skip], dim=1))
        return self.noise_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bound is not None:
            # The head predicts the noise in normalised units, as unbounded; dividing by the
            # sky's sigma (1 / softening) makes it a sigma count, so at the sky the bounded net
            # is the unbounded one and learns as fast (with raw sigma counts, every optimiser
            # step moved the sky softening times less: 200 steps left 0.12 of the sky noise,
            # not 0.10).
            return self.bound.limit_noise(x, self.predict_noise(x) * self.bound.softening)
        return x - self.predict_noise(x)

    def extra_repr(self) -> str:
        return f"bound={self.bound!r}"
