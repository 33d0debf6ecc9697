"""Read and write any supported image by dispatching to its codec (``fits``, ``raster``).

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
    LoadedImage,
    image_format,
    image_suffix,
    is_tile_compressed_name,
    require_format,
    same_file,
    short_reason,
)
from astrorestore.io.raster import read_npy, read_pil, read_tiff, write_npy, write_pil, write_tiff

_READERS = {"png": read_pil, "jpeg": read_pil, "tiff": read_tiff, "npy": read_npy}
_WRITERS = {"png": write_pil, "jpeg": write_pil, "tiff": write_tiff, "npy": write_npy}

# ----------------------------------------------------------------------------- reading


def read_image(
    path: str | Path, hdu: int | str | None = None, content: bytes | None = None
) -> LoadedImage:
    """Read one image; see the module docstring for the conventions.

    ``hdu`` selects the FITS HDU (index or EXTNAME) and is ignored for other formats.
    ``content``: the file's bytes, read already (a survey run reads each input once, to hash
    and decode it); ``path`` then only names the file and its format.
    """
    path = Path(path).expanduser()
    if content is None and not path.exists():
        raise UserError(f"input file not found: {path}")
    if content is None and path.is_dir():
        raise UserError(f"{path} is a folder, not an image file; pass a file or use a folder input")
    fmt = require_format(path)
    try:
        if fmt == "fits":
            return read_fits(path, hdu, content)
        return _READERS[fmt](path, fmt, content)
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # any decoder failure means the file is not what its name says
        raise UserError(
            f"cannot read {path}: {short_reason(exc)}; is it a valid {fmt.upper()} file?"
        ) from exc


# ----------------------------------------------------------------------------- writing


def umask_permissions(path: Path) -> None:
    """Give a file or folder made by ``tempfile`` (owner-only: 0600/0700) the permissions a
    plain ``open``/``mkdir`` would have given it under the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
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
        umask_permissions(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(path: Path, source: LoadedImage, colour: bool | None = None) -> None:
    """Raise UserError if ``source``'s restored copy cannot be written to ``path`` as named:
    the input itself, another format, a tile-compressed name (``.fz``) for an image that
    is not tile-compressed (outputs keep the input's compression; only an input that already
    bears a ``.fz`` name passes its name on), or — when ``colour`` says the output is RGB — a
    16-bit PNG, which cannot hold 16-bit colour (a colorizer on a 16-bit grey PNG)."""
    if same_file(path, source.path):
        raise UserError(f"output path equals the input {source.path}; choose another output")
    out_fmt = image_format(path)
    if out_fmt is not None and out_fmt != source.format:
        raise UserError(
            f"output {path.name} is {out_fmt.upper()} but the input {source.path.name} is "
            f"{source.format.upper()}; outputs keep the input format — use a matching suffix"
        )
    if colour and source.format == "png" and np.dtype(source.source_dtype).itemsize == 2:
        raise UserError(
            "a 16-bit grey PNG whose restored copy is colour, which a PNG cannot hold at 16 "
            "bits; convert the input to a 16-bit TIFF (or an 8-bit PNG)"
        )
    compressed = source.extra.get("compressed") or is_tile_compressed_name(source.path)
    if is_tile_compressed_name(path) and not compressed:
        raise UserError(
            f"output {path.name} names a tile-compressed (.fz) file but the image of "
            f"{source.path.name} is not tile-compressed; outputs keep the input's compression — "
            "name the output .fits (and fpack it afterwards if you want it compressed)"
        )


def std_path(path: str | Path) -> Path:
    """Where a photograph's per-pixel standard deviation goes: ``<name>_std.<ext>`` beside it
    (FITS outputs carry it as their ``SR_STD`` extension instead)."""
    path = Path(path)
    suffix = image_suffix(path) or path.suffix
    return path.with_name(path.name[: len(path.name) - len(suffix)] + "_std" + suffix)


def write_image(
    path: str | Path,
    restored: np.ndarray,
    source: LoadedImage,
    history: list[str],
    keywords: dict[str, tuple[Any, str]],
    scale: int = 1,
    std: np.ndarray | None = None,
    std_note: str = "per-pixel standard deviation, in the output's units",
) -> None:
    """Write ``restored`` in the source's format, atomically.

    ``restored`` is ``(scale·H, scale·W)`` or ``(scale·H, scale·W, 3)`` for a source of
    ``(H, W[, 3])``. FITS keeps every HDU of the input and the science header (WCS included,
    rescaled for a scale factor); only its data are replaced (as float32, unscaled), with
    ``history`` appended and ``keywords`` set. Other formats cannot carry that metadata and
    ignore ``history``/``keywords``.

    ``std`` (the shape of ``restored``): its uncertainty, written as the FITS extension
    ``SR_STD`` (``std_note`` in its header) or, for other formats, as :func:`std_path` in the
    same format and data type (an 8-bit photograph's std rounds to whole levels).
    """
    path = Path(path).expanduser()
    check_output(path, source, colour=restored.ndim == 3)
    expected = tuple(n * scale for n in source.data.shape[:2])
    if restored.shape[:2] != expected or restored.ndim not in (2, 3):
        raise ValueError(
            f"restored shape {restored.shape} does not fit source {source.data.shape} at scale {scale}"
        )
    if std is not None and std.shape != restored.shape:
        raise ValueError(f"std shape {std.shape} does not match the output {restored.shape}")
    if std is not None and source.format != "fits":
        _write_atomically(std_path(path), std, source, None)
    _write_atomically(path, restored, source, (history, keywords, scale, std, std_note))


def _write_atomically(
    path: Path, pixels: np.ndarray, source: LoadedImage, fits_parts: tuple | None
) -> None:
    """``pixels`` into ``path`` in the source's format; ``fits_parts`` = (history, keywords,
    scale, std, std_note) of a FITS output."""
    try:
        with atomic_path(path) as tmp:
            if source.format == "fits":
                try:
                    write_fits(tmp, pixels, source, *fits_parts[:3], path.name, *fits_parts[3:])
                except (TypeError, ValueError, EOFError) as exc:
                    # Extensions are only read here; a damaged one (e.g. truncated .fits.gz,
                    # which astropy does not flag on open) first shows up now.
                    raise UserError(
                        f"cannot copy the HDUs of {source.path}: {short_reason(exc)}; "
                        "is it a complete FITS file?"
                    ) from exc
            else:
                _WRITERS[source.format](tmp, pixels, source)
    except OSError as exc:
        raise UserError(
            f"cannot write {path}: {short_reason(exc)}; check that the output folder is writable"
        ) from exc
