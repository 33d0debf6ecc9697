"""One telescope frame as training data: science pixels, validity, noise map, units, metadata.

Inference only needs the science array (``io.fits``); training on real products needs more:
which pixels are trustworthy (DQ flags, NaNs), the per-pixel noise the pipeline already
estimated (ERR, VAR_*), the factor that turns the file's units into detected electrons, the
pixel scale (frames of different scales must not be mixed silently) and enough header facts to
find repeated exposures of one pointing (real Noise2Noise pairs).

Supported layouts: JWST stage-2/3 products (``*_cal``, ``*_i2d``, ``*_rate``: SCI, ERR, DQ,
VAR_POISSON, VAR_RNOISE), HST products (SCI/ERR/DQ per chip, ``EXTVER``) and plain FITS with
the image in the primary HDU.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError

# JWST DQ bits (jwst.datamodels.dqflags) that make a pixel unusable as a training target:
# DO_NOT_USE (bit 0), SATURATED (1), OUTLIER (4, cosmic rays found by outlier detection),
# NON_SCIENCE (9), DEAD (10), HOT (11) and REFERENCE_PIXEL (31). JUMP_DET (2) is left out on
# purpose: ramp fitting already excluded the jump, and the slope of the pixel is fine.
JWST_BAD_DQ = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 31)
# HST (ACS/WFC3) DQ bits: 1 Reed-Solomon error, 2 fill value, 4 bad detector pixel, 16 hot
# pixel, 256 full-well saturation, 2048 A-to-D saturation, 4096 and 8192 cosmic rays. Warm
# pixels (64), CTE tails (32) and bad-flat blobs (512) are still usable signal.
HST_BAD_DQ = 1 | 2 | 4 | 16 | 256 | 2048 | 4096 | 8192
# Any other telescope: every set bit is a problem (the only safe reading of unknown flags).
OTHER_BAD_DQ = -1

_EXPOSURE_KEYS = ("XPOSURE", "EFFEXPTM", "EXPTIME")
_GAIN_KEYS = ("GAIN", "ATODGAIN")
_ELECTRONS = {"electron", "electrons", "e-", "e"}
_COUNTS = {"dn", "adu", "count", "counts"}


class FrameSkipped(UserError):
    """A file that cannot give a training frame (unreadable, no image, no valid pixel).

    A folder scan logs it and moves on; a single-file read reports it like any UserError.
    """


@dataclass
class Frame:
    """One science frame, values in the file's units (``units``), float32.

    ``valid`` is False where the pixel is not finite, is flagged by a bad DQ bit (see
    ``JWST_BAD_DQ``/``HST_BAD_DQ``) or has no finite positive ``sigma``. ``sigma`` is the
    per-pixel 1-sigma noise in the same units as ``data`` (ERR, else sqrt of the VAR_*
    extensions), or None. ``data * to_electrons`` is in detected electrons when the header
    allows the conversion (see ``electrons_factor``), else ``to_electrons`` is None.
    ``pixel_scale`` is in arcsec/pixel (None without a celestial WCS).
    """

    path: Path
    data: np.ndarray
    valid: np.ndarray
    sigma: np.ndarray | None
    units: str
    to_electrons: float | None
    pixel_scale: float | None
    header: Any
    hdu_index: int
    raw_dtype: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[0]), int(self.data.shape[1])


def _keyword(headers: list[Any], names: tuple[str, ...] | str) -> Any:
    """First value of any of ``names`` in the first header that has it (science, then primary)."""
    for name in (names,) if isinstance(names, str) else names:
        for header in headers:
            value = header.get(name)
            if value not in (None, ""):
                return value
    return None


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def is_electrons(unit: str) -> bool:
    """True for a BUNIT in electrons per pixel (``e-``, ``electrons``, ``e-/pixel``...; not a
    rate), case- and space-insensitive."""
    return unit.strip().lower().replace(" ", "").removesuffix("/pixel") in _ELECTRONS


def electrons_factor(headers: list[Any], gain: float | None = None) -> tuple[float | None, str]:
    """``(factor, how)``: ``data * factor`` is in electrons, or ``(None, why not)``.

    Assumptions, one per BUNIT family (case-insensitive):
    - electrons: factor 1;  electrons/s: × exposure time;
    - DN/ADU/counts: × gain;  DN/s: × gain × exposure time;
    - MJy/sr (JWST): ÷ PHOTMJSR (MJy/sr per DN/s) × exposure time × gain.
    Exposure time is the first of XPOSURE, EFFEXPTM, EXPTIME. Gain (e-/DN) is ``gain`` when
    given, else the header's GAIN or ATODGAIN; there is no default, because JWST headers carry no
    gain (it lives in a CRDS reference file: pass e.g. ``gain=2.0`` for NIRCam). For drizzled
    mosaics (``i2d``) the exposure time is nominal: per-pixel depth varies across the mosaic.
    """
    unit = str(_keyword(headers, "BUNIT") or "").strip().lower().replace(" ", "")
    if not unit:
        return None, "no BUNIT"
    rate = unit.endswith("/s") or unit.endswith("/sec")
    base = unit.rsplit("/", 1)[0] if rate else unit
    exposure = _positive_float(_keyword(headers, _EXPOSURE_KEYS))
    if gain is None:
        gain = _positive_float(_keyword(headers, _GAIN_KEYS))
    if unit == "mjy/sr":
        photmjsr = _positive_float(_keyword(headers, "PHOTMJSR"))
        if photmjsr is None or exposure is None or gain is None:
            return None, "MJy/sr needs PHOTMJSR, an exposure time and a gain"
        return exposure * gain / photmjsr, "MJy/sr / PHOTMJSR * exposure * gain"
    if base in _ELECTRONS:
        if not rate:
            return 1.0, "electrons"
        if exposure is None:
            return None, "electrons/s without an exposure time"
        return exposure, "electrons/s * exposure"
    if base in _COUNTS:
        if gain is None or (rate and exposure is None):
            return None, f"{unit} needs a gain{' and an exposure time' if rate else ''}"
        return gain * (exposure if rate else 1.0), f"{unit} * gain{' * exposure' if rate else ''}"
    return None, f"unknown BUNIT {unit!r}"


def _image_shape(h: Any) -> tuple[int, ...] | None:
    from astropy.io import fits

    if not isinstance(h, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    if not h.header.get("NAXIS", 0) or not h.shape or 0 in h.shape:
        return None
    return tuple(h.shape)


def _parse_hdu(hdu: int | str | None) -> int | str | tuple[str, int] | None:
    # "SCI,2" picks the second chip of an HST product; digits pick by index.
    if isinstance(hdu, str):
        text = hdu.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if "," in text:
            name, ver = text.split(",", 1)
            if ver.strip().isdigit():
                return (name.strip(), int(ver))
    return hdu


def _select_science(hdul: Any, hdu: int | str | None, path: Path) -> int:
    """The science HDU as in ``io.fits``: ``hdu`` if given, else SCI, else the first image."""
    if hdu is not None:
        try:
            index = hdul.index_of(_parse_hdu(hdu))
        except (KeyError, IndexError):
            names = ", ".join(f"{i}:{h.name}" for i, h in enumerate(hdul))
            raise UserError(
                f"{path} has no HDU {hdu!r} (it has {names}); set data.hdu to one of them"
            ) from None
        if _image_shape(hdul[index]) is None:
            raise FrameSkipped(f"{path} HDU {hdu!r} holds no image; set data.hdu to an image HDU")
        return int(index)
    images = [i for i, h in enumerate(hdul) if _image_shape(h) is not None]
    if not images:
        raise FrameSkipped(f"{path} has no image HDU; it cannot be a training frame")
    for i in images:
        if hdul[i].name.upper() == "SCI":
            return i
    return images[0]


def _squeeze(arr: np.ndarray) -> np.ndarray:
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _pick_plane(arr: np.ndarray, plane: int | None, path: Path, what: str) -> np.ndarray:
    arr = _squeeze(arr)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise UserError(
            f"{path} {what} has {arr.ndim} dimensions {arr.shape}; only 2-D images and 3-D "
            "cubes (with data.plane) can be read"
        )
    if plane is None:
        raise UserError(
            f"{path} {what} is a cube of {arr.shape[0]} planes; pick one with "
            f"data.plane=<0..{arr.shape[0] - 1}>"
        )
    if not -arr.shape[0] <= plane < arr.shape[0]:
        raise UserError(
            f"data.plane={plane} is invalid for {path} ({arr.shape[0]} planes): use 0.."
            f"{arr.shape[0] - 1}"
        )
    return arr[plane]


def _companion(hdul: Any, name: str, extver: int, shape: tuple[int, int], plane, path) -> Any:
    """The ``name`` extension of the same chip (EXTVER) as the science HDU, if it matches."""
    try:
        h = hdul[(name, extver)]
    except KeyError:
        return None
    if _image_shape(h) is None:
        return None
    arr = _pick_plane(np.asarray(h.data), plane, path, name)
    return arr if arr.shape == shape else None


def _wcs_facts(header: Any, shape: tuple[int, int]) -> dict[str, float]:
    """Pixel scale (arcsec/px), centre RA/Dec and position angle (deg) from a celestial WCS."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception:  # a malformed WCS only costs us the scale, not the frame
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


