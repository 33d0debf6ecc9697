"""Patch discriminator: judges overlapping patches of a (condition, image) pair as real/fake.

A PatchGAN scores local texture and colour statistics rather than the whole image, which is
what an L1-trained colorizer gets wrong (washed-out, brownish colours). Its receptive field
must stay smaller than the input, or it degenerates into a whole-image classifier: the
pix2pix 70-pixel design does not fit 64-pixel Galaxy10 images, so the number of stride-2
layers is a parameter and :attr:`receptive_field` reports the result.
"""

from __future__ import annotations

import torch
from torch import nn

from astrorestore.errors import UserError
from astrorestore.nets.common import group_count


class PatchDiscriminator(nn.Module):
    """Args:
    in_channels: channels of the condition plus the image (1 grey + 3 colour = 4).
    base_channels: width of the first layer (doubles per layer up to 8x).
    n_layers: stride-2 layers after the first (receptive field 16 px for 1, 34 for 2, 70 for 3).
    norm: ``group`` (GroupNorm) or ``none``. Normalisation statistics span the whole image, so
        with ``group`` every logit also depends weakly on distant pixels through them; the
        convolutions alone see :attr:`receptive_field` pixels.
    """

    def __init__(
        self, in_channels: int = 4, base_channels: int = 32, n_layers: int = 2, norm: str = "group"
    ) -> None:
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        if norm not in ("group", "none"):
            raise UserError(f"model.discriminator.norm={norm!r} is invalid: use group or none")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = base_channels
        # (kernel, stride) of every convolution, for the receptive field.
        self._convs = [(4, 2)]
        for layer in range(1, n_layers + 1):
            stride = 2 if layer < n_layers else 1
            out = base_channels * min(2**layer, 8)
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1),
                nn.GroupNorm(group_count(out), out) if norm == "group" else nn.Identity(),
                nn.LeakyReLU(0.2),
            ]
            self._convs.append((4, stride))
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self._convs.append((4, 1))
        self.model = nn.Sequential(*layers)

    @property
    def receptive_field(self) -> int:
        """Input pixels that one output logit sees."""
        field = 1
        for kernel, stride in reversed(self._convs):
            field = field * stride + (kernel - stride)
        return field

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, h, w)``, one per patch."""
        return self.model(torch.cat([condition, image], dim=1))

    def features(self, condition: torch.Tensor, image: torch.Tensor) -> list[torch.Tensor]:
        """The activation after every hidden layer, then the logits (for feature matching)."""
        out = torch.cat([condition, image], dim=1)
        features = []
        for layer in self.model:
            out = layer(out)
            if isinstance(layer, nn.LeakyReLU):
                features.append(out)
        return features + [out]
