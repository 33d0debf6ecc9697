"""Prepare a folder of FITS frames for training, once: manifest, split, tiles, cache, QC.

    python -m astrorestore.data.preparation.prepare <folder> [--cache DIR] [--tile-size 512] [--stride 256]
                                                 [--seed 0]

Run by hand, or by the data modules on first use: both call ``prepare_folder``. The cache entry
is keyed on every file's SHA-1 and on the parameters, so a re-run with the same inputs reuses it
and a changed, added or removed file rebuilds it. Frames are streamed one at a time (read twice:
once to list and check them, once to write the chosen split), so memory stays at about one
frame whatever the folder's size.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.preparation.manifest import (
    SPLITS,
    ManifestRow,
    assign_splits,
    check_consistency,
    discover_fits,
    row_from_frame,
    sha1_file,
    write_manifest,
)
from astrorestore.data.preparation.tile_cache import (
    MIN_TILE_SIDE,
    TILE_DTYPE,
    NpyAppender,
    Prepared,
    run_qc,
    tile_positions,
    tile_records,
)
from astrorestore.data.sources.fits_frames import FrameSkipped, read_frame
from astrorestore.errors import UserError

log = logging.getLogger(__name__)
# Bump when the cache layout or its computation changes: old entries are then rebuilt.
CACHE_VERSION = 2  # 2: a folder of one pointing is split into bands of its frames
DEFAULT_CACHE_NAME = ".astrorestore-cache"


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        yield bar


def _step(bar: Any, description: str, items: list) -> Iterator:
    if bar is None:
        yield from items
        return
    task = bar.add_task(description, total=len(items))
    for item in items:
        yield item
        bar.advance(task)


def _check_params(tile_size: int, stride: int, gain: float | None = None) -> None:
    if gain is not None and not (isinstance(gain, (int, float)) and np.isfinite(gain) and gain > 0):
        raise UserError(
            f"data.gain={gain} is invalid: use the detector gain in e-/DN, > 0 (about 2 for "
            "NIRCam), or null to keep the file's units"
        )
    if int(tile_size) != tile_size or tile_size < MIN_TILE_SIDE:
        raise UserError(f"data.tile_size={tile_size} is invalid: use an integer >= {MIN_TILE_SIDE}")
    if int(stride) != stride or not 1 <= stride <= tile_size:
        raise UserError(
            f"data.stride={stride} is invalid: use an integer in [1, data.tile_size={tile_size}]"
        )


def _cache_key(files: list[tuple[str, str]], params: dict[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, "files": files, "params": params}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _drop_stale_entries(cache_dir: Path, root: Path, keep: str) -> None:
    # Entries of the same folder under other keys were made from files that changed since.
    for marker in cache_dir.glob("*/prepared.json"):
        entry = marker.parent
        if entry.name == keep:
            continue
        try:
            same_root = json.loads(marker.read_text()).get("root") == str(root)
        except (OSError, ValueError):
            same_root = False
        if same_root:
            log.info("removing stale tile cache %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def prepare_folder(
    root: str | Path,
    cache_dir: str | Path | None = None,
    *,
    tile_size: int = 512,
    stride: int = 256,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    hdu: int | str | None = None,
    plane: int | None = None,
    gain: float | None = None,
    softening: float = 3.0,
    allow_mixed: bool = False,
    progress: bool = True,
    pairs: bool = False,
    pair_key: str | None = None,
) -> Prepared:
    """Prepare ``root`` into ``cache_dir`` (default ``<root>/.astrorestore-cache``) and return
    the checked cache entry. See the module docstring of ``tile_cache`` for what is written."""
    _check_params(tile_size, stride, gain)
    root = Path(root).resolve()
    files = discover_fits(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else root / DEFAULT_CACHE_NAME
    params = {
        "tile_size": int(tile_size),
        "stride": int(stride),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "hdu": hdu,
        "plane": plane,
        "gain": gain,
        "softening": float(softening),
        "allow_mixed": bool(allow_mixed),
    }
    if pairs:  # (only then: other caches keep their keys)
        params["pairs"] = True
    if pair_key is not None:  # the frames' pointing ids come from this header keyword
        params["pair_key"] = str(pair_key)
    AsinhNormalizer(softening)  # refuses a bad softening before any work
    with _progress(progress) as bar:
        hashes = [(str(p.relative_to(root)), sha1_file(p)) for p in _step(bar, "hashing", files)]
        key = _cache_key(hashes, params)
        entry = cache_dir / key
        if (entry / "prepared.json").exists():
            log.info("reusing tile cache %s", entry)
            return Prepared.load(entry)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the cache folder {cache_dir} ({exc.strerror}); pass a writable --cache / data.cache_dir"
            ) from None
        rows, skipped, all_sigma = _list_frames(root, hashes, params, bar)
        check_consistency(rows, allow_mixed)
        # Training on exposure pairs: a pointing of one exposure has no pair to validate or
        # test on, so it only trains (where some pointing has a pair at all).
        sizes = Counter(r.group for r in rows)
        single = frozenset(g for g, n in sizes.items() if n == 1)
        train_only = single if pairs and len(single) < len(sizes) else frozenset()
        splits = assign_splits(rows, seed, val_fraction, test_fraction, train_only)
        bands = _bands_of_one_pointing(
            root, rows, params, val_fraction, test_fraction, len(sizes) - len(train_only)
        )
        if bands is not None:
            splits["bands"] = bands
        tmp = cache_dir / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            info = _write_entry(tmp, root, rows, all_sigma, params, bar, bands)
            info.update(root=str(root), key=key, skipped=skipped, params=params)
            write_manifest(rows, tmp / "manifest.csv")
            (tmp / "splits.json").write_text(json.dumps({"seed": seed, **splits}, indent=1))
            (tmp / "prepared.json").write_text(json.dumps(info, indent=1))
            shutil.rmtree(entry, ignore_errors=True)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    prepared = Prepared.load(entry)
    try:
        run_qc(prepared)
    except UserError:
        shutil.rmtree(entry, ignore_errors=True)  # never leave a failed entry to be reused
        raise
    _drop_stale_entries(cache_dir, root, keep=key)
    return prepared


def _read(root: Path, rel: str, params: dict[str, Any]):
    return read_frame(
        root / rel,
        hdu=params["hdu"],
        plane=params["plane"],
        gain=params["gain"],
        pair_key=params.get("pair_key"),
    )


def _list_frames(root, hashes, params, bar) -> tuple[list[ManifestRow], list[str], bool]:
    """First pass: read every file, keep those that give a frame; log why others do not."""
    rows, skipped, all_sigma = [], [], True
    for rel, sha1 in _step(bar, "reading", hashes):
        try:
            frame = _read(root, rel, params)
        except FrameSkipped as exc:
            skipped.append(str(exc))
            log.warning("skipping: %s", exc)
            continue
        if not tile_positions(*frame.shape, params["tile_size"], params["stride"]):
            reason = f"{root / rel} is {frame.shape[0]}x{frame.shape[1]} px, smaller than {MIN_TILE_SIDE} px"
            skipped.append(reason)
            log.warning("skipping: %s", reason)
            continue
        all_sigma &= frame.sigma is not None
        rows.append(row_from_frame(frame, rel, sha1))
    if not rows:
        first = f": {skipped[0]}" if skipped else ""
        raise UserError(
            f"none of the {len(hashes)} FITS files in {root} gives a training frame{first}; "
            "replace or remove the files (each one's reason is logged above)"
        )
    return rows, skipped, all_sigma


def _bands(
    height: int,
    width: int,
    val_fraction: float,
    test_fraction: float,
    extent: tuple[tuple[int, int], tuple[int, int]] | None = None,
):
    """``(axis, {split: [lo, hi]})``: a frame cut across the longer side of its valid pixels'
    bounding box ``extent`` (``((y0, y1), (x0, x1))``, default the whole frame) into a
    training, a validation and a test band, each holding at least ``MIN_TILE_SIDE`` px of that
    box (a mosaic's empty border goes with the first and the last band); without room for a
    test band, none; ``None`` when not even a validation band fits beside the training one."""
    extent = extent or ((0, height), (0, width))
    sizes = [hi - lo for lo, hi in extent]
    axis = 0 if sizes[0] >= sizes[1] else 1
    (lo, hi), end = extent[axis], (height, width)[axis]
    n = hi - lo
    for test in (test_fraction, 0.0):
        n_val = max(MIN_TILE_SIDE, round(n * val_fraction)) if val_fraction > 0 else 0
        n_test = max(MIN_TILE_SIDE, round(n * test_fraction)) if test > 0 else 0
        n_train = n - n_val - n_test
        if n_train >= MIN_TILE_SIDE:
            a, b = lo + n_train, lo + n_train + n_val
            if not n_test:
                b = end
            return axis, {"train": [0, a], "val": [a, b], "test": [b, end]}
    return None


def _valid_extent(valid: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def _bands_of_one_pointing(
    root: Path,
    rows: list[ManifestRow],
    params: dict[str, Any],
    val_fraction,
    test_fraction,
    n_groups: int,
) -> dict[str, Any] | None:
    """A folder of one pointing (one frame, or exposures of one pointing) has no second
    pointing to validate on: each frame is then cut into bands (``_bands``) over the valid
    pixels of all its frames of that shape, so exposure pairs stay aligned. ``None`` when the
    folder has several pointings, when no validation is asked for, or when a frame is too
    small to cut."""
    if n_groups != 1 or val_fraction <= 0:
        return None
    extents: dict[tuple[int, int], list] = {}
    for r in rows:
        (y0, y1), (x0, x1) = _valid_extent(_read(root, r.path, params).valid)
        e = extents.setdefault((r.height, r.width), [y0, y1, x0, x1])
        e[:] = [min(e[0], y0), max(e[1], y1), min(e[2], x0), max(e[3], x1)]
    cuts = []
    for r in rows:
        y0, y1, x0, x1 = extents[(r.height, r.width)]
        cuts.append(_bands(r.height, r.width, val_fraction, test_fraction, ((y0, y1), (x0, x1))))
    if any(c is None for c in cuts):
        return None  # too small to cut: no validation split (the data modules say so)
    axes = {axis for axis, _ in cuts}
    log.info(
        "a single pointing to split: each frame is cut across its %s into training, validation and "
        "test bands (%s px)",
        "rows" if axes == {0} else "columns" if axes == {1} else "longer side",
        ", ".join(f"{s} {hi - lo}" for s, (lo, hi) in cuts[0][1].items() if hi > lo),
    )
    return {"axes": [axis for axis, _ in cuts], "ranges": [b for _, b in cuts]}


def _band(array: np.ndarray | None, axis: int, lo: int, hi: int) -> np.ndarray | None:
    if array is None:
        return None
    return np.ascontiguousarray(array[lo:hi] if axis == 0 else array[:, lo:hi])


def _write_entry(tmp, root, rows, all_sigma, params, bar, bands=None) -> dict[str, Any]:
    """Second pass: stream each split's frames into its flat arrays and tile table (with
    ``bands``, each frame's bands into their splits)."""
    softening = params["softening"]
    frames: dict[str, list[list[int]]] = {s: [] for s in SPLITS}
    # (split, row, band or None), and each piece's (height, width)
    if bands is None:
        work = [(s, i, None) for s in SPLITS for i, r in enumerate(rows) if r.split == s]
        shapes = {w: (rows[w[1]].height, rows[w[1]].width) for w in work}
    else:
        work, shapes = [], {}
        for s in SPLITS:
            for i, r in enumerate(rows):
                axis, (lo, hi) = bands["axes"][i], bands["ranges"][i][s]
                if hi > lo:
                    piece = (s, i, (axis, lo, hi))
                    work.append(piece)
                    shapes[piece] = (hi - lo, r.width) if axis == 0 else (r.height, hi - lo)
    writers: dict[str, tuple] = {}
    tiles: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    try:
        for s in SPLITS:
            n = sum(h * w for (ws, _, _), (h, w) in shapes.items() if ws == s)
            writers[s] = (
                NpyAppender(tmp / f"{s}_data.npy", np.float32, n),
                NpyAppender(tmp / f"{s}_valid.npy", np.bool_, n),
                NpyAppender(tmp / f"{s}_sigma.npy", np.float32, n) if all_sigma else None,
            )
        for s, i, band in _step(bar, "tiling", work):
            row = rows[i]
            frame = _read(root, row.path, params)
            if frame.shape != (row.height, row.width):
                raise UserError(f"{root / row.path} changed while it was being prepared; run again")
            factor = np.float32(frame.to_electrons) if frame.to_electrons is not None else None
            data = frame.data * factor if factor is not None else frame.data
            valid = frame.valid
            sigma = (
                frame.sigma * factor
                if factor is not None and frame.sigma is not None
                else frame.sigma
            )
            if band is not None:
                data, valid, sigma = (_band(a, *band) for a in (data, valid, sigma))
            data_w, valid_w, sigma_w = writers[s]
            start = data_w.append(data)
            valid_w.append(valid)
            if sigma_w is not None:
                sigma_w.append(sigma)
            index = len(frames[s])
            frames[s].append([i, start, *shapes[(s, i, band)]])
            tiles[s].append(
                tile_records(data, valid, index, params["tile_size"], params["stride"], softening)
            )
    finally:
        for trio in writers.values():
            for w in trio:
                if w is not None:
                    w.close()
    for s in SPLITS:
        table = np.concatenate(tiles[s]) if tiles[s] else np.zeros(0, TILE_DTYPE)
        np.save(tmp / f"tiles_{s}.npy", table)
    scales = sorted({r.pixel_scale for r in rows if np.isfinite(r.pixel_scale)})
    return {
        "units": sorted({r.stored_units for r in rows})[0]
        if len({r.stored_units for r in rows}) == 1
        else "mixed",
        "pixel_scale": scales[0] if len(scales) == 1 else None,
        "has_sigma": all_sigma,
        "frames": frames,
        "bands": bands,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m astrorestore.data.preparation.prepare",
        description="Prepare a folder of FITS frames for training (manifest, split, tiles, QC).",
    )
    parser.add_argument("folder", help="folder of FITS frames (searched recursively)")
    parser.add_argument(
        "--cache", default=None, help=f"cache folder (default <folder>/{DEFAULT_CACHE_NAME})"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--hdu", default=None, help="science HDU: index, EXTNAME or 'SCI,2'")
    parser.add_argument("--plane", type=int, default=None, help="plane of 3-D cubes")
    parser.add_argument("--gain", type=float, default=None, help="e-/DN when the header has none")
    parser.add_argument("--allow-mixed", action="store_true", help="allow mixed units/pixel scales")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        prepared = prepare_folder(
            args.folder,
            args.cache,
            tile_size=args.tile_size,
            stride=args.stride,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            hdu=args.hdu,
            plane=args.plane,
            gain=args.gain,
            allow_mixed=args.allow_mixed,
            progress=not args.no_progress,
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = prepared.summary()
    frames = "frame" if s["files"] == 1 else "frames"
    print(f"prepared {s['files']} {frames} ({s['skipped']} skipped) -> {s['cache']}")
    pieces = "bands " if s["bands"] else "frames"
    if s["bands"]:
        print("  one pointing: each frame is cut into training, validation and test bands")
    for split in SPLITS:
        print(f"  {split:5s}: {s['frames'][split]:4d} {pieces} {s['tiles'][split]:6d} tiles")
    scale = f"{s['pixel_scale']:.4g} arcsec/px" if s["pixel_scale"] else "unknown pixel scale"
    print(f"  units: {s['units']}, {scale}, noise map: {'yes' if s['sigma'] else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
