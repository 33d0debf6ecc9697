"""Colour maths shared by the data, the networks and inference: luminance/chroma splits of RGB.

One home for the colour spaces, below every layer that uses them (the colorization pairing
makes its grey input with :func:`luminance`, the chroma-only generator recombines with
:func:`compose_rgb`, ``infer.py`` restores colour images on luminance with
:func:`rgb_to_ycbcr`), so a network never imports the data package to know them.

- ``rgb``/``ycbcr``: ITU-R BT.601 (full range) luma ``Y``; chroma ``(Cb, Cr)`` in [-0.5, 0.5]
  for RGB in [0, 1]. For float data the usual +128 chroma offset is pointless, so Cb/Cr are
  centred on zero; the transform is linear and exact.
- ``lab``: CIE L*/100 (sRGB, D65, via kornia); chroma ``(a*, b*) / 100``.

The torch functions take and give (B, 3, H, W) RGB in [0, 1] (batched, differentiable); the
numpy pair works on (H, W, 3) images of any units. Photographs reach the colour models
normalised, ``z = (x - PHOTO_OFFSET) / PHOTO_SCALE`` (:func:`from_unit`, :func:`to_unit`; the
normaliser is :class:`astrorestore.data.normalization.photo.PhotoNormalizer`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from astrorestore.errors import UserError

COLOUR_SPACES = ("rgb", "lab", "ycbcr")
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
# Chroma scales chosen so Cb, Cr span [-0.5, 0.5] for RGB in [0, 1].
_CB_SCALE = 2.0 * (1.0 - _KB)
_CR_SCALE = 2.0 * (1.0 - _KR)
# L* and a*/b* scaled to about [0, 1] and [-1, 1].
_LAB_L, _LAB_AB = 100.0, 100.0

#: A normalised photograph is ``z = (x - PHOTO_OFFSET) / PHOTO_SCALE``: [0, 1] maps to [-1, 1].
PHOTO_OFFSET = 0.5
PHOTO_SCALE = 0.5


def to_unit(z: Tensor) -> Tensor:
    """Normalised photograph -> [0, 1] pixel values (the inverse map, without statistics)."""
    return z * PHOTO_SCALE + PHOTO_OFFSET


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] pixel values -> normalised photograph."""
    return (x - PHOTO_OFFSET) / PHOTO_SCALE


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


def _check(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {arr.shape}")
    return arr


def _out_dtype(arr: np.ndarray) -> np.dtype:
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 3) Y, Cb, Cr; Y has the units of the input."""
    rgb = _check(rgb, "rgb")
    # float64 internally so the round trip is exact to float32 precision.
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = _KR * r + _KG * g + _KB * b
    cb = (b - y) / _CB_SCALE
    cr = (r - y) / _CR_SCALE
    return np.stack([y, cb, cr], axis=-1).astype(_out_dtype(rgb))


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rgb_to_ycbcr`."""
    ycc = _check(ycc, "ycc")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    r = y + _CR_SCALE * cr
    b = y + _CB_SCALE * cb
    g = (y - _KR * r - _KB * b) / _KG
    return np.stack([r, g, b], axis=-1).astype(_out_dtype(ycc))
