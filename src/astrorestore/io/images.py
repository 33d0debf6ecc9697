"""Reading and writing the image formats astrorestore restores (FITS, PNG, JPEG, TIFF, NPY).

Reading always yields float32 pixel values in physical units (FITS BSCALE/BZERO applied);
writing goes back to the source format so a restored file can replace the original in a
pipeline. Writes are atomic: a partial output file never exists.
"""

from __future__ import annotations

import glob
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError

FITS_SUFFIXES = (".fits.gz", ".fits", ".fit", ".fts")
SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".fits",
    ".fit",
    ".fts",
    ".fits.gz",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npy",
)

_FORMAT_BY_SUFFIX = {
    ".fits.gz": "fits",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".npy": "npy",
}

# FITS header cards that stop being true once the data are replaced.
_STALE_FITS_CARDS = ("CHECKSUM", "DATASUM", "BLANK", "BSCALE", "BZERO")


@dataclass
class LoadedImage:
    """One image read from disk plus what is needed to write a restored copy back.

    ``data`` is float32, ``(H, W)`` for grey or ``(H, W, 3)`` for RGB. ``source_dtype`` is the
    on-disk pixel type (for FITS the raw BITPIX type before scaling). ``extra`` holds
    format-specific details for writing back (FITS on-disk shape, TIFF channel layout).
    """

    path: Path
    format: str
    data: np.ndarray
    hdu_index: int | None = None
    source_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    extra: dict[str, Any] = field(default_factory=dict)

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


def _require_format(path: Path) -> str:
    fmt = image_format(path)
    if fmt is None:
        raise UserError(
            f"unsupported file type {path.name!r}; supported suffixes: "
            + " ".join(SUPPORTED_SUFFIXES)
        )
    return fmt


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def _as_image_array(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
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
    fmt = _require_format(path)
    readers = {
        "png": _read_pil,
        "jpeg": _read_pil,
        "tiff": _read_tiff,
        "npy": _read_npy,
    }
    try:
        if fmt == "fits":
            return _read_fits(path, hdu)
        return readers[fmt](path, fmt)
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # any decoder failure means the file is not what its name says
        raise UserError(
            f"cannot read {path}: {_short_reason(exc)}; is it a valid {fmt.upper()} file?"
        ) from exc


def _squeeze_leading(arr: np.ndarray) -> np.ndarray:
    # numpy's leading axes are FITS's trailing ones (NAXIS3, ...); size-1 ones are harmless.
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _fits_image_shape(h: Any) -> tuple[int, ...] | None:
    """On-disk image shape (numpy order) of an HDU, or None if it carries no image data."""
    from astropy.io import fits

    if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    naxis = h.header.get("NAXIS", 0)
    if not naxis:
        return None
    shape = h.shape
    if not shape or 0 in shape:
        return None
    return tuple(shape)


def _read_fits(path: Path, hdu: int | str | None) -> LoadedImage:
    from astropy.io import fits

    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        hdu = int(hdu)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, mode="readonly") as hdul:
            hdul.readall()
            # astropy only warns about a short file; a truncated trailing extension would
            # otherwise surface when the output is written, after a long restoration.
            for w in caught:
                if "truncated" in str(w.message):
                    raise OSError(
                        str(w.message).split(":")[0] + " (file is shorter than its headers say)"
                    )
            index = _select_hdu(hdul, hdu, path)
            sci = hdul[index]
            # Read BITPIX before touching .data: astropy rewrites it when it applies BZERO.
            raw_dtype = _fits_raw_dtype(sci)
            disk_shape = tuple(sci.data.shape)
            data = _squeeze_leading(np.asarray(sci.data))
            if data.ndim != 2:
                raise UserError(_cube_message(path, index, disk_shape))
            arr = _as_image_array(data, path, "FITS image")
    return LoadedImage(
        path=path,
        format="fits",
        data=arr,
        hdu_index=index,
        source_dtype=raw_dtype,
        extra={"disk_shape": disk_shape},
    )


def _fits_raw_dtype(h: Any) -> np.dtype:
    bitpix = h.header.get("ZBITPIX", h.header.get("BITPIX", -32))
    kinds = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32}
    return np.dtype(kinds.get(bitpix, np.float64))


def _cube_message(path: Path, index: int, shape: tuple[int, ...]) -> str:
    return (
        f"{path} HDU {index} is a {len(shape)}-D cube of shape {shape}; astrorestore restores 2-D "
        "images — pass hdu=<index> of a 2-D extension or split the cube into planes"
    )


