"""The on-disk tile cache of a prepared FITS folder, and its quality checks.

Layout of one cache entry (a folder named after the cache key):

- ``manifest.csv``: one row per usable frame (``manifest.ManifestRow``) with its split;
- ``splits.json``: the seeded train/val/test lists of frame paths;
- ``{split}_data.npy``, ``{split}_valid.npy`` and, when every frame has a noise map,
  ``{split}_sigma.npy``: the split's frames, each flattened and concatenated (1-D, float32 /
  bool / float32), so frames of different shapes share one memory-mapped array and overlapping
  tiles cost no extra disk. Values are the file's values times ``to_electrons`` when that is
  known (electrons), else the file's units; invalid pixels are NaN in data and sigma;
- ``tiles_{split}.npy``: a structured array, one record per tile: frame (index in the split),
  ``y, x, h, w`` (its window), ``valid_fraction``, and the AsinhNormalizer ``offset``/``scale``
  computed on the tile's valid pixels;
- ``prepared.json``: parameters, key, frame slots, skipped files. Written last: its presence
  marks a complete entry.

An epoch reads only these memory-mapped arrays, never the FITS files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.data.normalization.asinh import _MAD_TO_SIGMA, AsinhNormalizer
from astrorestore.data.preparation.manifest import SPLITS, ManifestRow, read_manifest
from astrorestore.errors import UserError

# Frames (or their sides) smaller than this give no tile: too little context for a network.
MIN_TILE_SIDE = 64
TILE_DTYPE = np.dtype(
    [
        ("frame", np.int32),
        ("y", np.int32),
        ("x", np.int32),
        ("h", np.int32),
        ("w", np.int32),
        ("valid_fraction", np.float32),
        ("offset", np.float32),
        ("scale", np.float32),
    ]
)
_QC_CHUNK = 1 << 22  # 16 MB of float32 per chunk


def _starts(n: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)  # the last tile is flush with the edge, so edges are covered
    return starts


def tile_positions(
    height: int, width: int, tile: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """``(y, x, h, w)`` windows covering a frame; a side shorter than ``tile`` gives windows of
    that side's length, and a frame with a side under ``MIN_TILE_SIDE`` gives none."""
    th, tw = min(height, tile), min(width, tile)
    if min(th, tw) < MIN_TILE_SIDE:
        return []
    return [(y, x, th, tw) for y in _starts(height, th, stride) for x in _starts(width, tw, stride)]


def _lower_median(values: np.ndarray) -> np.float32:
    # torch.nanmedian returns the lower of the two middle values; so does this.
    k = (values.size - 1) // 2
    return np.partition(values, k)[k]


def tile_stats(tile: np.ndarray, softening: float) -> tuple[np.float32, np.float32]:
    """``AsinhNormalizer(softening).stats`` of one (H, W) tile with NaN at invalid pixels.

    The same definition (NaN-ignoring median; MAD of horizontal differences / sqrt(2); the same
    floors) in numpy: a selection instead of torch's sort makes it ~10x faster, which is most
    of the time of preparing a folder. ``test_prepare`` checks the two agree.
    """
    values = tile[np.isfinite(tile)]
    offset = _lower_median(values) if values.size else np.float32(0.0)
    diff = (tile[:, 1:] - tile[:, :-1]).ravel()
    diff = diff[np.isfinite(diff)]
    sigma = np.float32(0.0)
    if diff.size:
        centre = _lower_median(diff)
        mad = _lower_median(np.abs(diff - centre))
        sigma = np.float32(_MAD_TO_SIGMA) * mad / np.float32(math.sqrt(2.0))
    floor = np.float32(AsinhNormalizer.ABS_FLOOR) + np.float32(AsinhNormalizer.REL_FLOOR) * abs(
        offset
    )
    return np.float32(offset), np.float32(max(np.float32(softening) * sigma, floor))


