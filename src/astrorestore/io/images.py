"""Reading and writing the image formats astrorestore restores (FITS, PNG, JPEG, TIFF, NPY).

Reading always yields float32 pixel values in physical units (FITS BSCALE/BZERO applied);
writing goes back to the source format so a restored file can replace the original in a
pipeline. Writes are atomic: a partial output file never exists.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError
from astrorestore.io.fits import read_fits, write_fits
from astrorestore.io.formats import (
    SUPPORTED_SUFFIXES,
    LoadedImage,
    as_image_array,
    image_format,
    image_suffix,
    require_format,
    same_file,
    short_reason,
)
from astrorestore.io.paths import resolve_io

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LoadedImage",
    "image_format",
    "image_suffix",
    "read_image",
    "resolve_io",
    "write_image",
]

# ----------------------------------------------------------------------------- reading


def read_image(path: str | Path, hdu: int | str | None = None) -> LoadedImage:
    """Read one image; see the module docstring for the conventions.

    ``hdu`` selects the FITS HDU (index or EXTNAME) and is ignored for other formats.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file; pass a file or use a folder input")
    fmt = require_format(path)
    readers = {
        "png": _read_pil,
        "jpeg": _read_pil,
        "tiff": _read_tiff,
        "npy": _read_npy,
    }
    try:
        if fmt == "fits":
            return read_fits(path, hdu)
        return readers[fmt](path, fmt)
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # any decoder failure means the file is not what its name says
        raise UserError(
            f"cannot read {path}: {short_reason(exc)}; is it a valid {fmt.upper()} file?"
        ) from exc


