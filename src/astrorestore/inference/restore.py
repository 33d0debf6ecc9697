"""Restore whole images with a :class:`~astrorestore.inference.restorer.Restorer`.

NaN handling, one normalisation per image, tiling, and the colour conventions: which channels
the restorer takes and gives decides the path, never what kind of model it is. Everything from
the statistics to the inverse normalisation runs in torch on the restorer's device; NumPy is
only the array a frame arrives and leaves in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch

from astrorestore.colour import rgb_to_ycbcr, ycbcr_to_rgb
from astrorestore.data.corruption.noise_estimate import estimate_frame_noise
from astrorestore.data.normalization.asinh import frame_noise, photons_per_unit
from astrorestore.elementwise import fill_where_, nonfinite
from astrorestore.errors import UserError
from astrorestore.inference.restorer import Restorer
from astrorestore.inference.tiling import check_overlap, predict_tiled, tile_positions
from astrorestore.medians import nanmedian_hw

log = logging.getLogger(__name__)


def largest_valid_tile(height: int, width: int, multiple: int, requested: int) -> int:
    """Largest multiple of ``multiple`` that is <= ``requested`` and fits the image (0 if none)."""
    limit = min(height, width, requested)
    return (limit // multiple) * multiple


def fit_tile(height: int, width: int, tile: int, multiple: int) -> int:
    """The tile actually used: ``tile``, or for an image smaller than it the largest tile
    that fits (a multiple of ``multiple``), so one ``tile_size`` serves a folder of frames and
    cut-outs of any size. Raises UserError for a ``tile`` that is not a positive multiple of
    ``multiple`` on an image it would be used on, or an image smaller than ``multiple``."""
    multiple = max(int(multiple), 1)
    if tile > min(height, width):
        best = largest_valid_tile(height, width, multiple, tile)
        if best < multiple:
            raise UserError(
                f"image is {height}x{width}, smaller than the smallest tile this model accepts "
                f"({multiple} px); pass an image at least {multiple}x{multiple} px"
            )
        return best
    if tile < 1 or tile % multiple:
        best = largest_valid_tile(height, width, multiple, max(tile, multiple))
        raise UserError(
            f"tile_size={tile} is not a positive multiple of {multiple}, which this model "
            f"requires; pass tile_size={best}"
        )
    return tile


def fit_overlap(tile: int, fitted: int, overlap: int) -> int:
    """``overlap``, reduced to a quarter of the tile when the tile was shrunk to the image."""
    return overlap if fitted == tile else min(overlap, fitted // 4)


def check_image(data: np.ndarray, restorer: Restorer, tile: int, finite: bool = True) -> None:
    """Everything that makes an image unusable with ``restorer``, as one-line UserErrors.
    ``finite=False`` leaves out the pass over the pixels (no finite pixel at all), which the
    restoration itself then makes on the device."""
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] == 3)):
        raise UserError(
            f"image of shape {data.shape} is neither grey (H, W) nor RGB (H, W, 3); "
            "split it into 2-D planes first"
        )
    if data.ndim == 2 and restorer.in_channels != 1:
        raise UserError(
            f"model {restorer.name} takes {restorer.in_channels}-channel (colour) images, but the "
            "input is grey; pass colour images"
        )
    fit_tile(data.shape[0], data.shape[1], tile, restorer.size_multiple)  # raises if unusable
    if finite and not np.isfinite(data).any():
        raise _no_finite_pixels(data.shape[0], data.shape[1])


def _no_finite_pixels(height: int, width: int) -> UserError:
    return UserError(
        f"image ({height}x{width}) has no finite pixels (all NaN/inf); check "
        "the input file or pass hdu=<index> of the science extension"
    )


def one_tile(height: int, width: int, tile: int, multiple: int) -> bool:
    """Whether a ``height x width`` image is restored as one tile (a square image whose side is
    the tile :func:`fit_tile` gives it): such frames of one shape can share a network batch."""
    fitted = fit_tile(height, width, tile, multiple)
    return height == fitted and width == fitted


def bound_gain(
    plane: np.ndarray, keywords: dict[str, Any] | None = None, err: np.ndarray | None = None
) -> tuple[float, str]:
    """``(gain in e- per unit, where it came from)`` for a network bounded by each frame's
    noise: the frame noise model's (header GAIN/BUNIT, ``err`` map, else a mean-variance fit on
    the pixels). The bound needs the gain alone, so a frame that tells its gain but not its read
    noise is not refused for it. Where the frame cannot tell: inf (the sky noise alone, a lower
    bound) and the reason."""
    try:
        noise = estimate_frame_noise(plane, keywords, err=err, read_noise_electrons=0.0)
    except UserError as error:
        return math.inf, str(error).split("; pass", 1)[0]
    return float(noise.gain), noise.gain_source


def fitted_gain(plane: np.ndarray) -> float:
    """:func:`bound_gain` from the pixels alone, for callers that know no header; a frame that
    cannot tell is bounded by its sky noise, with a warning."""
    gain, source = bound_gain(plane)
    if math.isinf(gain):
        log.warning("noise bound by the sky noise alone: %s", source)
    return gain


def restore_tensor(
    image: torch.Tensor,
    restorer: Restorer,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
    gain: Sequence[float] | None = None,
) -> torch.Tensor:
    """Restore a ``(C, H, W)`` tensor whose C is the restorer's input channels, on its device
    (or a batch of them, below).

    Returns float32 ``(C_out, scale·H, scale·W)`` on the same device, NaN where the input was
    not finite (in any channel). Non-finite pixels are filled with the median of the finite
    pixels before the network sees them (bad pixels are normally isolated or in masked regions,
    where the sky level is the best guess), so they cannot spread through the convolutions. The
    normalisation statistics are computed once on the whole image, with the NaNs ignored:
    per-tile statistics would give every tile a different scale and show up as seams. So is a
    normaliser's sky map (``data.normalizer.background=map`` at training): one map of the whole
    frame, cut with the tiles, and invalid pixels are filled with it instead of the median.
    A stochastic restorer draws from one generator seeded with ``seed`` for the whole image.
    Nothing here leaves the device: the caller moves the frame in once and the result out once.

    A ``(B, C, H, W)`` batch of frames gives ``(B, C_out, scale·H, scale·W)``, each frame with
    its own statistics and NaN fill; more than one frame only where each is one tile
    (:func:`one_tile`), whose network passes then take ``batch_size`` frames at a time.

    ``gain``: each frame's gain in e- per unit, for a network bounded by each frame's noise
    (``restorer.frame_gain``; ignored otherwise); None: from a mean-variance fit on each frame
    (:func:`fitted_gain`). ``infer.py`` passes the frame noise model's (header, ERR map, fit).
    """
    if image.ndim == 3:
        gain = None if gain is None else list(gain)[:1]
        return restore_tensor(
            image[None], restorer, tile, overlap, batch_size, progress, seed, gain
        )[0]
    images = image
    check_overlap(tile, overlap)
    frames, channels, height, width = images.shape
    if frames > 1 and len(tile_positions(height, width, tile, overlap)) != 1:
        raise ValueError(f"a batch of {frames} frames of {height}x{width} is not one tile each")
    src = images.float()
    bad = nonfinite(src)
    fill = None
    if bad is not None:
        # Non-finite pixels take np.median's value (mean of the two middle ones) over each
        # frame's finite pixels, all channels; NaN when there are none.
        fill = nanmedian_hw(src.reshape(frames, 1, -1, width), midpoint=True, finite=True)
        if bool(torch.isnan(fill).any()):
            raise _no_finite_pixels(height, width)
    norm = restorer.normalizer
    generator = torch.Generator(device=src.device).manual_seed(int(seed))
    with torch.inference_mode():
        # A normaliser with a per-pixel sky map measures it here, on each whole frame.
        offset, scale = getattr(norm, "frame_stats", norm.stats)(src)
        photons = None
        if restorer.frame_gain:
            if gain is None:
                planes = src[:, 0].cpu().numpy()
                gain = [fitted_gain(plane) for plane in planes]
            if len(gain) != frames:
                raise ValueError(f"{len(gain)} gains for {frames} frames")
            photons = photons_per_unit(torch.tensor(list(gain), dtype=torch.float32), scale)
        # A new buffer: the input is never written to.
        z = norm.forward(src, offset, scale)
        if bad is not None and fill is not None:
            if offset.shape[-2:] == src.shape[-2:]:
                # A sky map: invalid pixels take the map's value, which normalises to 0.
                fill_where_(z, bad, 0.0)
            else:
                # The fill, normalised as any pixel of its channel.
                z_fill = norm.forward(fill.expand_as(offset), offset, scale)
                for b, c in product(range(frames), range(channels)):
                    fill_where_(z[b, c], bad[b, c], z_fill[b, c, 0, 0])

        def predict(tiles: torch.Tensor, frame: slice = slice(0, 1)) -> torch.Tensor:
            # A network bounded by each frame's noise is given the shot noise of the frame(s)
            # the tiles come from.
            with frame_noise(None if photons is None else photons[frame]):
                return restorer(tiles, generator)

        if frames == 1:
            z_out = predict_tiled(
                z[0], predict, tile, overlap, batch_size, progress, restorer.scale
            )
            z_out = z_out[None]
        else:
            z_out = torch.cat([
                predict(z[first : first + batch_size], slice(first, first + batch_size)).float()
                for first in range(0, frames, batch_size)
            ])  # fmt: skip
        if offset.shape[1] != 1 and offset.shape[1] != z_out.shape[1]:
            # Statistics per input channel cannot be matched to other output channels.
            offset, scale = offset.mean(1, keepdim=True), scale.mean(1, keepdim=True)
        restored = norm.inverse(z_out, offset, scale).float()
        if bad is not None:
            bad = bad[:, 0] if channels == 1 else bad.any(dim=1)
            if restorer.scale > 1:
                bad = bad.repeat_interleave(restorer.scale, 1).repeat_interleave(restorer.scale, 2)
            fill_where_(restored, bad[:, None], float("nan"))
    return restored


def restore_channels(
    images: np.ndarray,
    restorer: Restorer,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
    gain: Sequence[float] | None = None,
) -> np.ndarray:
    """:func:`restore_tensor` of a ``(B, C, H, W)`` array: one transfer to the restorer's
    device and one back."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    x = x.to(restorer.device, non_blocking=True)
    out = restore_tensor(x, restorer, tile, overlap, batch_size, progress, seed, gain)
    return out.cpu().numpy()


