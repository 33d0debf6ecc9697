"""The manifest of a FITS folder: what each file is, its hash, and which split it belongs to.

The manifest is the record a user can read (a CSV) and the key of the tile cache: the SHA-1 of
every file goes into the cache key, so a changed file invalidates the cache. Splits are made at
the level of pointing groups (frames that share a ``pointing_id``, else single frames): two
exposures of one field in different splits would leak the test sky into training.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from astrorestore.errors import UserError
from astrorestore.io.formats import FITS_SUFFIXES

SPLITS = ("train", "val", "test")
# Frames whose pixel scales differ by less than this (relative) count as one scale.
SCALE_TOLERANCE = 0.01


@dataclass
class ManifestRow:
    """One usable frame. ``path`` is relative to the folder; ``units`` is the file's BUNIT."""

    path: str
    sha1: str
    height: int
    width: int
    dtype: str
    telescope: str
    instrument: str
    detector: str
    filter: str
    exposure: float
    units: str
    to_electrons: float
    pixel_scale: float
    pointing_id: str
    hdu: int
    split: str = ""

    @property
    def stored_units(self) -> str:
        """Units of the cached pixels: electrons when the conversion is known, else the file's."""
        return "electron" if math.isfinite(self.to_electrons) else (self.units or "unknown")

    @property
    def group(self) -> str:
        return self.pointing_id or f"frame:{self.sha1}"


def discover_fits(root: Path) -> list[Path]:
    """All FITS files under ``root`` (recursively), sorted; hidden folders (caches) are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.root={str(root)!r} is not a folder; pass a folder of FITS files")
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.name.lower().endswith(FITS_SUFFIXES):
            found.append(path)
    if not found:
        raise UserError(
            f"data.root={str(root)!r} holds no FITS files ({', '.join(FITS_SUFFIXES)}); "
            "point it at the folder of your frames"
        )
    return sorted(found)


def sha1_file(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-1 of a file, read in chunks (files can be larger than memory)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def row_from_frame(frame, rel_path: str, sha1: str) -> ManifestRow:
    """A manifest row from a ``fits_frames.Frame``."""
    meta = frame.meta
    return ManifestRow(
        path=rel_path,
        sha1=sha1,
        height=frame.shape[0],
        width=frame.shape[1],
        dtype=frame.raw_dtype,
        telescope=str(meta.get("telescope") or ""),
        instrument=str(meta.get("instrument") or ""),
        detector=str(meta.get("detector") or ""),
        filter=str(meta.get("filter") or ""),
        exposure=_nan_if_none(meta.get("exposure")),
        units=frame.units,
        to_electrons=_nan_if_none(frame.to_electrons),
        pixel_scale=_nan_if_none(frame.pixel_scale),
        pointing_id=str(meta.get("pointing_id") or ""),
        hdu=frame.hdu_index,
    )


def write_manifest(rows: list[ManifestRow], path: Path) -> None:
    names = [f.name for f in fields(ManifestRow)]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: repr(v) if isinstance(v, float) else v for k, v in asdict(row).items()}
            )


def read_manifest(path: Path) -> list[ManifestRow]:
    types = {f.name: f.type for f in fields(ManifestRow)}
    rows = []
    with open(path, newline="") as fh:
        for record in csv.DictReader(fh):
            values = {}
            for key, text in record.items():
                kind = types[key]
                values[key] = (
                    float(text) if kind == "float" else int(text) if kind == "int" else text
                )
            rows.append(ManifestRow(**values))
    return rows


def check_consistency(rows: list[ManifestRow], allow_mixed: bool = False) -> None:
    """One unit and one pixel scale per folder, unless ``allow_mixed``.

    Units are compared after conversion (frames in electrons and electrons/s both end up in
    electrons), so only frames the cache would store in different units are refused.
    """
    if allow_mixed or not rows:
        return
    units = sorted({r.stored_units for r in rows})
    if len(units) > 1:
        examples = {r.stored_units: r.path for r in rows}
        listed = ", ".join(f"{u} ({examples[u]})" for u in units)
        raise UserError(
            f"the folder mixes units {listed}; keep one kind of product per folder, pass the "
            "gain (data.gain) so all convert to electrons, or set data.allow_mixed=true"
        )
    scales = [r.pixel_scale for r in rows]
    known = [s for s in scales if math.isfinite(s)]
    if known and (len(known) != len(scales) or max(known) > min(known) * (1 + SCALE_TOLERANCE)):

        def shown(r: ManifestRow) -> str:
            scale = f"{r.pixel_scale:.4g} arcsec/px" if math.isfinite(r.pixel_scale) else "no WCS"
            return f"{r.path}: {scale}"

        lo = min(rows, key=lambda r: r.pixel_scale if math.isfinite(r.pixel_scale) else -1)
        hi = max(rows, key=lambda r: r.pixel_scale if math.isfinite(r.pixel_scale) else -1)
        raise UserError(
            f"the folder mixes pixel scales ({shown(lo)}, {shown(hi)}); keep one scale per "
            "folder or set "
            "data.allow_mixed=true"
        )


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Groups per split: rounded fractions, at least one val/test group when ``n`` allows it
    and the fraction is > 0, and always at least one training group."""
    if n <= 0:
        return 0, 0, 0
    n_val = round(n * val_fraction)
    n_test = round(n * test_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    while n_val + n_test > n - 1:
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def assign_splits(
    rows: list[ManifestRow],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    train_only: frozenset[str] = frozenset(),
) -> dict[str, list[str]]:
    """Seeded split of pointing groups; sets ``row.split`` and returns ``{split: [paths]}``.

    The groups are sorted before shuffling, so the split depends on the seed and the set of
    groups, not on the order files were listed in. Groups in ``train_only`` (single exposures
    when training on exposure pairs: no pair to validate or test on) always train.
    """
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"data.{key}={value} is invalid: use a value in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves "
            "no training frames: make the sum < 1"
        )
    groups = sorted({r.group for r in rows} - set(train_only))
    order = np.random.default_rng(seed).permutation(len(groups))
    n_train, n_val, _ = split_counts(len(groups), val_fraction, test_fraction)
    split_of = {group: "train" for group in train_only}
    for rank, g in enumerate(order):
        split_of[groups[g]] = (
            "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        )
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for row in rows:
        row.split = split_of[row.group]
        out[row.split].append(row.path)
    return out