def _png_is_16bit_colour(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(26)
    # IHDR: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA).
    return (
        len(head) == 26
        and head[:8] == b"\x89PNG\r\n\x1a\n"
        and head[24] == 16
        and head[25] in (2, 6)
    )


# 16-bit grey ("I;16*", or "I" on older Pillow) and float images are taken as they are.
_PIL_KEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _read_pil(path: Path, fmt: str) -> LoadedImage:
    from PIL import Image

    if fmt == "png" and _png_is_16bit_colour(path):
        # Pillow silently reduces 16-bit colour PNGs to 8 bits, which would lose the signal.
        raise UserError(
            f"{path} is a 16-bit colour PNG, which cannot be read without losing precision; "
            "convert it to a 16-bit TIFF"
        )
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("1", "L", "LA"):
            im = im.convert("L")
        elif mode not in _PIL_KEEP_MODES:
            im = im.convert("RGB")  # RGB, RGBA, palette, CMYK, ...
        arr = np.array(im)
    if mode in _PIL_KEEP_MODES and mode != "F":
        source_dtype = np.dtype(np.uint16)
    elif mode == "F":
        source_dtype = np.dtype(np.float32)
    else:
        source_dtype = np.dtype(np.uint8)
    data = as_image_array(arr, path, fmt.upper())
    return LoadedImage(path=path, format=fmt, data=data, source_dtype=source_dtype)


def _read_tiff(path: Path, fmt: str) -> LoadedImage:
    import tifffile

    arr = np.asarray(tifffile.imread(path))
    extra: dict[str, Any] = {"planar": False}
    # Planar (separate) RGB comes back channels-first.
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
        extra["planar"] = True
    if arr.ndim > 3 or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise UserError(
            f"{path} is a {arr.ndim}-D stack of shape {arr.shape}; astrorestore restores 2-D "
            "images — split the stack into single-page TIFFs"
        )
    source_dtype = arr.dtype
    data = as_image_array(arr, path, "TIFF")
    return LoadedImage(path=path, format="tiff", data=data, source_dtype=source_dtype, extra=extra)


def _read_npy(path: Path, fmt: str) -> LoadedImage:
    arr = np.load(path, allow_pickle=False)
    source_dtype = arr.dtype
    if arr.ndim == 3 and arr.shape[2] == 4:
        raise UserError(
            f"{path} holds an array of shape {arr.shape}; pass (H, W) or (H, W, 3) arrays"
        )
    data = as_image_array(arr, path, "array")
    return LoadedImage(path=path, format="npy", data=data, source_dtype=source_dtype)


# ----------------------------------------------------------------------------- writing


@contextmanager
def _atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; move it into place only if the body succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(dest) or dest.suffix
    # The real suffix stays at the end: astropy picks gzip from ".gz", numpy appends ".npy".
    fd, tmp_name = tempfile.mkstemp(
        dir=dest.parent, prefix=f".{dest.name}.", suffix=".part" + suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _to_dtype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        # NaN has no integer representation; the darkest value is the least surprising.
        clean = np.nan_to_num(
            arr.astype(np.float64), nan=info.min, posinf=info.max, neginf=info.min
        )
        return np.clip(np.rint(clean), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return arr > 0.5
    return arr.astype(np.float32)


def write_image(
    path: str | Path,
    restored: np.ndarray,
    source: LoadedImage,
    history: list[str],
    keywords: dict[str, tuple[Any, str]],
) -> None:
    """Write ``restored`` in the source's format, atomically.

    FITS keeps every HDU of the input and the science header (WCS included); only its data
    are replaced (as float32, unscaled), with ``history`` appended and ``keywords`` set.
    Other formats cannot carry that metadata and ignore ``history``/``keywords``.
    """
    path = Path(path).expanduser()
    if same_file(path, source.path):
        raise UserError(f"output path equals the input {source.path}; choose another output")
    if restored.shape != source.data.shape:
        raise ValueError(f"restored shape {restored.shape} != source shape {source.data.shape}")
    out_fmt = image_format(path)
    if out_fmt is not None and out_fmt != source.format:
        raise UserError(
            f"output {path.name} is {out_fmt.upper()} but the input {source.path.name} is "
            f"{source.format.upper()}; outputs keep the input format — use a matching suffix"
        )
    try:
        with _atomic_path(path) as tmp:
            if source.format == "fits":
                try:
                    write_fits(tmp, restored, source, history, keywords)
                except (TypeError, ValueError, EOFError) as exc:
                    # Extensions are only read here; a damaged one (e.g. truncated .fits.gz,
                    # which astropy does not flag on open) first shows up now.
                    raise UserError(
                        f"cannot copy the HDUs of {source.path}: {short_reason(exc)}; "
                        "is it a complete FITS file?"
                    ) from exc
            elif source.format in ("png", "jpeg"):
                _write_pil(tmp, restored, source)
            elif source.format == "tiff":
                _write_tiff(tmp, restored, source)
            elif source.format == "npy":
                np.save(tmp, np.asarray(restored, dtype=np.float32), allow_pickle=False)
            else:
                raise ValueError(f"unknown format {source.format!r}")
    except OSError as exc:
        raise UserError(
            f"cannot write {path}: {short_reason(exc)}; check that the output folder is writable"
        ) from exc


def _write_pil(tmp: Path, restored: np.ndarray, source: LoadedImage) -> None:
    from PIL import Image

    # Only 8-bit (grey or RGB) and 16-bit grey reach here; 16-bit colour PNGs are refused.
    im = Image.fromarray(_to_dtype(restored, source.source_dtype))
    if source.format == "jpeg":
        im.save(tmp, format="JPEG", quality=95)
    else:
        im.save(tmp, format="PNG")


def _write_tiff(tmp: Path, restored: np.ndarray, source: LoadedImage) -> None:
    import tifffile

    arr = _to_dtype(restored, source.source_dtype)
    kwargs: dict[str, Any] = {}
    if arr.ndim == 3:
        kwargs["photometric"] = "rgb"
        if source.extra.get("planar"):
            arr = np.ascontiguousarray(np.moveaxis(arr, -1, 0))
            kwargs["planarconfig"] = "separate"
    else:
        kwargs["photometric"] = "minisblack"
    tifffile.imwrite(tmp, arr, **kwargs)


# ----------------------------------------------------------------------------- input/output sets
