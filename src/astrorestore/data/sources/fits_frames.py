"""One telescope frame as training data: science pixels, validity, noise map, units, metadata.

Inference only needs the science array (``io.fits``); training on real products needs more:
which pixels are trustworthy (DQ flags, NaNs), the per-pixel noise the pipeline already
estimated (ERR, VAR_*), the factor that turns the file's units into detected electrons, the
pixel scale (frames of different scales must not be mixed silently) and enough header facts to
find repeated exposures of one pointing (real Noise2Noise pairs).

Everything file-level (which HDU, the chip's DQ/ERR/VAR_* extensions, each telescope's bad DQ
bits, header keywords, the WCS) is :mod:`astrorestore.io.fits_hdus`, shared with ``infer.py``;
this module decides what makes a training frame. Supported layouts: JWST stage-2/3 products
(``*_cal``, ``*_i2d``, ``*_rate``), HST products and plain FITS with the image in the primary
HDU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError
from astrorestore.io.fits_hdus import (
    Chip,
    NoImageData,
    bad_dq_bits,
    dq_flagged,
    header_value,
    open_fits,
    pick_plane,
    raw_dtype,
    select_image_hdu,
    telescope,
    wcs_facts,
)

# The setting that picks a cube's plane, named in the errors a cube raises.
PLANE_KEY = "data.plane"
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
    :func:`astrorestore.io.fits_hdus.bad_dq_bits`) or has no finite positive ``sigma``.
    ``sigma`` is the per-pixel 1-sigma noise in the same units as ``data`` (ERR, else sqrt of
    the VAR_* extensions), or None. ``data * to_electrons`` is in detected electrons when the header
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
    unit = str(header_value(headers, "BUNIT") or "").strip().lower().replace(" ", "")
    if not unit:
        return None, "no BUNIT"
    rate = unit.endswith("/s") or unit.endswith("/sec")
    base = unit.rsplit("/", 1)[0] if rate else unit
    exposure = _positive_float(header_value(headers, _EXPOSURE_KEYS))
    if gain is None:
        gain = _positive_float(header_value(headers, _GAIN_KEYS))
    if unit == "mjy/sr":
        photmjsr = _positive_float(header_value(headers, "PHOTMJSR"))
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


def pointing_id(
    meta: dict[str, Any],
    shape: tuple[int, int],
    wcs: dict[str, float],
    field: tuple[str, Any] | None = None,
) -> str | None:
    """Frames with equal ids cover the same sky on the same pixel grid (to ~0.1 px).

    Built from instrument, detector, filter, shape and the WCS centre and rotation quantised to
    0.1 px (0.002 deg in angle), so two exposures of one pointing get the same id and a dithered
    exposure does not. Exposures straddling a quantisation boundary are (rarely) not paired;
    paired frames are never misaligned by more than the quantum. None without a celestial WCS.

    ``field`` = (header keyword, its value) replaces the WCS (``data.pair_key``): the user says
    which frames are registered exposures of one field; None where the frame lacks the keyword.
    """
    parts = [meta.get(k) or "-" for k in ("telescope", "instrument", "detector", "filter")]
    if field is not None:
        key, value = field
        if value is None or str(value).strip() == "":
            return None
        return "|".join([*map(str, parts), f"{shape[0]}x{shape[1]}", f"{key}={value}"])
    if "pixel_scale" not in wcs:
        return None
    quantum = 0.1 * wcs["pixel_scale"] / 3600.0
    ra_bin = round(wcs["ra"] * math.cos(math.radians(wcs["dec"])) / quantum)
    dec_bin = round(wcs["dec"] / quantum)
    pa_bin = round(wcs["pa"] / 0.002)
    grid = [f"{shape[0]}x{shape[1]}", str(ra_bin), str(dec_bin), str(pa_bin)]
    return "|".join([*map(str, parts), *grid])


def _filter_name(headers: list[Any]) -> str | None:
    names = []
    for key in ("FILTER", "FILTER1", "FILTER2", "PUPIL"):
        value = header_value(headers, key)
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
    pair_key: str | None = None,
) -> Frame:
    """Read one frame (see ``Frame``); ``plane`` picks a cube's plane, ``gain`` is in e-/DN.

    ``pair_key``: a header keyword whose value names the field; frames with equal values (and
    instrument, filter, shape) are one pointing instead of frames with equal WCS
    (``pointing_id``).

    ``bad_dq_bits`` overrides the telescope's DQ mask. Raises ``FrameSkipped`` for a file that
    cannot be a frame (unreadable, no image, no valid pixel) and ``UserError`` for settings that
    do not fit it (a cube without ``plane``, a missing ``hdu``).
    """
    path = Path(path)
    try:
        with open_fits(path) as hdul:
            return _read_science(path, hdul, hdu, plane, gain, bad_dq_bits, pair_key)
    except FileNotFoundError:
        raise FrameSkipped(f"{path} does not exist") from None
    except UserError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        # Including open_fits's OSError for a truncated file (its message says so).
        raise FrameSkipped(f"{path} is not a readable FITS file ({exc})") from None


def _read_science(path, hdul, hdu, plane, gain, dq_override, pair_key=None) -> Frame:
    try:
        index = select_image_hdu(hdul, hdu, path, key="data.hdu", cubes=True)
        sci = hdul[index]
        stored = str(raw_dtype(sci.header))
        data = pick_plane(np.asarray(sci.data), plane, path, f"HDU {index}", PLANE_KEY)
    except NoImageData as exc:
        raise FrameSkipped(f"{exc}; it cannot be a training frame") from None
    except UserError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise FrameSkipped(f"{path} cannot be read ({exc})") from None
    data = np.array(data, dtype=np.float32)
    if data.ndim != 2 or min(data.shape) == 0:
        raise FrameSkipped(f"{path} HDU {index} has no 2-D image")
    return _assemble(path, hdul, index, data, stored, plane, gain, dq_override, pair_key)


def _assemble(
    path, hdul, index, data, stored, plane, gain, bad_dq_bits_override, pair_key=None
) -> Frame:
    sci = hdul[index]
    headers = [sci.header, hdul[0].header]
    shape = (int(data.shape[0]), int(data.shape[1]))
    extver = int(sci.header.get("EXTVER", 1))
    observatory = telescope(headers)

    valid = np.isfinite(data)
    chip = Chip(hdul, extver, shape, plane, path, PLANE_KEY)
    dq = chip.extension("DQ")
    if dq is not None:
        bits = bad_dq_bits(observatory) if bad_dq_bits_override is None else bad_dq_bits_override
        valid &= ~dq_flagged(dq, bits)

    sigma = chip.noise_map()
    if sigma is not None:
        valid &= np.isfinite(sigma) & (sigma > 0)
    if not valid.any():
        raise FrameSkipped(f"{path} has no valid pixel (all NaN or flagged in DQ)")
    data[~valid] = np.nan
    if sigma is not None:
        sigma[~valid] = np.nan

    to_e, how = electrons_factor(headers, gain)
    wcs = wcs_facts(sci.header, shape)
    exposure = _positive_float(header_value(headers, _EXPOSURE_KEYS))
    meta: dict[str, Any] = {
        "telescope": observatory or None,
        "instrument": header_value(headers, "INSTRUME"),
        "detector": header_value(headers, ("DETECTOR", "CCDCHIP")),
        "filter": _filter_name(headers),
        "exposure": exposure,
        "obs_id": header_value(headers, ("OBS_ID", "ROOTNAME", "ASN_ID")),
        "electrons": how,
    }
    meta.update({k: wcs[k] for k in ("ra", "dec", "pa") if k in wcs})
    field = None if pair_key is None else (pair_key, header_value(headers, pair_key))
    meta["pointing_id"] = pointing_id(meta, shape, wcs, field)
    return Frame(
        path=path,
        data=data,
        valid=valid,
        sigma=sigma,
        units=str(header_value(headers, "BUNIT") or "").strip(),
        to_electrons=to_e,
        pixel_scale=wcs.get("pixel_scale"),
        header=sci.header.copy(),
        hdu_index=index,
        raw_dtype=stored,
        meta=meta,
    )