def _select_hdu(hdul: Any, hdu: int | str | None, path: Path) -> int:
    if hdu is not None:
        try:
            index = hdul.index_of(hdu)
        except (KeyError, IndexError):
            names = [f"{i}:{h.name}" for i, h in enumerate(hdul)]
            raise UserError(
                f"{path} has no HDU {hdu!r}; available HDUs: {', '.join(names)} — pass one of them "
                "as hdu=<index or name>"
            ) from None
        if not isinstance(index, int) or index >= len(hdul) or index < -len(hdul):
            raise UserError(f"{path} has no HDU {hdu!r}; it has {len(hdul)} HDUs (0-based)")
        index = index % len(hdul)
        if _fits_image_shape(hdul[index]) is None:
            raise UserError(
                f"{path} HDU {hdu!r} holds no image data; pass hdu=<index> of an image extension"
            )
        return index

    candidates = [(i, _fits_image_shape(h)) for i, h in enumerate(hdul)]
    images = [(i, s) for i, s in candidates if s is not None]
    if not images:
        raise UserError(
            f"{path} contains no image data in any HDU; pass a FITS file with a 2-D image"
        )

    def is_2d(shape: tuple[int, ...]) -> bool:
        return len([n for n in shape[:-2] if n != 1]) == 0 and len(shape) >= 2

    for i, s in images:
        if hdul[i].name.upper() == "SCI" and is_2d(s):
            return i
    for i, s in images:
        if is_2d(s):
            return i
    first, shape = images[0]
    if len(shape) < 2:
        raise UserError(f"{path} HDU {first} holds 1-D data of shape {shape}; pass a 2-D image")
    raise UserError(_cube_message(path, first, shape))


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
    data = _as_image_array(arr, path, fmt.upper())
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
    data = _as_image_array(arr, path, "TIFF")
    return LoadedImage(path=path, format="tiff", data=data, source_dtype=source_dtype, extra=extra)


def _read_npy(path: Path, fmt: str) -> LoadedImage:
    arr = np.load(path, allow_pickle=False)
    source_dtype = arr.dtype
    if arr.ndim == 3 and arr.shape[2] == 4:
        raise UserError(
            f"{path} holds an array of shape {arr.shape}; pass (H, W) or (H, W, 3) arrays"
        )
    data = _as_image_array(arr, path, "array")
    return LoadedImage(path=path, format="npy", data=data, source_dtype=source_dtype)


# ----------------------------------------------------------------------------- writing


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


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
    if _same_file(path, source.path):
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
                    _write_fits(tmp, restored, source, history, keywords)
                except (TypeError, ValueError, EOFError) as exc:
                    # Extensions are only read here; a damaged one (e.g. truncated .fits.gz,
                    # which astropy does not flag on open) first shows up now.
                    raise UserError(
                        f"cannot copy the HDUs of {source.path}: {_short_reason(exc)}; "
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
            f"cannot write {path}: {_short_reason(exc)}; check that the output folder is writable"
        ) from exc


def _write_fits(
    tmp: Path,
    restored: np.ndarray,
    source: LoadedImage,
    history: list[str],
    keywords: dict[str, tuple[Any, str]],
) -> None:
    from astropy.io import fits

    assert source.hdu_index is not None
    disk_shape = source.extra.get("disk_shape", restored.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(source.path, mode="readonly") as hdul:
            sci = hdul[source.hdu_index]
            header = sci.header
            for key in _STALE_FITS_CARDS:
                header.remove(key, ignore_missing=True, remove_all=True)
            # Restore degenerate axes so NAXISn in the kept header stays truthful.
            sci.data = np.asarray(restored, dtype=np.float32).reshape(disk_shape)
            for line in history:
                header.add_history(line)
            for key, (value, comment) in keywords.items():
                header[key] = (value, comment)
            hdul.writeto(tmp, overwrite=True, output_verify="silentfix")


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


def _is_supported_file(p: Path) -> bool:
    return p.is_file() and image_suffix(p) is not None


def _expand_input(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_file():
        _require_format(path)
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if _is_supported_file(p))
        if not found:
            raise UserError(
                f"input folder {path} contains no supported images ("
                + " ".join(SUPPORTED_SUFFIXES)
                + "); point input at a folder of images"
            )
        return found
    if glob.has_magic(spec):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec)))
        found = [p for p in matches if _is_supported_file(p)]
        if not found:
            raise UserError(
                f"no supported image files match the pattern {spec!r}; check the pattern "
                "(quote it so the shell does not expand it)"
            )
        return found
    raise UserError(f"input file not found: {path}")


def resolve_io(input: str, output: str) -> list[tuple[Path, Path]]:
    """Expand ``input`` (file, folder or glob) and pair each file with its output path.

    ``output`` is a file only for a single input and a supported suffix; otherwise it is a
    folder and outputs keep their input file names. Folders are created by ``write_image``
    when the first file is written, so a failed preflight leaves nothing behind.
    """
    inputs = _expand_input(str(input))
    out = Path(str(output)).expanduser()
    out_is_file = not out.is_dir() and image_suffix(out) is not None
    if out_is_file:
        if len(inputs) != 1:
            raise UserError(
                f"input matches {len(inputs)} files but output {out} looks like a single file; "
                "pass an output folder instead"
            )
        pairs = [(inputs[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise UserError(
                f"output {out} exists and is not a folder; pass an output folder or an image file name"
            )
        pairs = [(p, out / p.name) for p in inputs]

    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if _same_file(src, dst):
            raise UserError(f"output path equals the input {src}; choose another output")
        in_fmt, out_fmt = image_format(src), image_format(dst)
        if out_fmt != in_fmt:
            raise UserError(
                f"output {dst.name} is {str(out_fmt).upper()} but input {src.name} is "
                f"{str(in_fmt).upper()}; outputs keep the input format — use a matching suffix"
            )
        key = dst.resolve()
        if key in seen:
            raise UserError(
                f"inputs {seen[key]} and {src} would both be written to {dst}; "
                "restore them into separate output folders"
            )
        seen[key] = src
    return pairs
