"""Benchmark preparing a folder of FITS frames, and reading crops back from the tile cache.

Why: an epoch must never wait on FITS parsing, and preparing a folder must not need memory in
proportion to the folder. Steps:

1. Write JWST-like ``*_cal.fits`` frames (SCI and ERR float32, DQ uint32 with a few flagged
   pixels, MJy/sr with PHOTMJSR/XPOSURE/GAIN) totalling ``--size-gb`` into a temporary folder.
2. Run ``prepare_folder`` in a child process and report its wall time, tiles/s, MB/s of FITS,
   and its peak resident memory (``ru_maxrss``) next to the same process's memory right after
   its imports (torch, astropy), so the part due to preparing is visible. The files were just
   written, so they are in the page cache: this is the CPU cost, not a cold-disk read.
3. Run it again to time the cache hit (hashing the files, then loading the entry).
4. Time ``RandomTileCrops`` (``--patch-size``, batches of ``--batch-size``, num_workers=0)
   through a DataLoader: patches/s of the data pipeline alone.

Usage: ``python bench/bench_fits_tiling.py [--size-gb 1.0] [--frame-size 2048] [--keep]
[--out FOLDER]``. Results are printed and written to ``FOLDER/fits_tiling.json`` (default
``bench/results``); ``--smoke``: a few 256 px frames, 3 batches (does the bench run?).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, add_output_options

CHILD = """
import json, resource, sys, time
from astrorestore.data.preparation.prepare import prepare_folder
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
p = prepare_folder(sys.argv[1], sys.argv[2], tile_size=int(sys.argv[3]), stride=int(sys.argv[4]),
                   progress=False)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kb": peak, "after_imports_kb": base,
                  "summary": p.summary()}))
"""


def write_frames(folder: Path, size_gb: float, side: int) -> tuple[int, int]:
    """JWST-like frames until the folder holds ``size_gb``; returns (files, bytes)."""
    from astropy.io import fits

    rng = np.random.default_rng(0)
    total, n = 0, 0
    while total < size_gb * 1e9:
        sci = rng.normal(0.3, 0.05, (side, side)).astype(np.float32)
        dq = np.zeros((side, side), np.uint32)
        dq[rng.integers(side, size=200), rng.integers(side, size=200)] = 1  # DO_NOT_USE
        sci[dq == 1] = np.nan
        primary = fits.PrimaryHDU()
        primary.header.update(TELESCOP="JWST", INSTRUME="NIRCAM", FILTER="F200W")
        h = fits.ImageHDU(sci, name="SCI")
        h.header.update(BUNIT="MJy/sr", PHOTMJSR=0.5, XPOSURE=500.0, GAIN=2.0)
        err = fits.ImageHDU(np.full((side, side), 0.05, np.float32), name="ERR")
        path = folder / f"jw{n:04d}_cal.fits"
        fits.HDUList([primary, h, err, fits.ImageHDU(dq, name="DQ")]).writeto(path)
        total += path.stat().st_size
        n += 1
    return n, total


def run_prepare(folder: Path, cache: Path, tile: int, stride: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(cache), str(tile), str(stride)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def dataset_speed(cache_entry: Path, patch: int, batch: int, batches: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    from astrorestore.data.preparation.tile_cache import Prepared
    from astrorestore.data.sources.tile_dataset import RandomTileCrops

    torch.manual_seed(0)
    ds = RandomTileCrops(Prepared.load(cache_entry), "train", patch, length=batch * batches)
    loader = DataLoader(ds, batch_size=batch, num_workers=0)
    t0 = time.perf_counter()
    n = sum(b["noisy"].shape[0] for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--frame-size", type=int, default=2048)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    add_output_options(parser)
    args = parser.parse_args()
    if args.smoke:
        args.size_gb, args.frame_size, args.tile_size, args.stride = 0.002, 256, 128, 64
        args.patch_size, args.batch_size, args.batches = 32, 4, 3
    sys.path.insert(0, str(REPO / "src"))

    work = Path(tempfile.mkdtemp(prefix="bench_fits_"))
    try:
        folder, cache = work / "frames", work / "cache"
        folder.mkdir()
        t0 = time.perf_counter()
        n_files, n_bytes = write_frames(folder, args.size_gb, args.frame_size)
        print(f"wrote {n_files} frames, {n_bytes / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
        first = run_prepare(folder, cache, args.tile_size, args.stride)
        second = run_prepare(folder, cache, args.tile_size, args.stride)
        tiles = sum(first["summary"]["tiles"].values())
        entry = Path(first["summary"]["cache"])
        cache_bytes = sum(p.stat().st_size for p in entry.iterdir())
        speed = dataset_speed(entry, args.patch_size, args.batch_size, args.batches)
        result = {
            "fits_files": n_files,
            "fits_gb": n_bytes / 1e9,
            "frame_size": args.frame_size,
            "tile_size": args.tile_size,
            "stride": args.stride,
            "tiles": tiles,
            "prepare_s": first["seconds"],
            "tiles_per_s": tiles / first["seconds"],
            "fits_mb_per_s": n_bytes / 1e6 / first["seconds"],
            "peak_rss_mb": first["peak_kb"] / 1024,
            "rss_after_imports_mb": first["after_imports_kb"] / 1024,
            "cache_gb": cache_bytes / 1e9,
            "cache_hit_s": second["seconds"],
            "patch_size": args.patch_size,
            "patches_per_s": speed,
        }
        for key, value in result.items():
            print(f"{key:>22}: {value:.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fits_tiling.json").write_text(json.dumps(result, indent=1))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