def restore_image(
    data: np.ndarray | list[np.ndarray],
    restorer: Restorer,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
    seed: int = 0,
    gain: Sequence[float] | None = None,
) -> Any:
    """Restore a grey ``(H, W)`` or RGB ``(H, W, 3)`` image; returns ``(sH, sW)`` or ``(sH, sW, 3)``.

    ``tile`` is the largest tile: an image smaller than it is restored in the largest tile that
    fits (:func:`fit_tile`), with the overlap cut to a quarter of that tile.

    - grey restorer (1 -> 1) on an RGB image: restore the luminance (BT.601 Y) only, keep the
      chroma (up-sampled for a scale factor), because chroma noise is far less visible;
    - colouring restorer (1 -> 3) on an RGB image: its luminance is coloured anew;
    - colour restorer (3 -> 3) on a grey image: refused, there is nothing to take colour from.

    ``data`` may be a list of images of one shape, each one tile (:func:`one_tile`) when there
    are several: they pass the network together and a list of restored images comes back.
    ``gain``: each image's gain for a network bounded by each frame's noise (see
    :func:`restore_tensor`).
    """
    if not isinstance(data, list):
        gain = None if gain is None else [gain] if np.isscalar(gain) else list(gain)
        return restore_image([data], restorer, tile, overlap, batch_size, progress, seed, gain)[0]
    images = data
    for each in images:
        check_image(each, restorer, tile, finite=False)
    data = images[0]
    fitted = fit_tile(data.shape[0], data.shape[1], tile, restorer.size_multiple)
    overlap = fit_overlap(tile, fitted, overlap)
    if any(other.shape != data.shape for other in images):
        raise ValueError("restore_image restores a list of images of one shape")
    rgb, grey_in = data.ndim == 3, restorer.in_channels == 1
    ycc = [rgb_to_ycbcr(np.asarray(d, dtype=np.float32)) for d in images] if rgb and grey_in else []
    if rgb and grey_in:
        x = np.stack([each[None, ..., 0] for each in ycc])
    elif rgb:
        x = np.stack([np.moveaxis(np.asarray(d, dtype=np.float32), -1, 0) for d in images])
    else:
        x = data[None, None] if len(images) == 1 else np.stack(images)[:, None]
    outs = restore_channels(x, restorer, fitted, overlap, batch_size, progress, seed, gain)
    if rgb and grey_in and restorer.out_channels == 1:
        s = restorer.scale
        results = []
        for out, each in zip(outs, ycc, strict=True):
            kept = each[..., 1:].repeat(s, axis=0).repeat(s, axis=1) if s > 1 else each[..., 1:]
            merged = np.concatenate([out[0][..., None], kept], axis=-1)
            results.append(ycbcr_to_rgb(merged).astype(np.float32))
        return results
    return [out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1) for out in outs]