def tile_records(
    data: np.ndarray, valid: np.ndarray, frame_index: int, tile: int, stride: int, softening: float
) -> np.ndarray:
    """Tile records of one frame (see ``TILE_DTYPE``); tiles without a valid pixel are dropped.

    ``data`` must hold NaN at invalid pixels, so the statistics see only valid ones.
    """
    windows = tile_positions(*data.shape, tile, stride)
    records = np.zeros(len(windows), TILE_DTYPE)
    for i, (y, x, h, w) in enumerate(windows):
        fraction = valid[y : y + h, x : x + w].mean()
        offset, scale = tile_stats(data[y : y + h, x : x + w], softening) if fraction else (0, 0)
        records[i] = (frame_index, y, x, h, w, fraction, offset, scale)
    return records[records["valid_fraction"] > 0]


class NpyAppender:
    """Writes a 1-D ``.npy`` of known length by appending blocks: no memory map while writing,
    so the resident memory of preparing a folder stays at one frame whatever its size."""

    def __init__(self, path: Path, dtype: np.dtype | type, length: int) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.length = int(length)
        self.written = 0
        self._fh = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_2_0(self._fh, {**header, "shape": (self.length,)})

    def append(self, block: np.ndarray) -> int:
        """Append ``block`` (flattened); returns its start index in the array."""
        start = self.written
        flat = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1)
        self._fh.write(memoryview(flat))  # no copy
        self.written += flat.size
        return start

    def close(self) -> None:
        self._fh.close()
        if self.written != self.length:
            raise RuntimeError(f"{self.path}: wrote {self.written} of {self.length} elements")


@dataclass
class FrameSlot:
    """Where a frame lives in its split's flat arrays."""

    row: int  # index into Prepared.rows
    start: int
    height: int
    width: int