def pointing_id(meta: dict[str, Any], shape: tuple[int, int], wcs: dict[str, float]) -> str | None:
    """Frames with equal ids cover the same sky on the same pixel grid (to ~0.1 px).

    Built from instrument, detector, filter, shape and the WCS centre and rotation quantised to
    0.1 px (0.002 deg in angle), so two exposures of one pointing get the same id and a dithered
    exposure does not. Exposures straddling a quantisation boundary are (rarely) not paired;
    paired frames are never misaligned by more than the quantum. None without a celestial WCS.
    """
    if "pixel_scale" not in wcs:
        return None
    quantum = 0.1 * wcs["pixel_scale"] / 3600.0
    ra_bin = round(wcs["ra"] * math.cos(math.radians(wcs["dec"])) / quantum)
    dec_bin = round(wcs["dec"] / quantum)
    pa_bin = round(wcs["pa"] / 0.002)
    parts = [meta.get(k) or "-" for k in ("telescope", "instrument", "detector", "filter")]
    grid = [f"{shape[0]}x{shape[1]}", str(ra_bin), str(dec_bin), str(pa_bin)]
    return "|".join([*map(str, parts), *grid])


def _filter_name(headers: list[Any]) -> str | None:
    names = []
    for key in ("FILTER", "FILTER1", "FILTER2", "PUPIL"):
        value = _keyword(headers, key)
        if value and not str(value).upper().startswith("CLEAR"):
            names.append(str(value).strip())
    return "+".join(dict.fromkeys(names)) or None


