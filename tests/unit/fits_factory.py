"""Small FITS files in the real layouts of JWST, HST and plain products, for the data tests.

Each writer draws a sky of Poisson-like noise from its own seed and returns the arrays it wrote,
so tests can compare what was read with what was written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits


def _wcs_cards(
    header: fits.Header, shape: tuple[int, int], scale: float, ra: float = 150.0, dec: float = 2.0
) -> None:
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRPIX1"], header["CRPIX2"] = shape[1] / 2 + 0.5, shape[0] / 2 + 0.5
    header["CRVAL1"], header["CRVAL2"] = ra, dec
    header["CDELT1"], header["CDELT2"] = -scale / 3600.0, scale / 3600.0
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"


def sky(shape: tuple[int, int], seed: int, level: float = 10.0, sigma: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level + sigma * rng.standard_normal(shape)).astype(np.float32)


def write_jwst(
    path: Path,
    shape: tuple[int, int] = (96, 128),
    *,
    seed: int = 0,
    kind: str = "cal",
    photmjsr: float = 0.5,
    xposure: float = 100.0,
    gain: float | None = None,
    scale: float = 0.031,
    ra: float = 150.0,
    with_err: bool = True,
    dq_bad: tuple[int, int, int] | None = (3, 4, 1),
) -> dict[str, np.ndarray]:
    """A JWST ``cal``/``i2d``-like product: SCI (MJy/sr), ERR or VAR_*, DQ."""
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["TELESCOP"], ph["INSTRUME"], ph["DETECTOR"] = "JWST", "NIRCAM", "NRCA1"
    ph["FILTER"], ph["PUPIL"] = "F200W", "CLEAR"
    ph["EFFEXPTM"] = xposure
    ph["OBS_ID"] = "V01234001001P0000000001101"
    data = sky(shape, seed)
    sci = fits.ImageHDU(data, name="SCI")
    sci.header["BUNIT"] = "MJy/sr"
    sci.header["PHOTMJSR"] = photmjsr
    sci.header["XPOSURE"] = xposure
    if gain is not None:
        sci.header["GAIN"] = gain
    _wcs_cards(sci.header, shape, scale, ra=ra)
    hdus = [primary, sci]
    out = {"data": data}
    var_p = np.full(shape, 0.8, np.float32)
    var_r = np.full(shape, 0.2, np.float32)
    if with_err:
        err = np.sqrt(var_p + var_r)
        hdus.append(fits.ImageHDU(err, name="ERR"))
        out["err"] = err
    dq = np.zeros(shape, np.uint32)
    if dq_bad is not None:
        y, x, bit = dq_bad
        dq[y, x] = bit
        dq[y + 1, x] = 4  # JUMP_DET: not a reason to drop a pixel
        out["dq"] = dq
    hdus.append(fits.ImageHDU(dq, name="DQ"))
    hdus.append(fits.ImageHDU(var_p, name="VAR_POISSON"))
    hdus.append(fits.ImageHDU(var_r, name="VAR_RNOISE"))
    if kind == "i2d":
        hdus.append(fits.ImageHDU(np.ones(shape, np.float32), name="WHT"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return out


def write_hst(
    path: Path,
    shape: tuple[int, int] = (80, 100),
    *,
    seed: int = 1,
    bunit: str = "ELECTRONS",
    exptime: float = 500.0,
) -> dict[str, np.ndarray]:
    """An HST ACS-like ``flt`` with two chips (SCI/ERR/DQ, EXTVER 1 and 2)."""
    primary = fits.PrimaryHDU()
    ph = primary.header
    ph["TELESCOP"], ph["INSTRUME"], ph["DETECTOR"] = "HST", "ACS", "WFC"
    ph["FILTER1"], ph["FILTER2"] = "F606W", "CLEAR2L"
    ph["EXPTIME"], ph["ROOTNAME"] = exptime, "j8abc1abq"
    hdus = [primary]
    out = {}
    for ver in (1, 2):
        data = sky(shape, seed + ver, level=100.0 * ver, sigma=5.0)
        dq = np.zeros(shape, np.int16)
        dq[5, 6] = 256  # saturated
        dq[7, 8] = 64  # warm: still usable
        for name, arr in (("SCI", data), ("ERR", np.full(shape, 5.0, np.float32)), ("DQ", dq)):
            h = fits.ImageHDU(arr, name=name, ver=ver)
            if name == "SCI":
                h.header["BUNIT"] = bunit
                _wcs_cards(h.header, shape, 0.05)
            hdus.append(h)
        out[f"data{ver}"], out[f"dq{ver}"] = data, dq
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return out


def write_plain(path: Path, data: np.ndarray, **cards) -> None:
    hdu = fits.PrimaryHDU(data)
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
