"""U-Net for blind-spot training (Noise2Void and N2V2).

The blind spot itself lives in the data (masked pixels, masked loss), so the network is an
ordinary U-Net with two switches that N2V2 (Höck et al. 2022) showed remove the checkerboard
artefacts of Noise2Void outputs: ``blur_pool`` (max-pool at stride 1, then a [1 2 1] blur at
stride 2, instead of a max-pool that aliases) and ``top_skip=False`` (no skip connection at full
resolution, which otherwise lets the decoder copy pixel-level noise patterns straight through).
Those two and median replacement form a bundle checked in
:func:`astrorestore.data.pairings.blind_spot.check_n2v2_bundle`.

``output`` says what the network predicts and how it becomes the restored tile:

- ``image``: the image itself (the original Noise2Void); flattens star cores, which a blind-spot
  network cannot see.
- ``clamped`` (default of ``model=n2v``/``n2v2``): the image, softly clamped to within
  ``bound_sigmas`` noise sigma of the input (:meth:`astrorestore.nets.bounded.NoiseBound.clamp`).
  Sky noise is removed in full, cores stay within a few sigma of what was observed, and the
  network needs no pixel-level view of its input, so it works for N2V2 too. The blind spot holds:
  at a hidden pixel the input is the replacement.
- ``residual``: ``input + net(input)``; ``capped_residual``: that correction capped at
  ``bound_sigmas`` sky sigmas in linear units. Both make the network cancel each pixel's noise
  relative to the centre pixel, which N2V2 (no top skip) cannot see: it does not learn.

The faint stars a blind-spot network shrinks towards the sky or spreads into their wings, which
no per-pixel bound protects, are given back after the network by the ``give_back``
post-processing stage (``postprocess=give_back``, the default of ``model=n2v``; see
:mod:`astrorestore.postprocess.give_back`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from astrorestore.errors import UserError
from astrorestore.nets.bounded import NoiseBound, NoiseSigma, capped_correction, check_bound
from astrorestore.nets.common import check_input_size, group_count
from astrorestore.nets.res_unet import DilatedBottleneck

OUTPUTS = ("image", "clamped", "residual", "capped_residual")


class MaxBlurPool2d(nn.Module):
    """Max over 2x2 at stride 1, then a separable [1 2 1]/4 blur at stride 2 (anti-aliased)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 16.0
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).contiguous())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.GroupNorm(group_count(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class N2VUNet(nn.Module):
    """U-Net for Noise2Void; ``blur_pool=True, top_skip=False`` is the N2V2 network.

    Args:
        in_channels: image channels (output has the same).
        base_channels: width of the first level; doubles at each down-sampling.
        depth: down-sampling steps; inputs must be multiples of ``2**depth``.
        blur_pool: anti-aliased max-blur-pool down-sampling (N2V2) instead of max-pool.
        top_skip: keep the full-resolution skip connection (N2V2 removes it).
        dilations: dilation rates of residual blocks at the bottleneck (``[]``: none).
        output: ``image``, ``clamped``, ``residual`` or ``capped_residual`` (module docstring).
        bound_sigmas: the bound of ``clamped``/``capped_residual`` in noise sigma.
        noise: the normaliser's noise model (``model.net.noise``; ``clamped`` uses its sigma,
            shot noise included when it has ``photons_per_unit``; ``capped_residual`` its
            softening).
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        depth: int = 2,
        blur_pool: bool = False,
        top_skip: bool = True,
        dilations: tuple[int, ...] | list[int] = (),
        output: str = "image",
        bound_sigmas: float | None = None,
        noise: NoiseSigma | None = None,
    ) -> None:
        super().__init__()
        if int(depth) != depth or depth < 1:
            raise UserError(f"model.net.depth={depth!r} is invalid: use a whole number >= 1")
        if int(base_channels) != base_channels or base_channels < 1:
            raise UserError(
                f"model.net.base_channels={base_channels!r} is invalid: use a whole number >= 1"
            )
        if output == "bounded_residual":
            raise UserError(
                "model.net.output=bounded_residual is now called capped_residual (the name "
                "bounded_residual was also the noise bound's): use model.net.output=capped_residual"
            )
        if output not in OUTPUTS:
            raise UserError(f"model.net.output={output!r} is invalid: use {', '.join(OUTPUTS)}")
        bounded = output in ("clamped", "capped_residual")
        if bounded != (bound_sigmas is not None):
            raise UserError(
                f"model.net.bound_sigmas={bound_sigmas!r} does not fit model.net.output={output}: "
                "clamped and capped_residual need a bound (e.g. 5), image and residual null"
            )
        check_bound(bound_sigmas, noise, "no bound")
        self.output = output
        self.noise = noise
        self.bound = NoiseBound(noise, bound_sigmas) if bounded else None
        self.depth = int(depth)
        self.blur_pool = bool(blur_pool)
        self.top_skip = bool(top_skip)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.pools = nn.ModuleList(
            MaxBlurPool2d(widths[level]) if blur_pool else nn.MaxPool2d(2) for level in range(depth)
        )
        self.encoders = nn.ModuleList(
            DoubleConv(widths[level], widths[level + 1]) for level in range(depth)
        )
        self.bottleneck = (
            DilatedBottleneck(widths[-1], tuple(dilations)) if dilations else nn.Identity()
        )
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(nn.Conv2d(widths[level + 1], widths[level], 3, padding=1))
            has_skip = level > 0 or self.top_skip
            self.decoders.append(DoubleConv(widths[level] * (2 if has_skip else 1), widths[level]))
        self.head = nn.Conv2d(widths[0], in_channels, 1)
        if output in ("residual", "capped_residual"):
            # Start as the identity: early steps cannot damage flux.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.size_multiple)
        features = self.stem(x)
        skips = []
        for pool, encoder in zip(self.pools, self.encoders, strict=True):
            skips.append(features)
            features = encoder(pool(features))
        features = self.bottleneck(features)
        for up, decoder, skip, level in zip(
            self.ups, self.decoders, reversed(skips), reversed(range(self.depth)), strict=True
        ):
            features = up(F.interpolate(features, scale_factor=2.0, mode="nearest"))
            if level > 0 or self.top_skip:
                features = torch.cat([features, skip], dim=1)
            features = decoder(features)
        return self._output(x, self.head(features))

    def _output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.output == "clamped":
            return self.bound.clamp(x, out)
        if self.output == "capped_residual":
            # In linear units (sinh undoes the asinh): at most bound_sigmas sky sigmas, exactly.
            return capped_correction(x, out, self.bound.bound_sigmas / self.bound.softening)
        if self.output == "residual":
            return x + out
        return out

    def extra_repr(self) -> str:
        return f"output={self.output!r}, bound={self.bound!r}"
