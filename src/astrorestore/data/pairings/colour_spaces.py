"""Luminance/chroma splits of RGB tensors for colorization (batched, differentiable, torch).

The colorizer's grey input is the luminance of the chosen colour space, and a chroma-only
generator recombines its predicted chroma with that exact luminance, so the grey image a user
gives is never altered by the colouring. All functions take and give RGB in [0, 1].

- ``rgb``/``ycbcr``: BT.601 luma ``Y``; chroma ``(Cb, Cr)`` in [-0.5, 0.5] (linear, exact).
- ``lab``: CIE L*/100 (sRGB, D65, via kornia); chroma ``(a*, b*) / 100``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.errors import UserError

COLOUR_SPACES = ("rgb", "lab", "ycbcr")
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_CB_SCALE = 2.0 * (1.0 - _KB)
_CR_SCALE = 2.0 * (1.0 - _KR)
# L* and a*/b* scaled to about [0, 1] and [-1, 1].
_LAB_L, _LAB_AB = 100.0, 100.0


def check_colour_space(value: str, key: str = "data.pairing.color_space") -> str:
    if value not in COLOUR_SPACES:
        raise UserError(f"{key}={value!r} is invalid: use one of {', '.join(COLOUR_SPACES)}")
    return value


def luminance(rgb: Tensor, space: str) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) luminance of ``space`` (in [0, 1])."""
    if space == "lab":
        import kornia

        return kornia.color.rgb_to_lab(rgb.clamp(0.0, 1.0))[:, :1] / _LAB_L
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return _KR * r + _KG * g + _KB * b


def chroma(rgb: Tensor, space: str) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 2, H, W) chroma of ``space`` (about [-1, 1])."""
    if space == "lab":
        import kornia

        return kornia.color.rgb_to_lab(rgb.clamp(0.0, 1.0))[:, 1:] / _LAB_AB
    y = luminance(rgb, "ycbcr")
    return torch.cat([(rgb[:, 2:3] - y) / _CB_SCALE, (rgb[:, 0:1] - y) / _CR_SCALE], dim=1)


def compose_rgb(lum: Tensor, chroma_: Tensor, space: str) -> Tensor:
    """Inverse of (:func:`luminance`, :func:`chroma`): exact for ``ycbcr``; ``lab`` is clipped
    to the sRGB gamut (a*/b* can describe colours no [0, 1] RGB triple has)."""
    if space == "lab":
        import kornia

        lab = torch.cat([lum * _LAB_L, chroma_ * _LAB_AB], dim=1)
        return kornia.color.lab_to_rgb(lab.float(), clip=True)
    cb, cr = chroma_[:, 0:1], chroma_[:, 1:2]
    r = lum + _CR_SCALE * cr
    b = lum + _CB_SCALE * cb
    g = (lum - _KR * r - _KB * b) / _KG
    return torch.cat([r, g, b], dim=1)
