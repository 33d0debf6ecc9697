"""Cut an image into overlapping tiles, predict them in batches, and blend the results, in
torch on the image's device.

Networks are run on fixed-size tiles so memory stays bounded for arbitrarily large images.
Overlapping tiles are blended with a raised-cosine window: neighbouring windows sum to one
across the overlap, so a constant offset in the prediction leaves no seams. Outputs may have
other channels than the input and a scale factor (super-resolution): tiles are placed on the
scaled grid and blended there.

The last tile of a row or column is placed flush with the image's end, so it may overlap its
neighbour by more than ``overlap``; that keeps every tile inside the image (no padding for the
network to invent) but makes the stride uneven, which ``unfold``/``fold`` cannot express. Tiles
are therefore cut and added back as views of the image tensor: on a GPU that is a few small
kernels per tile, on a CPU a strided copy, and nothing leaves the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import product

import numpy as np
import torch
from torch import Tensor

from astrorestore.errors import UserError

PredictFn = Callable[[Tensor], Tensor]


def check_overlap(tile: int, overlap: int) -> None:
    """Raise UserError unless ``0 <= overlap < tile``."""
    if tile < 1:
        raise UserError(f"tile_size={tile} must be a positive number of pixels")
    if not 0 <= overlap < tile:
        raise UserError(
            f"overlap={overlap} must satisfy 0 <= overlap < tile_size={tile}; "
            f"pass overlap=<0..{tile - 1}> (about tile_size/8 is typical)"
        )


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``, stepping ``tile - overlap``.

    The last tile is placed flush with the end, so it may overlap its neighbour by more than
    ``overlap``; every tile lies fully inside the image.
    """
    check_overlap(tile, overlap)
    if length < tile:
        raise UserError(
            f"image side of {length} px is smaller than the tile size {tile}; "
            f"pass tile_size=<no larger than {length}>"
        )
    step = tile - overlap
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _ramp(tile: int, overlap: int) -> np.ndarray:
    w = np.ones(tile, dtype=np.float64)
    if overlap == 0:
        return w
    # Sampling at pixel centres keeps the first weight > 0 and makes the rising ramp of one
    # tile and the falling ramp of the next sum exactly to one.
    i = np.arange(tile, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.minimum(i + 0.5, overlap) / overlap)
    return np.minimum(rise, rise[::-1])


def blend_weights(tile: int, overlap: int, device: torch.device | str | None = None) -> Tensor:
    """(tile, tile) float32 window: 1 in the centre, raised-cosine ramps over ``overlap`` px.

    Strictly positive everywhere, so pixels on the image border (covered by a single tile's
    ramp) still receive a prediction.
    """
    check_overlap(tile, overlap)
    w = _ramp(tile, overlap)
    return torch.from_numpy(np.outer(w, w).astype(np.float32)).to(device)


def tile_positions(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(y, x)`` of every tile of a ``height x width`` image, row by row."""
    return list(product(tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)))


@lru_cache(maxsize=4)
def blend_norm(height: int, width: int, tile: int, overlap: int, scale: int, device: str) -> Tensor:
    """The sum of the windows of every tile over the ``(scale·H, scale·W)`` output grid, which
    the weighted sum of the tiles is divided by. Frames of a survey share a few geometries, so
    it is computed once per geometry and kept."""
    out_tile = tile * scale
    weight = blend_weights(out_tile, overlap * scale, device)
    norm = torch.zeros(height * scale, width * scale, device=device)
    for y, x in tile_positions(height, width, tile, overlap):
        norm[y * scale : y * scale + out_tile, x * scale : x * scale + out_tile] += weight
    return norm


def predict_tiled(
    image: Tensor,
    predict: PredictFn,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
    scale: int = 1,
) -> Tensor:
    """Apply ``predict`` to a ``(C, H, W)`` image tile by tile and blend the outputs.

    ``predict`` maps ``(N, C, T, T)`` tiles to ``(N, C_out, scale·T, scale·T)``; the result is a
    float32 ``(C_out, scale·H, scale·W)`` tensor on the image's device, each tile's output
    weighted by the blending window of the output grid. ``image`` must be finite where the
    prediction should be meaningful; callers handle NaN before tiling.
    """
    if image.ndim != 3:
        raise ValueError(f"predict_tiled expects a (C, H, W) image, got shape {tuple(image.shape)}")
    check_overlap(tile, overlap)
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be at least 1")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    _, height, width = image.shape
    if min(height, width) < tile:
        raise UserError(
            f"image is {height}x{width}, smaller than the tile size {tile}; "
            f"pass tile_size=<no larger than {min(height, width)}>"
        )
    positions = tile_positions(height, width, tile, overlap)
    out_tile = tile * scale
    if len(positions) == 1:
        # One tile is the whole image: its window would be divided out again.
        out = predict(image[None].float())
        if out.ndim != 4 or out.shape[0] != 1 or out.shape[-2:] != (out_tile,) * 2:
            raise ValueError(
                f"predict returned shape {tuple(out.shape)} for the image {tuple(image.shape)} "
                f"at scale {scale}"
            )
        return out[0].float()
    weight = blend_weights(out_tile, overlap * scale, image.device)
    src = image.float()
    acc: Tensor | None = None  # (C_out, sH, sW), allocated once C_out is known
    with _progress_bar(len(positions)) if progress else _no_progress() as advance:
        for start in range(0, len(positions), batch_size):
            batch = positions[start : start + batch_size]
            with _one_thread(image.device):
                tiles = torch.stack([src[:, y : y + tile, x : x + tile] for y, x in batch])
            out = predict(tiles)
            if out.ndim != 4 or out.shape[0] != len(batch) or out.shape[-2:] != (out_tile,) * 2:
                raise ValueError(
                    f"predict returned shape {tuple(out.shape)} for tiles {tuple(tiles.shape)} "
                    f"at scale {scale}"
                )
            out = out.float()
            if acc is None:
                acc = out.new_zeros(out.shape[1], height * scale, width * scale)
            with _one_thread(image.device):
                for k, (y, x) in enumerate(batch):
                    ys, xs = y * scale, x * scale
                    acc[:, ys : ys + out_tile, xs : xs + out_tile].addcmul_(out[k], weight)
            advance(len(batch))
    assert acc is not None
    return acc.div_(blend_norm(height, width, tile, overlap, scale, str(image.device)))


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Tile copies and blends on a CPU in the calling thread only: each moves one tile (~65k
    pixels, memory-bound), too little for a second thread to speed up, and a parallel region
    waits for every thread of the pool, which on a busy machine (other processes on the
    cores) made them ~100x slower: 2.4 s instead of 22 ms for a 2048² frame's 81 tiles."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _no_progress() -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[int], None]]:
    """rich progress bar over tiles, on stderr so stdout stays clean for per-file lines."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("tiles", total=total)
        yield lambda n: bar.advance(task, n)
