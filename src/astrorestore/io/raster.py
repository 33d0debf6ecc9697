"""Codecs for the raster formats: PNG/JPEG (Pillow), TIFF (tifffile) and NumPy ``.npy``.

Readers return a :class:`LoadedImage` with float32 pixels; writers take the restored float32
array and write it in the source's pixel type (integers rounded and clipped, NaN as the
darkest value, since integers have none).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError
from astrorestore.io.formats import LoadedImage, as_image_array


def _source(path: Path, content: bytes | None) -> Any:
    """What a decoder reads: ``path``, or the file's bytes already read into memory."""
    return path if content is None else io.BytesIO(content)


def _png_is_16bit_colour(path: Path, content: bytes | None) -> bool:
    if content is None:
        with path.open("rb") as fh:
            head = fh.read(26)
    else:
        head = content[:26]
    # IHDR: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA).
    return (
        len(head) == 26
        and head[:8] == b"\x89PNG\r\n\x1a\n"
        and head[24] == 16
        and head[25] in (2, 6)
    )


# 16-bit grey ("I;16*", or "I" on older Pillow) and float images are taken as they are.
_PIL_KEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def read_pil(path: Path, fmt: str, content: bytes | None = None) -> LoadedImage:
    from PIL import Image

    if fmt == "png" and _png_is_16bit_colour(path, content):
        # Pillow silently reduces 16-bit colour PNGs to 8 bits, which would lose the signal.
        raise UserError(
            f"{path} is a 16-bit colour PNG, which cannot be read without losing precision; "
            "convert it to a 16-bit TIFF"
        )
    with Image.open(_source(path, content)) as im:
        im.load()
        mode = im.mode
        alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
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
    extra = {"alpha": True} if alpha else {}
    return LoadedImage(path=path, format=fmt, data=data, source_dtype=source_dtype, extra=extra)


def read_tiff(path: Path, fmt: str, content: bytes | None = None) -> LoadedImage:
    import tifffile

    arr = np.asarray(tifffile.imread(_source(path, content)))
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
    extra["alpha"] = arr.ndim == 3 and arr.shape[2] == 4
    data = as_image_array(arr, path, "TIFF")
    return LoadedImage(path=path, format="tiff", data=data, source_dtype=source_dtype, extra=extra)


def read_npy(path: Path, fmt: str, content: bytes | None = None) -> LoadedImage:
    arr = np.load(_source(path, content), allow_pickle=False)
    source_dtype = arr.dtype
    if arr.ndim == 3 and arr.shape[2] == 4:
        raise UserError(
            f"{path} holds an array of shape {arr.shape}; pass (H, W) or (H, W, 3) arrays"
        )
    data = as_image_array(arr, path, "array")
    return LoadedImage(path=path, format="npy", data=data, source_dtype=source_dtype)


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


def write_pil(tmp: Path, restored: np.ndarray, source: LoadedImage) -> None:
    from PIL import Image

    # Only 8-bit (grey or RGB) and 16-bit grey reach here; 16-bit colour PNGs are refused.
    im = Image.fromarray(_to_dtype(restored, source.source_dtype))
    if source.format == "jpeg":
        im.save(tmp, format="JPEG", quality=95)
    else:
        im.save(tmp, format="PNG")


def write_tiff(tmp: Path, restored: np.ndarray, source: LoadedImage) -> None:
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


def write_npy(tmp: Path, restored: np.ndarray, source: LoadedImage) -> None:
    np.save(tmp, np.asarray(restored, dtype=np.float32), allow_pickle=False)