def _open_flat(path: Path) -> np.ndarray:
    if not path.exists():
        raise UserError(
            f"the tile cache {path.parent} is incomplete ({path.name} is missing); delete it and "
            "prepare again"
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # an empty split: nothing to map
        return np.load(path, allow_pickle=False)


class Prepared:
    """A complete cache entry (see the module docstring); open it with ``Prepared.load``."""

    def __init__(self, path: Path, info: dict[str, Any], rows: list[ManifestRow]) -> None:
        self.path = Path(path)
        self.info = info
        self.rows = rows
        self.frames = {s: [FrameSlot(*slot) for slot in info["frames"].get(s, [])] for s in SPLITS}
        self.tiles = {s: np.load(self.path / f"tiles_{s}.npy", allow_pickle=False) for s in SPLITS}
        self._arrays: dict[str, tuple] = {}
        #: Per split, a flat float32 ``.npy`` of the frames' sky maps in the data's layout
        #: (set by ``frame_statistics.use_sky_maps`` for ``data.normalizer.background=map``).
        self.sky_files: dict[str, Path] = {}

    @classmethod
    def load(cls, path: str | Path) -> Prepared:
        path = Path(path)
        marker = path / "prepared.json"
        if not marker.exists():
            raise UserError(
                f"{path} is not a prepared tile cache (no prepared.json); run python -m astrorestore.data.preparation.prepare <folder>"
            )
        info = json.loads(marker.read_text())
        return cls(path, info, read_manifest(path / "manifest.csv"))

    @property
    def units(self) -> str:
        return self.info["units"]

    @property
    def has_sigma(self) -> bool:
        return bool(self.info["has_sigma"])

    @property
    def softening(self) -> float:
        return float(self.info["params"]["softening"])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The split's flat ``(data, valid, sigma or None)``, memory-mapped read-only.

        Opened lazily (a DataLoader worker opens its own maps instead of pickling arrays).
        """
        if split not in SPLITS:
            raise UserError(f"split={split!r} is invalid: use one of {', '.join(SPLITS)}")
        if split not in self._arrays:
            data = _open_flat(self.path / f"{split}_data.npy")
            valid = _open_flat(self.path / f"{split}_valid.npy")
            sigma = _open_flat(self.path / f"{split}_sigma.npy") if self.has_sigma else None
            self._arrays[split] = (data, valid, sigma)
        return self._arrays[split]

    def frame(self, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Views ``(data, valid, sigma)`` of one frame of a split, each ``(H, W)``."""
        slot = self.frames[split][index]
        n = slot.height * slot.width
        shaped = []
        for flat in self.arrays(split):
            view = None if flat is None else flat[slot.start : slot.start + n]
            shaped.append(None if view is None else view.reshape(slot.height, slot.width))
        return shaped[0], shaped[1], shaped[2]

    def sky(self, split: str, index: int) -> np.ndarray | None:
        """The sky map ``(H, W)`` of one frame of a split (memory-mapped), or None without maps."""
        if split not in self.sky_files:
            return None
        key = f"sky:{split}"
        if key not in self._arrays:
            self._arrays[key] = (_open_flat(self.sky_files[split]),)
        slot = self.frames[split][index]
        n = slot.height * slot.width
        return self._arrays[key][0][slot.start : slot.start + n].reshape(slot.height, slot.width)

    def frame_row(self, split: str, index: int) -> ManifestRow:
        return self.rows[self.frames[split][index].row]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memory maps are reopened in the receiving process
        return state

    def summary(self) -> dict[str, Any]:
        return {
            "cache": str(self.path),
            "units": self.units,
            "pixel_scale": self.info.get("pixel_scale"),
            "files": len(self.rows),
            # One pointing: each split holds bands of the frames, not whole frames.
            "bands": bool(self.info.get("bands")),
            "frames": {s: len(self.frames[s]) for s in SPLITS},
            "tiles": {s: int(len(self.tiles[s])) for s in SPLITS},
            "skipped": len(self.info.get("skipped", [])),
            "sigma": self.has_sigma,
        }


def _qc_fail(prepared: Prepared, problem: str) -> UserError:
    return UserError(
        f"tile cache QC failed ({problem}) in {prepared.path}; delete that folder and prepare "
        "again, and report it if it repeats"
    )


def _chunks(path: Path) -> Iterator[np.ndarray]:
    """A flat ``.npy`` in chunks read into ordinary memory: scanning a memory map instead
    would leave every page it touched counted in the process's resident memory."""
    mapped = np.load(path, mmap_mode="r", allow_pickle=False) if path.stat().st_size else None
    if mapped is None or mapped.size == 0:
        return
    dtype, offset, size = mapped.dtype, mapped.offset, mapped.size
    del mapped
    with open(path, "rb") as fh:
        fh.seek(offset)
        for start in range(0, size, _QC_CHUNK):
            yield np.fromfile(fh, dtype=dtype, count=min(_QC_CHUNK, size - start))


def run_qc(prepared: Prepared) -> None:
    """Check the cache: disjoint splits, tiles in every split that has frames, finite numbers.

    Streams the flat arrays in chunks, so it runs in constant memory on any folder size.
    """
    owner: dict[str, str] = {}
    # A folder of one pointing is split into bands of each frame (prepare._bands): its splits
    # share files by design, never pixels.
    for split in SPLITS if not prepared.info.get("bands") else ():
        for slot in prepared.frames[split]:
            row = prepared.rows[slot.row]
            for key in (f"file {row.sha1}", f"pointing {row.group}"):
                if owner.setdefault(key, split) != split:
                    raise _qc_fail(
                        prepared, f"{row.path} {key.split()[0]} is in {owner[key]} and {split}"
                    )
    for split in SPLITS:
        tiles = prepared.tiles[split]
        if prepared.frames[split] and len(tiles) == 0:
            raise _qc_fail(prepared, f"split {split} has frames but no tile")
        if len(tiles) and not (
            np.isfinite(tiles["offset"]).all()
            and np.isfinite(tiles["scale"]).all()
            and (tiles["scale"] > 0).all()
        ):
            raise _qc_fail(prepared, f"non-finite normalisation parameters in split {split}")
        names = ("data", "valid", "sigma") if prepared.has_sigma else ("data", "valid")
        streams = [_chunks(prepared.path / f"{split}_{name}.npy") for name in names]
        for chunk in zip(*streams, strict=True):
            d, v = chunk[0], chunk[1]
            if not np.array_equal(np.isfinite(d), v):
                raise _qc_fail(prepared, f"split {split} has non-finite valid pixels")
            if len(chunk) == 3:
                s = chunk[2][v]
                if not (np.isfinite(s).all() and (s > 0).all()):
                    raise _qc_fail(prepared, f"split {split} has a non-positive noise sigma")
    if len(prepared.tiles["train"]) == 0:
        raise _qc_fail(prepared, "no training tile")
