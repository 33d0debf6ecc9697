"""Finding things in a FITS file: the science HDU, its shape and stored type, the same chip's
DQ/ERR/VAR_* extensions, header keywords and the celestial WCS.

The one place that knows FITS layouts, used by ``infer.py`` (:mod:`astrorestore.io.fits`) and by
training on real frames (:mod:`astrorestore.data.sources.fits_frames`) alike. Supported layouts:
JWST stage-2/3 products (SCI, ERR, DQ, VAR_POISSON, VAR_RNOISE), HST products (SCI/ERR/DQ per
chip, told apart by ``EXTVER``) and plain FITS with the image in the primary HDU. Errors name
the setting that fixes them (``key``: ``hdu`` for ``infer.py``, ``data.hdu`` for training).
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError

# JWST DQ bits (jwst.datamodels.dqflags) that make a pixel unusable: DO_NOT_USE (bit 0),
# SATURATED (1), OUTLIER (4, cosmic rays found by outlier detection), NON_SCIENCE (9), DEAD
# (10), HOT (11) and REFERENCE_PIXEL (31). JUMP_DET (2) is left out on purpose: ramp fitting
# already excluded the jump, and the slope of the pixel is fine.
JWST_BAD_DQ = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 31)
# HST (ACS/WFC3) DQ bits: 1 Reed-Solomon error, 2 fill value, 4 bad detector pixel, 16 hot
# pixel, 256 full-well saturation, 2048 A-to-D saturation, 4096 and 8192 cosmic rays. Warm
# pixels (64), CTE tails (32) and bad-flat blobs (512) are still usable signal.
HST_BAD_DQ = 1 | 2 | 4 | 16 | 256 | 2048 | 4096 | 8192
# Any other telescope: every set bit is a problem (the only safe reading of unknown flags).
OTHER_BAD_DQ = -1

# The keyword that marks a (3, H, W) cube as one colour image (planes R, G, B), so that a
# colour output can be read back (e.g. colorized, then super-resolved by a second infer.py).
RGB_KEYWORD = "ARCOLOR"


class NoiseMapShape(UserError):
    """A frame's ERR/VAR map is not of its science array's shape (a broken product)."""


class NoImageData(UserError):
    """The file, or the HDU asked for, holds no image (a table, an empty primary HDU)."""


def fits_file(path: Path, content: bytes | None = None) -> Any:
    """What ``fits.open`` reads: ``path``, or the file's ``content`` already read into memory
    (through gzip for a ``.fits.gz`` archive, which astropy only recognises by a path's name)."""
    if content is None:
        return path
    buffer = io.BytesIO(content)
    return gzip.GzipFile(fileobj=buffer, mode="rb") if content[:2] == b"\x1f\x8b" else buffer


@contextmanager
def open_fits(path: Path, content: bytes | None = None) -> Iterator[Any]:
    """The file's HDU list, fully read, with astropy's warnings silenced in the ``with`` body;
    ``OSError`` for a file shorter than its headers say. ``content``: the file's bytes, read
    already (:func:`fits_file`); a short file is detected the same way.

    astropy only warns about a short file, and its data would be garbage: for ``infer.py`` the
    failure would otherwise surface when the output is written, after a long restoration.
    """
    from astropy.io import fits

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(fits_file(path, content), mode="readonly") as hdul:
            hdul.readall()
            # Only astropy's short-file warning: catch_warnings is process-wide, so a
            # survey run's writer thread can add its own warnings here ("Card is too long,
            # comment will be truncated" while writing an output header).
            for w in caught:
                if "may have been truncated" in str(w.message):
                    raise OSError(
                        str(w.message).split(":")[0] + " (file is shorter than its headers say)"
                    )
            yield hdul


def squeeze_leading(arr: np.ndarray) -> np.ndarray:
    """``arr`` without its leading size-1 axes (numpy's leading axes are FITS's trailing ones,
    NAXIS3...; a (1, H, W) image is a plane)."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def image_shape(h: Any) -> tuple[int, ...] | None:
    """On-disk image shape (numpy order) of an HDU, or None if it carries no image data."""
    from astropy.io import fits

    if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    if not h.header.get("NAXIS", 0) or not h.shape or 0 in h.shape:
        return None
    return tuple(h.shape)


def raw_dtype(header: Any) -> np.dtype:
    """The stored pixel type (ZBITPIX of a tile-compressed HDU, else BITPIX). Read it before
    touching ``.data``: astropy rewrites BITPIX when it applies BZERO."""
    bitpix = header.get("ZBITPIX", header.get("BITPIX", -32))
    kinds = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32}
    return np.dtype(kinds.get(bitpix, np.float64))


def is_rgb_cube(header: Any) -> bool:
    """Whether a (3, H, W) HDU is one colour image astrorestore wrote (``ARCOLOR = 'RGB'``)."""
    return str(header.get(RGB_KEYWORD, "")).strip().upper() == "RGB"


def parse_hdu(hdu: int | str | None) -> int | str | tuple[str, int] | None:
    """A user's HDU choice: digits pick by index, ``"SCI,2"`` the second SCI chip (HST)."""
    if isinstance(hdu, str):
        text = hdu.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if "," in text:
            name, ver = text.split(",", 1)
            if ver.strip().isdigit():
                return (name.strip(), int(ver))
    return hdu


def cube_message(path: Path, index: int, shape: tuple[int, ...], key: str = "hdu") -> str:
    return (
        f"{path} HDU {index} is a {len(shape)}-D cube of shape {shape}; astrorestore restores 2-D "
        f"images — pass {key}=<index> of a 2-D extension or split the cube into planes"
    )


def select_image_hdu(
    hdul: Any, hdu: int | str | None, path: Path, *, key: str = "hdu", cubes: bool = False
) -> int:
    """Index of the science HDU: ``hdu`` when given (index, EXTNAME or ``"NAME,EXTVER"``), else
    the first image HDU named SCI, else the first image HDU.

    Without ``cubes`` only 2-D images (degenerate axes allowed) and RGB cubes astrorestore wrote
    count, and a file holding only cubes is refused; with ``cubes`` any image counts (the caller
    picks a plane). Raises :class:`NoImageData` where there is no image to read and
    ``UserError`` for an ``hdu`` the file does not have.
    """
    if hdu is not None:
        try:
            index = hdul.index_of(parse_hdu(hdu))
        except (KeyError, IndexError):
            names = ", ".join(f"{i}:{h.name}" for i, h in enumerate(hdul))
            raise UserError(
                f"{path} has no HDU {hdu!r}; available HDUs: {names} — set {key}=<index or name> "
                "to one of them"
            ) from None
        if not isinstance(index, int) or not -len(hdul) <= index < len(hdul):
            raise UserError(f"{path} has no HDU {hdu!r}; it has {len(hdul)} HDUs (0-based)")
        index %= len(hdul)
        if image_shape(hdul[index]) is None:
            raise NoImageData(
                f"{path} HDU {hdu!r} holds no image data; set {key}=<index or name> of an image HDU"
            )
        return index

    images = [(i, s) for i, s in ((i, image_shape(h)) for i, h in enumerate(hdul)) if s]
    if not images:
        raise NoImageData(f"{path} has no image HDU (no image data in any HDU)")

    def usable(i: int, shape: tuple[int, ...]) -> bool:
        plane = len(shape) >= 2 and all(n == 1 for n in shape[:-2])
        rgb = len(shape) == 3 and shape[0] == 3 and is_rgb_cube(hdul[i].header)
        return cubes or plane or rgb

    for i, s in images:
        if hdul[i].name.upper() == "SCI" and usable(i, s):
            return i
    for i, s in images:
        if usable(i, s):
            return i
    first, shape = images[0]
    if len(shape) < 2:
        raise UserError(f"{path} HDU {first} holds 1-D data of shape {shape}; pass a 2-D image")
    raise UserError(cube_message(path, first, shape, key))


def pick_plane(
    arr: np.ndarray, plane: int | None, path: Path, what: str, key: str = "plane"
) -> np.ndarray:
    """The 2-D image of ``arr``: itself once squeezed, or plane ``plane`` of a cube."""
    arr = squeeze_leading(arr)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise UserError(
            f"{path} {what} has {arr.ndim} dimensions {arr.shape}; only 2-D images and 3-D "
            f"cubes (with {key}) can be read"
        )
    if plane is None:
        raise UserError(
            f"{path} {what} is a cube of {arr.shape[0]} planes; pick one with "
            f"{key}=<0..{arr.shape[0] - 1}>"
        )
    if not -arr.shape[0] <= plane < arr.shape[0]:
        raise UserError(
            f"{key}={plane} is invalid for {path} ({arr.shape[0]} planes): use 0.."
            f"{arr.shape[0] - 1}"
        )
    return arr[plane]


def header_value(headers: list[Any], names: tuple[str, ...] | str) -> Any:
    """First value of any of ``names`` in the first header that has it (science, then primary)."""
    for name in (names,) if isinstance(names, str) else names:
        for header in headers:
            value = header.get(name)
            if value not in (None, ""):
                return value
    return None


def telescope(headers: list[Any]) -> str:
    """TELESCOP in upper case ("JWST", "HST"...), or "" when no header says."""
    return str(header_value(headers, "TELESCOP") or "").strip().upper()


def bad_dq_bits(telescope_name: str) -> int:
    """The DQ bits that make a pixel unusable for this telescope (see the constants above)."""
    return {"JWST": JWST_BAD_DQ, "HST": HST_BAD_DQ}.get(telescope_name, OTHER_BAD_DQ)


def dq_flagged(flags: np.ndarray, bits: int) -> np.ndarray:
    """True where ``flags`` has any of ``bits`` set."""
    flags = np.asarray(flags)
    if flags.dtype.kind not in "iu":
        flags = flags.astype(np.int64)
    # Bits cast to the DQ's own integer type: a signed 16-bit HST DQ must not overflow, and a
    # large flag array needs no 8-byte copy.
    mask = np.array(int(bits) & ((1 << (8 * flags.dtype.itemsize)) - 1)).astype(flags.dtype)
    return (flags & mask) != 0


def wcs_facts(header: Any, shape: tuple[int, int]) -> dict[str, float]:
    """Pixel scale (arcsec/px), centre RA/Dec and position angle (deg) from a celestial WCS;
    empty without one (a malformed WCS costs only these facts, not the frame)."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:
            return {}
    if not wcs.has_celestial or wcs.naxis != 2:
        return {}
    matrix = wcs.pixel_scale_matrix
    scale = float(np.sqrt(abs(np.linalg.det(matrix)))) * 3600.0
    if not (math.isfinite(scale) and scale > 0):
        return {}
    ra, dec = wcs.pixel_to_world_values((shape[1] - 1) / 2, (shape[0] - 1) / 2)
    pa = math.degrees(math.atan2(matrix[0, 1], matrix[1, 1]))
    return {"pixel_scale": scale, "ra": float(ra), "dec": float(dec), "pa": pa}


@dataclass(frozen=True)
class Chip:
    """One detector chip of an open file, to find its DQ/ERR/VAR_* extensions: ``extver``
    tells chips apart, ``shape`` is the science array's 2-D shape, ``plane`` the cube plane
    read (None for a plane); ``path`` and ``plane_key`` (the setting that picks planes) only
    word the errors."""

    hdul: Any
    extver: int
    shape: tuple[int, int]
    plane: int | None = None
    path: Path | None = None
    plane_key: str = "plane"

    def extension(self, name: str) -> np.ndarray | None:
        """The chip's ``name`` extension as a 2-D array of ``shape``, or None where there is
        none of that shape."""
        try:
            h = self.hdul[(name, self.extver)]
        except KeyError:
            return None
        if image_shape(h) is None:
            return None
        path = self.path or Path(self.hdul.filename() or "?")
        arr = pick_plane(np.asarray(h.data), self.plane, path, name, self.plane_key)
        return arr if arr.shape == self.shape else None

    def _check_noise_shape(self, name: str) -> None:
        """A 2-D noise extension of another shape than the science array is a broken product:
        one line naming both shapes (it was dropped without a word)."""
        try:
            shape = image_shape(self.hdul[(name, self.extver)])
        except KeyError:
            return
        if shape is not None and len(squeeze_leading(np.empty(shape, bool)).shape) == 2:
            shape = squeeze_leading(np.empty(shape, bool)).shape
            if shape != self.shape:
                path = self.path or Path(self.hdul.filename() or "?")
                raise NoiseMapShape(
                    f"{path}: its {name} map is {shape[0]}x{shape[1]} but the science array is "
                    f"{self.shape[0]}x{self.shape[1]}: pass the noise map of this frame (or "
                    "remove the extension)"
                )

    def noise_map(self) -> np.ndarray | None:
        """Per-pixel 1-sigma noise in the science array's units (float32): ERR when present
        (the pipeline's total sigma), else sqrt(VAR_POISSON + VAR_RNOISE (+ VAR_FLAT when the
        product has it)); None without them. A 2-D map of another shape than the science
        array is a :class:`NoiseMapShape` error."""
        for name in ("ERR", "VAR_POISSON", "VAR_RNOISE"):
            self._check_noise_shape(name)
        err = self.extension("ERR")
        if err is not None:
            return np.array(err, dtype=np.float32)
        variances = [self.extension(n) for n in ("VAR_POISSON", "VAR_RNOISE")]
        if any(v is None for v in variances):
            return None
        total = np.asarray(variances[0], np.float64) + np.asarray(variances[1], np.float64)
        # VAR_FLAT is the flat-field term of the same budget.
        flat = self.extension("VAR_FLAT")
        if flat is not None:
            total = total + np.asarray(flat, np.float64)
        with np.errstate(invalid="ignore"):
            return np.sqrt(total).astype(np.float32)


def read_noise_map(path: Path, sci_index: int, content: bytes | None = None) -> np.ndarray | None:
    """The 1-sigma noise map of the 2-D science HDU ``sci_index`` (:meth:`Chip.noise_map`), or None:
    what ``infer.py report=`` judges a restoration's residual by when there is no truth.
    ``content``: the file's bytes, if read already (:func:`fits_file`)."""
    from astropy.io import fits

    with fits.open(fits_file(path, content), mode="readonly") as hdul:
        sci = hdul[sci_index]
        shape = squeeze_leading(np.empty(sci.shape, dtype=np.bool_)).shape
        if len(shape) != 2:
            return None
        try:
            return Chip(hdul, int(sci.header.get("EXTVER", 1)), shape, path=path).noise_map()
        except NoiseMapShape:
            raise
        except UserError:  # a noise cube beside a 2-D science array: no usable map
            return None


def frame_keywords(path: Path, sci_index: int, content: bytes | None = None) -> dict[str, Any]:
    """The primary header's keywords overlaid by the science HDU ``sci_index``'s (the science
    HDU wins): what the frame's noise model reads (GAIN, RDNOISE, BUNIT...). ``content``: the
    file's bytes, if read already (:func:`fits_file`)."""
    from astropy.io import fits

    with fits.open(
        fits_file(path, content), mode="readonly"
    ) as hdul:  # headers only: the data is not read
        keywords = {str(k): v for k, v in hdul[0].header.items() if k}
        if sci_index:
            keywords |= {str(k): v for k, v in hdul[sci_index].header.items() if k}
    return keywords