def read_frame(
    path: str | Path,
    *,
    hdu: int | str | None = None,
    plane: int | None = None,
    gain: float | None = None,
    bad_dq_bits: int | None = None,
) -> Frame:
    """Read one frame (see ``Frame``); ``plane`` picks a cube's plane, ``gain`` is in e-/DN.

    ``bad_dq_bits`` overrides the telescope's DQ mask. Raises ``FrameSkipped`` for a file that
    cannot be a frame (unreadable, no image, no valid pixel) and ``UserError`` for settings that
    do not fit it (a cube without ``plane``, a missing ``hdu``).
    """
    from astropy.io import fits

    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, mode="readonly")
            hdul.readall()
        except FileNotFoundError:
            raise FrameSkipped(f"{path} does not exist") from None
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise FrameSkipped(f"{path} is not a readable FITS file ({exc})") from None
    # astropy only warns about a file shorter than its headers; its data would be garbage.
    if any("truncated" in str(w.message) for w in caught):
        hdul.close()
        raise FrameSkipped(f"{path} is truncated (shorter than its headers say)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                index = _select_science(hdul, hdu, path)
                sci = hdul[index]
                raw_dtype = str(np.dtype(_raw_dtype(sci.header)))
                data = _pick_plane(np.asarray(sci.data), plane, path, f"HDU {index}")
            except (OSError, ValueError, TypeError) as exc:
                raise FrameSkipped(f"{path} cannot be read ({exc})") from None
            data = np.array(data, dtype=np.float32)
            if data.ndim != 2 or min(data.shape) == 0:
                raise FrameSkipped(f"{path} HDU {index} has no 2-D image")
            return _assemble(path, hdul, index, data, raw_dtype, plane, gain, bad_dq_bits)
    finally:
        hdul.close()


def _raw_dtype(header: Any) -> type:
    kinds = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32}
    return kinds.get(header.get("ZBITPIX", header.get("BITPIX", -32)), np.float64)


