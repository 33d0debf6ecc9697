"""Restore whole images with a trained network: NaN handling, global normalisation, tiling.

The restorer is duck-typed (see :class:`Restorer`) so this module does not depend on how a
checkpoint is loaded.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from astrorestore.errors import UserError
from astrorestore.inference.tiling import check_overlap, predict_tiled
from astrorestore.io.color import rgb_to_ycbcr, ycbcr_to_rgb


class Restorer(Protocol):
    """What restoration needs from a loaded model."""

    net: torch.nn.Module
    normalizer: Any
    size_multiple: int
    device: torch.device
    name: str
    ckpt_path: str


def largest_valid_tile(height: int, width: int, multiple: int, requested: int) -> int:
    """Largest multiple of ``multiple`` that is <= ``requested`` and fits the image (0 if none)."""
    limit = min(height, width, requested)
    return (limit // multiple) * multiple


def check_tile(height: int, width: int, tile: int, multiple: int) -> None:
    """Raise UserError unless ``tile`` is a positive multiple of ``multiple`` fitting the image."""
    multiple = max(int(multiple), 1)
    if tile >= 1 and tile % multiple == 0 and tile <= min(height, width):
        return
    best = largest_valid_tile(height, width, multiple, max(tile, multiple))
    if best < multiple:
        raise UserError(
            f"image is {height}x{width}, smaller than the smallest tile this model accepts "
            f"({multiple} px); pass an image at least {multiple}x{multiple} px"
        )
    if tile > min(height, width):
        raise UserError(
            f"image is {height}x{width}, smaller than the tile size {tile}; pass "
            f"tile_size={best} (a multiple of {multiple} no larger than the image)"
        )
    raise UserError(
        f"tile_size={tile} is not a positive multiple of {multiple}, which this model requires; "
        f"pass tile_size={best}"
    )


def _safe_scale(scale: torch.Tensor) -> torch.Tensor:
    # A flat image has zero spread; dividing by it would turn the whole output into NaN.
    ok = torch.isfinite(scale) & (scale > 0)
    return torch.where(ok, scale, torch.ones_like(scale))


def restore_plane(
    image: np.ndarray,
    restorer: Restorer,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Restore one 2-D plane; returns float32 of the same shape, NaN where the input was not finite.

    Non-finite pixels are filled with the median of the finite pixels before the network
    sees them (a global, not local, median: cheap, and bad pixels are normally isolated or
    in masked regions where the sky level is the best guess), so they cannot spread through
    the convolutions. Normalisation statistics are computed once on the whole image; per-tile
    statistics would give every tile a different scale and show up as seams.
    """
    if image.ndim != 2:
        raise ValueError(f"restore_plane expects a 2-D image, got shape {image.shape}")
    height, width = image.shape
    check_overlap(tile, overlap)
    check_tile(height, width, tile, restorer.size_multiple)
    finite = np.isfinite(image)
    if not finite.any():
        raise UserError(
            f"image ({height}x{width}) has no finite pixels (all NaN/inf); check the input file "
            "or pass hdu=<index> of the science extension"
        )
    src = np.asarray(image, dtype=np.float32)
    filled = np.where(finite, src, np.float32(np.median(src[finite]))).astype(np.float32)

    device = torch.device(restorer.device)
    norm = restorer.normalizer
    net = restorer.net
    with torch.no_grad():
        # Stats see the NaNs (the normaliser is NaN-aware), so filled pixels do not bias them.
        full = torch.from_numpy(np.ascontiguousarray(src))[None, None].to(device)
        offset, scale = norm.stats(full)
        scale = _safe_scale(scale)
        z = norm.forward(torch.from_numpy(filled)[None, None].to(device), offset, scale)
        z_np = z[0, 0].float().cpu().numpy()
        del full, z

        def predict(tiles: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(tiles).to(device)
            return net(x).float().cpu().numpy()

        z_out = predict_tiled(z_np, predict, tile, overlap, batch_size, progress)
        out = norm.inverse(torch.from_numpy(z_out)[None, None].to(device), offset, scale)
        restored = out[0, 0].float().cpu().numpy()
    restored[~finite] = np.nan
    return restored


def restore_image(
    data: np.ndarray,
    restorer: Restorer,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """Restore a grey (H, W) or RGB (H, W, 3) image.

    RGB images are restored on luminance only (BT.601 Y); chroma is kept as is, because the
    networks are single-channel and chroma noise is far less visible than luminance noise.
    """
    if data.ndim == 2:
        return restore_plane(data, restorer, tile, overlap, batch_size, progress)
    if data.ndim == 3 and data.shape[2] == 3:
        ycc = rgb_to_ycbcr(np.asarray(data, dtype=np.float32))
        ycc[..., 0] = restore_plane(ycc[..., 0], restorer, tile, overlap, batch_size, progress)
        return ycbcr_to_rgb(ycc).astype(np.float32)
    raise UserError(
        f"image of shape {data.shape} is neither grey (H, W) nor RGB (H, W, 3); "
        "split it into 2-D planes first"
    )
