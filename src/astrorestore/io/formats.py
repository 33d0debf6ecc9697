"""Supported image formats, the in-memory image record, and checks shared by the readers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError

# ".fits.fz"/".fz": tile-compressed FITS (fpack; DECam, Legacy Survey, Rubin). The compressed
# HDUs are read like any image and written back compressed the same way.
_FORMAT_BY_SUFFIX = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".fits.fz": "fits",
    ".fz": "fits",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMAT_BY_SUFFIX)
FITS_SUFFIXES = tuple(s for s, fmt in _FORMAT_BY_SUFFIX.items() if fmt == "fits")
#: Photographs: pixels in data numbers (8/16-bit), not in physical units like FITS and .npy.
PHOTOGRAPH_FORMATS = ("png", "jpeg", "tiff")


@dataclass
class LoadedImage:
    """One image read from disk plus what is needed to write a restored copy back.

    ``data`` is float32, ``(H, W)`` for grey or ``(H, W, 3)`` for RGB. ``source_dtype`` is the
    on-disk pixel type (for FITS the raw BITPIX type before scaling). ``extra`` holds
    format-specific details for writing back (FITS on-disk shape, TIFF channel layout).
    ``content`` holds a FITS file's bytes when it was read whole into memory (a survey run
    hashes and decodes the same bytes), so that writing the restored copy takes the other HDUs
    from them instead of reading the file again.
    """

    path: Path
    format: str
    data: np.ndarray
    hdu_index: int | None = None
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    extra: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = field(default=None, repr=False)

    @property
    def is_rgb(self) -> bool:
        return self.data.ndim == 3


def image_suffix(path: Path | str) -> str | None:
    """The supported suffix ``path`` ends with (lower-case, compound ``.fits.gz`` aware)."""
    name = Path(path).name.lower()
    # Longest first so ".fits.gz" wins over a bare ".gz" lookup.
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def image_format(path: Path | str) -> str | None:
    """'fits' | 'png' | 'jpeg' | 'tiff' | 'npy' from the file name, or None if unsupported."""
    suffix = image_suffix(path)
    return None if suffix is None else _FORMAT_BY_SUFFIX[suffix]


def is_tile_compressed_name(path: Path | str) -> bool:
    """True for a name that promises tile-compressed FITS (``.fits.fz``, ``.fz``)."""
    return image_suffix(path) in (".fits.fz", ".fz")


def require_format(path: Path) -> str:
    fmt = image_format(path)
    if fmt is None:
        raise UserError(
            f"unsupported file type {path.name!r}; supported suffixes: "
            + " ".join(SUPPORTED_SUFFIXES)
        )
    return fmt


def short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def as_image_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Validate a decoded array as (H,W) or (H,W,3) and convert it to float32."""
    if arr.dtype.kind not in "biuf":
        raise UserError(
            f"{path} holds {arr.dtype} data, not numeric pixels; convert it to a numeric {what}"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha carries no signal to restore
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise UserError(
            f"{path} holds an array of shape {arr.shape}; astrorestore restores 2-D grey (H, W) "
            "or RGB (H, W, 3) images — split it into 2-D planes first"
        )
    if min(arr.shape[:2]) < 1:
        raise UserError(f"{path} holds an empty image of shape {arr.shape}; pass a non-empty image")
    return np.ascontiguousarray(arr, dtype=np.float32)


def same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
