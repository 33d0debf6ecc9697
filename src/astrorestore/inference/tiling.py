"""Cut an image into overlapping tiles, predict them in batches, and blend the results.

Networks are run on fixed-size tiles so memory stays bounded for arbitrarily large images.
Overlapping tiles are blended with a raised-cosine window: neighbouring windows sum to one
across the overlap, so a constant offset in the prediction leaves no seams. Outputs may have
other channels than the input and a scale factor (super-resolution): tiles are placed on the
scaled grid and blended there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import product

import numpy as np

from astrorestore.errors import UserError

PredictFn = Callable[[np.ndarray], np.ndarray]


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


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) float32 window: 1 in the centre, raised-cosine ramps over ``overlap`` px.

    Strictly positive everywhere, so pixels on the image border (covered by a single tile's
    ramp) still receive a prediction.
    """
    check_overlap(tile, overlap)
    w = _ramp(tile, overlap)
    return np.outer(w, w).astype(np.float32)


def _batches(items: list[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def predict_tiled(
    image: np.ndarray,
    predict: PredictFn,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: bool = False,
    scale: int = 1,
) -> np.ndarray:
    """Apply ``predict`` to a ``(C, H, W)`` image tile by tile and blend the outputs.

    ``predict`` maps ``(N, C, T, T)`` tiles to ``(N, C_out, scale·T, scale·T)``; the result is a
    float32 ``(C_out, scale·H, scale·W)`` array, each tile's output weighted by the blending window
    of the output grid. ``image`` must be finite where the prediction should be meaningful;
    callers handle NaN before tiling.
    """
    if image.ndim != 3:
        raise ValueError(f"predict_tiled expects a (C, H, W) image, got shape {image.shape}")
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
    positions = list(product(tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)))
    out_tile = tile * scale
    weight = blend_weights(out_tile, overlap * scale).astype(np.float64)
    src = np.asarray(image, dtype=np.float32)
    acc: np.ndarray | None = None  # (C_out, sH, sW), allocated once C_out is known
    # float64 accumulators: tiny border weights divide back without precision loss.
    norm = np.zeros((height * scale, width * scale), dtype=np.float64)

    with _progress_bar(len(positions)) if progress else _no_progress() as advance:
        for batch in _batches(positions, batch_size):
            tiles = np.stack([src[:, y : y + tile, x : x + tile] for y, x in batch])
            out = np.asarray(predict(tiles))
            if (
                out.ndim != 4
                or out.shape[0] != len(batch)
                or out.shape[-2:] != (out_tile, out_tile)
            ):
                raise ValueError(
                    f"predict returned shape {out.shape} for tiles {tiles.shape} at scale {scale}"
                )
            if acc is None:
                acc = np.zeros((out.shape[1], height * scale, width * scale), dtype=np.float64)
            for k, (y, x) in enumerate(batch):
                ys, xs = y * scale, x * scale
                acc[:, ys : ys + out_tile, xs : xs + out_tile] += out[k] * weight
                norm[ys : ys + out_tile, xs : xs + out_tile] += weight
            advance(len(batch))
    assert acc is not None
    return (acc / norm).astype(np.float32)


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
