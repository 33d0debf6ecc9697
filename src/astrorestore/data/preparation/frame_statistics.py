"""Whole-frame normalisation statistics of a prepared folder, so training crops are normalised
as ``infer.py`` normalises the whole image.

``infer.py`` fits one (offset, scale) per image. The tile cache stores statistics per tile;
here each frame's are computed once with the normaliser's own definition, saved next to the
cache entry (keyed on the normaliser), and given to every tile of that frame. With
``data.normalizer.background=map`` each frame's sky map is measured once too (as ``infer.py``
measures it on the whole frame) and saved in the layout of the split's data, so crops cut it
with their pixels (:func:`frame_sky_maps`, :func:`use_sky_maps`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.preparation.manifest import SPLITS
from astrorestore.data.preparation.tile_cache import Prepared, tile_stats


def _stats_path(prepared: Prepared, normalizer: Any) -> Path:
    key = hashlib.sha1(repr(normalizer).encode()).hexdigest()[:12]
    return prepared.path / f"frame_stats_{key}.npz"


def frame_statistics(prepared: Prepared, normalizer: Any) -> dict[str, np.ndarray]:
    """``{split: (n_frames, 2) [offset, scale]}``: the normaliser's statistics of every whole
    frame, as ``infer.py`` computes them; saved next to the cache entry, computed once."""
    path = _stats_path(prepared, normalizer)
    if path.exists():
        with np.load(path) as saved:
            stats = {s: saved[s] for s in SPLITS}
        if all(len(stats[s]) == len(prepared.frames[s]) for s in SPLITS):
            return stats
    stats = {}
    for split in SPLITS:
        rows = []
        for index in range(len(prepared.frames[split])):
            data, _, _ = prepared.frame(split, index)  # NaN at invalid pixels
            rows.append(_whole_frame_stats(np.asarray(data), normalizer))
        stats[split] = np.asarray(rows, np.float32).reshape(-1, 2)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, **stats)
    os.replace(tmp, path)  # atomic: concurrent ranks write identical files
    return stats


def frame_sky_maps(prepared: Prepared, normalizer: Any) -> dict[str, Path]:
    """``{split: path}`` of flat float32 ``.npy`` files holding every frame's sky map in the
    layout of the split's data (``normalizer.sky_map`` of the whole frame, invalid pixels
    ignored); computed once and saved next to the cache entry, keyed on the normaliser."""
    key = hashlib.sha1(repr(normalizer).encode()).hexdigest()[:12]
    paths = {}
    for split in SPLITS:
        if not prepared.frames[split]:
            continue  # an empty split (no test frames): nothing to map
        path = prepared.path / f"frame_sky_{key}_{split}.npy"
        paths[split] = path
        data_flat = prepared.arrays(split)[0]
        if path.exists() and np.load(path, mmap_mode="r").shape == data_flat.shape:
            continue
        flat = np.zeros(data_flat.shape, np.float32)
        for index, slot in enumerate(prepared.frames[split]):
            data, _, _ = prepared.frame(split, index)  # NaN at invalid pixels
            sky = normalizer.sky_map(np.asarray(data))
            flat[slot.start : slot.start + sky.size] = sky.ravel()
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
        np.save(tmp, flat)
        os.replace(tmp, path)  # atomic: concurrent ranks write identical files
    return paths


def use_sky_maps(prepared: Prepared, paths: dict[str, Path]) -> None:
    """Give the prepared folder its frames' sky maps: crops then carry theirs (``background``)."""
    prepared.sky_files = dict(paths)


def _whole_frame_stats(data: np.ndarray, normalizer: Any) -> tuple[float, float]:
    if isinstance(normalizer, AsinhNormalizer):
        offset, scale = tile_stats(data, normalizer.softening)
        return float(offset), float(scale)
    offset, scale = normalizer.stats(torch.from_numpy(np.array(data, np.float32))[None, None])
    return float(offset.flatten()[0]), float(scale.flatten()[0])


def use_frame_stats(prepared: Prepared, stats: dict[str, np.ndarray]) -> None:
    """Give every tile its parent frame's statistics (in memory): crops are then normalised,
    and their invalid pixels filled with the sky, exactly as ``infer.py`` treats the frame."""
    for split in SPLITS:
        tiles = prepared.tiles[split].copy()
        if len(tiles):
            frames = tiles["frame"]
            tiles["offset"] = stats[split][frames, 0]
            tiles["scale"] = stats[split][frames, 1]
        prepared.tiles[split] = tiles
