"""Cut an image into overlapping tiles, predict them in batches, and blend the results.

Networks are run on fixed-size tiles so memory stays bounded for arbitrarily large images.
Overlapping tiles are blended with a raised-cosine window: neighbouring windows sum to one
across the overlap, so a constant offset in the prediction leaves no seams.
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
) -> np.ndarray:
    """Apply ``predict`` ((N,1,T,T) -> (N,1,T,T)) to a 2-D image tile by tile and blend.

    Returns a float32 (H, W) array. ``image`` must be finite where the prediction should be
    meaningful; callers handle NaN before tiling.
    """
    if image.ndim != 2:
        raise ValueError(f"predict_tiled expects a 2-D image, got shape {image.shape}")
    check_overlap(tile, overlap)
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be at least 1")
    height, width = image.shape
    if min(height, width) < tile:
        raise UserError(
            f"image is {height}x{width}, smaller than the tile size {tile}; "
            f"pass tile_size=<no larger than {min(height, width)}>"
        )
    positions = list(product(tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)))
    weight = blend_weights(tile, overlap).astype(np.float64)
    # float64 accumulators: tiny border weights divide back without precision loss.
    acc = np.zeros((height, width), dtype=np.float64)
    norm = np.zeros((height, width), dtype=np.float64)
    src = np.asarray(image, dtype=np.float32)

    with _progress_bar(len(positions)) if progress else _no_progress() as advance:
        for batch in _batches(positions, batch_size):
            tiles = np.stack([src[y : y + tile, x : x + tile] for y, x in batch])[:, None]
            out = np.asarray(predict(tiles))
            if out.shape != tiles.shape:
                raise ValueError(f"predict returned shape {out.shape} for input {tiles.shape}")
            for k, (y, x) in enumerate(batch):
                acc[y : y + tile, x : x + tile] += out[k, 0] * weight
                norm[y : y + tile, x : x + tile] += weight
            advance(len(batch))
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
