"""A fixed affine normaliser for photographs whose pixels are already in [0, 1].

Colour photographs (the Hubble Deep Field picture, Galaxy10 cut-outs) are not in electrons:
they were stretched and quantised to 8 bits before we saw them, so the sky/noise statistics
that :class:`~astrorestore.data.normalization.asinh.AsinhNormalizer` fits would only add per-image
jitter. The generative models work in ``z = (x - 0.5) / 0.5``, i.e. [0, 1] maps to [-1, 1]
(the range diffusion schedules and GAN generators are usually tuned for). Nothing is clipped:
a noisy or super-resolved pixel may leave [-1, 1] and is inverted exactly all the same.

``infer.py`` reads pixels as stored, so an 8-bit PNG arrives as 0-255 and a 16-bit TIFF as
0-65535: :meth:`PhotoNormalizer.stats` takes the full scale of each image from its maximum
(<= 1.5 -> 1, <= 255.5 -> 255, else 65535) and scales by it, so the network always sees the
range it was trained on. The [0, 1] <-> normalised maps without statistics
(``to_unit``/``from_unit``) live with the colour maths in :mod:`astrorestore.colour`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.colour import PHOTO_OFFSET, PHOTO_SCALE


def full_scale(peak: float) -> float:
    """The full scale of an image whose maximum is ``peak``: 1, 255 or 65535."""
    return 1.0 if peak <= 1.5 else 255.0 if peak <= 255.5 else 65535.0


class PhotoNormalizer:
    """``(x - 0.5) / 0.5`` with the same interface as the asinh normaliser (``stats``,
    ``forward``, ``inverse``), so data modules and ``infer.py`` use it unchanged."""

    def stats(self, reference: Tensor) -> tuple[Tensor, Tensor]:
        """``(offset, scale)`` = ``(0.5, 0.5) x full scale`` as ``(B, 1, 1, 1)`` tensors (one
        value for all channels, so grey inputs and colour outputs share it)."""
        if reference.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(reference.shape)}")
        finite = torch.nan_to_num(reference.float(), nan=0.0, posinf=0.0, neginf=0.0)
        peak = finite.flatten(1).amax(1).view(-1, 1, 1, 1)
        full_scale = torch.where(
            peak <= 1.5,
            torch.ones_like(peak),
            torch.where(
                peak <= 255.5, torch.full_like(peak, 255.0), torch.full_like(peak, 65535.0)
            ),
        )
        return PHOTO_OFFSET * full_scale, PHOTO_SCALE * full_scale

    def forward(self, x: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        return (x - offset) / scale

    def inverse(self, z: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        return z * scale + offset

    __call__ = forward

    def __repr__(self) -> str:
        return "PhotoNormalizer()"
