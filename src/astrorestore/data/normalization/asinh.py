"""Exactly invertible normalisation for the huge dynamic range of astronomical images.

``z = asinh((x - offset) / scale)`` with ``offset`` the sky level and ``scale`` a few times the
sky noise: the map is linear within ~``scale`` of the sky (noise keeps its Gaussian shape, faint
sources keep their contrast) and logarithmic in star cores, so a 1e4 e- core enters the loss at
~7 rather than ~500 and nothing needs clipping. ``inverse`` undoes it exactly, so restored images
return to electrons for photometry.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.medians import nanmedian_hw

# 1.4826 * MAD is the standard deviation of a Gaussian.
_MAD_TO_SIGMA = 1.4826


def _nanmedian_hw(x: Tensor) -> Tensor:
    """NaN-ignoring median over the last two dims, keeping them as size 1 (the value
    ``torch.nanmedian`` gives, selected ~10x faster on a CPU frame)."""
    return nanmedian_hw(x)


class AsinhNormalizer:
    """Per image and channel ``asinh((x - sky) / (softening * sigma))`` and its exact inverse."""

    # Lower bound on ``scale``: absolute, plus relative to the sky level so that a constant image
    # (sigma = 0) maps to 0 instead of dividing by zero, at any unit (electrons or [0, 1] data).
    ABS_FLOOR = 1e-6
    REL_FLOOR = 1e-6

    def __init__(self, softening: float = 3.0) -> None:
        if not (softening > 0 and math.isfinite(softening)):
            raise UserError(
                f"data.normalizer.softening={softening!r} is invalid: use a finite value > 0"
            )
        self.softening = float(softening)

    def stats(self, noisy: Tensor) -> tuple[Tensor, Tensor]:
        """Per image and channel ``(offset, scale)``, each ``(B, C, 1, 1)``, from a noisy batch.

        ``offset`` is the NaN-ignoring median (the sky). The noise sigma comes from the MAD of
        horizontal pixel-to-pixel differences divided by sqrt(2), not from the plain MAD: the
        differences cancel everything smooth on the pixel scale (extended galaxy light, sky
        gradients, the wings of bright stars) which otherwise widens the plain pixel
        distribution and inflates sigma, while the median ignores the few sharp cores left.
        (It assumes pixel noise that is uncorrelated between neighbours, true of raw frames.)
        Non-finite pixels are ignored in both.
        """
        if noisy.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(noisy.shape)}")
        x = noisy.float()
        x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("nan")))
        offset = _nanmedian_hw(x)
        if x.shape[-1] > 1:
            diff = x[..., :, 1:] - x[..., :, :-1]
        else:
            diff = x[..., 1:, :] - x[..., :-1, :]
        if diff.numel() > 0:
            centre = _nanmedian_hw(diff)
            sigma = _MAD_TO_SIGMA * _nanmedian_hw((diff - centre).abs()) / math.sqrt(2.0)
        else:
            sigma = torch.zeros_like(offset)
        # An all-NaN image has no statistics: treat it as zero sky, minimum scale.
        offset = torch.nan_to_num(offset, nan=0.0)
        sigma = torch.nan_to_num(sigma, nan=0.0)
        floor = self.ABS_FLOOR + self.REL_FLOOR * offset.abs()
        scale = torch.maximum(self.softening * sigma, floor)
        return offset, scale

    def forward(self, x: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        """Electrons -> normalised: ``asinh((x - offset) / scale)``."""
        return torch.asinh((x - offset) / scale)

    def inverse(self, z: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        """Normalised -> electrons: ``sinh(z) * scale + offset`` (exact inverse of forward)."""
        return torch.sinh(z) * scale + offset

    __call__ = forward

    def __repr__(self) -> str:
        return f"AsinhNormalizer(softening={self.softening})"