def _assemble(path, hdul, index, data, raw_dtype, plane, gain, bad_dq_bits) -> Frame:
    sci = hdul[index]
    headers = [sci.header, hdul[0].header]
    shape = (int(data.shape[0]), int(data.shape[1]))
    extver = int(sci.header.get("EXTVER", 1))
    telescope = str(_keyword(headers, "TELESCOP") or "").strip().upper()

    valid = np.isfinite(data)
    dq = _companion(hdul, "DQ", extver, shape, plane, path)
    if dq is not None:
        if bad_dq_bits is None:
            bad_dq_bits = {"JWST": JWST_BAD_DQ, "HST": HST_BAD_DQ}.get(telescope, OTHER_BAD_DQ)
        dq = np.asarray(dq)
        if dq.dtype.kind not in "iu":
            dq = dq.astype(np.int64)
        # Bits cast to the DQ's own type: no 8-byte copy of a large flag array.
        bits = np.array(int(bad_dq_bits) & ((1 << (8 * dq.dtype.itemsize)) - 1)).astype(dq.dtype)
        valid &= (dq & bits) == 0

    sigma = _noise_map(hdul, extver, shape, plane, path)
    if sigma is not None:
        valid &= np.isfinite(sigma) & (sigma > 0)
    if not valid.any():
        raise FrameSkipped(f"{path} has no valid pixel (all NaN or flagged in DQ)")
    data[~valid] = np.nan
    if sigma is not None:
        sigma[~valid] = np.nan

    to_e, how = electrons_factor(headers, gain)
    wcs = _wcs_facts(sci.header, shape)
    exposure = _positive_float(_keyword(headers, _EXPOSURE_KEYS))
    meta: dict[str, Any] = {
        "telescope": telescope or None,
        "instrument": _keyword(headers, "INSTRUME"),
        "detector": _keyword(headers, ("DETECTOR", "CCDCHIP")),
        "filter": _filter_name(headers),
        "exposure": exposure,
        "obs_id": _keyword(headers, ("OBS_ID", "ROOTNAME", "ASN_ID")),
        "electrons": how,
    }
    meta.update({k: wcs[k] for k in ("ra", "dec", "pa") if k in wcs})
    meta["pointing_id"] = pointing_id(meta, shape, wcs)
    return Frame(
        path=path,
        data=data,
        valid=valid,
        sigma=sigma,
        units=str(_keyword(headers, "BUNIT") or "").strip(),
        to_electrons=to_e,
        pixel_scale=wcs.get("pixel_scale"),
        header=sci.header.copy(),
        hdu_index=index,
        raw_dtype=raw_dtype,
        meta=meta,
    )


def read_noise_map(path: Path, sci_index: int) -> np.ndarray | None:
    """The 1-sigma noise map of the 2-D science HDU ``sci_index`` (its chip's ERR, else the
    VAR_* extensions; :func:`_noise_map`) in the science array's units, or None: what
    ``infer.py report=`` judges a restoration's residual by when there is no truth."""
    from astropy.io import fits

    with fits.open(path, mode="readonly") as hdul:
        sci = hdul[sci_index]
        shape = _squeeze(np.empty(sci.shape, dtype=np.bool_)).shape
        if len(shape) != 2:
            return None
        try:
            return _noise_map(hdul, int(sci.header.get("EXTVER", 1)), shape, None, path)
        except UserError:  # a noise cube beside a 2-D science array: no usable map
            return None


def _noise_map(hdul, extver, shape, plane, path) -> np.ndarray | None:
    """ERR when present (the pipeline's total sigma), else sqrt(VAR_POISSON + VAR_RNOISE)."""
    err = _companion(hdul, "ERR", extver, shape, plane, path)
    if err is not None:
        return np.array(err, dtype=np.float32)
    variances = [
        _companion(hdul, n, extver, shape, plane, path) for n in ("VAR_POISSON", "VAR_RNOISE")
    ]
    if any(v is None for v in variances):
        return None
    total = np.asarray(variances[0], np.float64) + np.asarray(variances[1], np.float64)
    # VAR_FLAT is the flat-field term of the same budget; include it when the product has it.
    flat = _companion(hdul, "VAR_FLAT", extver, shape, plane, path)
    if flat is not None:
        total = total + np.asarray(flat, np.float64)
    with np.errstate(invalid="ignore"):
        return np.sqrt(total).astype(np.float32)
