"""FITS: find the science HDU, read it in physical units, write a restored copy of the file.

Every other HDU is copied and the science header keeps its WCS; only the cards that the new
float32 data make false (scaling, checksums) are dropped. Two things in a telescope product stop
being true once its science array is restored, and the write path says so instead of copying
them silently: the noise extensions of the restored chip (``ERR``, ``VAR_*``) describe the
*input*'s noise, so they are kept as ``ERR_IN``, ``VAR_POISSON_IN``... with a header note; and
pixels the ``DQ`` array flags as unusable are NaN in the output, as NaN inputs already are (the
``DQ`` array itself is copied unchanged).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.errors import UserError
from astrorestore.io.fits_hdus import (
    RGB_KEYWORD,
    bad_dq_bits,
    cube_message,
    dq_flagged,
    fits_file,
    image_shape,
    is_rgb_cube,
    open_fits,
    raw_dtype,
    select_image_hdu,
    squeeze_leading,
    telescope,
)
from astrorestore.io.formats import LoadedImage, as_image_array

_STALE_FITS_CARDS = ("CHECKSUM", "DATASUM", "BLANK", "BSCALE", "BZERO")
# Per-pixel noise of the science array (JWST, HST): true of the input, not of a restored output.
INPUT_NOISE_EXTENSIONS = ("ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
INPUT_SUFFIX = "_IN"
#: The extension holding the per-pixel standard deviation of an output that is a mean of samples.
STD_EXTENSION = "SR_STD"


def read_fits(path: Path, hdu: int | str | None, content: bytes | None = None) -> LoadedImage:
    """The science image of a FITS file (:func:`~astrorestore.io.fits_hdus.select_image_hdu`)
    in physical units, float32; a marked RGB cube comes back as (H, W, 3). ``content``: the
    file's bytes, read already; they are kept on the image for writing its restored copy."""
    from astropy.io import fits

    with open_fits(path, content) as hdul:
        index = select_image_hdu(hdul, hdu, path)
        sci = hdul[index]
        source_dtype = raw_dtype(sci.header)  # before .data: astropy rewrites BITPIX
        disk_shape = tuple(sci.data.shape)
        unit = str(sci.header.get("BUNIT", "")).strip() or None
        compressed = isinstance(sci, fits.CompImageHDU)
        data = squeeze_leading(np.asarray(sci.data))
        if data.ndim == 3 and data.shape[0] == 3 and is_rgb_cube(sci.header):
            # A colour image astrorestore wrote (a colorizer's output): planes R, G, B.
            data = np.moveaxis(data, 0, -1)
        if data.ndim != 2 and not (data.ndim == 3 and data.shape[2] == 3):
            raise UserError(cube_message(path, index, disk_shape))
        arr = as_image_array(data, path, "FITS image")
    return LoadedImage(
        path=path,
        format="fits",
        data=arr,
        hdu_index=index,
        source_dtype=source_dtype,
        extra={"disk_shape": disk_shape, "unit": unit, "compressed": compressed},
        content=content,
    )


def rescale_wcs(header: Any, scale: int) -> None:
    """Rewrite the celestial WCS of ``header`` for pixels ``scale`` times smaller.

    Pixel ``p`` (1-based FITS convention, centres at integers) of the input covers output pixels
    whose centres map back as ``p' = (p - 0.5)·scale + 0.5``; the world coordinates per pixel
    shrink by ``scale``: CDELTi, or CDi_j where the header uses a CD matrix (a PC matrix is a
    rotation and stays, its CDELTi are scaled — defaulting to 1 where absent).
    """
    if scale == 1:
        return
    naxis = int(header.get("WCSAXES", header.get("NAXIS", 2)) or 2)
    axes = range(1, min(naxis, 2) + 1)
    for i in axes:
        if f"CRPIX{i}" in header:
            header[f"CRPIX{i}"] = (header[f"CRPIX{i}"] - 0.5) * scale + 0.5
    has_cd = any(f"CD{i}_{j}" in header for i in axes for j in axes)
    if has_cd:
        for i in axes:
            for j in axes:
                if f"CD{i}_{j}" in header:
                    header[f"CD{i}_{j}"] = header[f"CD{i}_{j}"] / scale
    else:
        for i in axes:
            header[f"CDELT{i}"] = header.get(f"CDELT{i}", 1.0) / scale


def write_fits(
    tmp: Path,
    restored: np.ndarray,
    source: LoadedImage,
    history: list[str],
    keywords: dict[str, tuple[Any, str]],
    scale: int = 1,
    name: str | None = None,
    std: np.ndarray | None = None,
    std_note: str = "per-pixel standard deviation, in the output's units",
) -> None:
    """Copy the source file with the science data replaced by ``restored``.

    ``std``: the per-pixel uncertainty of ``restored``, appended as the image extension
    ``SR_STD`` with the science header's WCS and BUNIT and ``std_note`` as a COMMENT.

    A restored image of the source's shape keeps the on-disk shape (degenerate axes included);
    a scaled image gets its WCS rescaled; a colour image is written as a (3, H, W) cube.
    ``name``: the output's final name; a gzip archive (``.gz``) records it, less ``.gz``, as
    the file it holds (``gunzip -N`` restores that name, not the temporary file's).
    """
    from astropy.io import fits

    assert source.hdu_index is not None
    data = np.array(restored, dtype=np.float32)  # a copy: DQ masking must not touch the caller's
    if data.ndim == 3:
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
    if data.shape == source.data.shape:
        # Restore degenerate axes so NAXISn in the kept header stays truthful.
        data = data.reshape(source.extra.get("disk_shape", data.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(fits_file(source.path, source.content), mode="readonly") as hdul:
            sci = hdul[source.hdu_index]
            header = sci.header
            for key in _STALE_FITS_CARDS:
                header.remove(key, ignore_missing=True, remove_all=True)
            extver = int(header.get("EXTVER", 1))
            flagged = _dq_flagged(hdul, source.hdu_index, extver, data.shape)
            if flagged is not None and flagged.any():
                data[flagged.reshape(data.shape)] = np.nan
                history = [*history, f"{int(flagged.sum())} pixels flagged in DQ set to NaN"]
            sci.data = data
            if isinstance(sci, fits.CompImageHDU) and sci.quantize_level:
                # fpack's lossy float compression: values step by noise / level within a tile.
                history = [
                    *history,
                    f"compressed as the input ({sci.compression_type}): floats quantised to "
                    f"noise/{sci.quantize_level:g}, lossy",
                ]
            rescale_wcs(header, scale)
            renamed = _keep_input_noise(hdul, source.hdu_index, extver)
            if renamed:
                history = [
                    *history,
                    f"input noise kept as {', '.join(renamed)}: it is not the output's noise",
                ]
            # An input's own SR_STD (an output restored again) describes other pixels.
            for stale in [h for h in hdul[1:] if h.name.upper() == STD_EXTENSION and h is not sci]:
                hdul.remove(stale)
                history = [*history, f"the input's {STD_EXTENSION} extension dropped"]
            for line in history:
                header.add_history(line)
            for key, (value, comment) in keywords.items():
                header[key] = (value, comment)
            if data.ndim == 3 and data.shape[0] == 3:
                header[RGB_KEYWORD] = ("RGB", "the 3 planes are one colour image: R, G, B")
            else:
                header.remove(RGB_KEYWORD, ignore_missing=True)
            if std is not None:
                hdul.append(_std_hdu(std, header, std_note))
            if tmp.name.lower().endswith(".gz"):
                _write_gzip(hdul, tmp, (name or tmp.name)[: -len(".gz")])
            else:
                hdul.writeto(tmp, overwrite=True, output_verify="silentfix")


def _std_hdu(std: np.ndarray, science: Any, note: str) -> Any:
    """The ``SR_STD`` extension: ``std`` laid out as the science data (a colour image as a
    (3, H, W) cube), with the science header's celestial WCS and BUNIT."""
    from astropy.io import fits
    from astropy.wcs import WCS

    data = np.array(std, dtype=np.float32)
    if data.ndim == 3:
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
    header = fits.Header()
    try:
        header.update(WCS(science).celestial.to_header())
    except Exception:  # no usable WCS in the science header: the extension has none either
        pass
    if "BUNIT" in science:
        header["BUNIT"] = (science["BUNIT"], "same units as the science data")
    header.add_comment(f"astrorestore: {note}")
    return fits.ImageHDU(data, header=header, name=STD_EXTENSION)


def _write_gzip(hdul: Any, tmp: Path, inner_name: str) -> None:
    """``hdul`` gzipped into ``tmp``, the archive naming ``inner_name`` as its file."""
    import gzip
    import io

    buffer = io.BytesIO()
    hdul.writeto(buffer, output_verify="silentfix")
    with open(tmp, "wb") as raw, gzip.GzipFile(inner_name, "wb", fileobj=raw) as archive:
        archive.write(buffer.getbuffer())


def _keep_input_noise(hdul: Any, sci_index: int, extver: int) -> list[str]:
    """Rename the restored chip's noise extensions to ``<name>_IN`` with a header note.

    Only the chip that was restored (same EXTVER): another chip's ERR still fits its own,
    unchanged science array. Returns the new names.
    """
    renamed = []
    for i, h in enumerate(hdul):
        name = h.name.upper()
        if i == sci_index or name not in INPUT_NOISE_EXTENSIONS:
            continue
        if int(h.header.get("EXTVER", 1)) != extver:
            continue
        h.name = name + INPUT_SUFFIX
        h.header["ARINPUT"] = (True, "noise of the INPUT science data, not of the output")
        h.header.add_comment(
            f"astrorestore: was {name}; it describes the noise of the input science array "
            "before restoration, not the noise of the restored output"
        )
        if "CHECKSUM" in h.header:  # the header changed; the data, hence DATASUM, did not
            h.add_checksum()
        renamed.append(h.name)
    return renamed


def _dq_flagged(hdul: Any, sci_index: int, extver: int, shape: tuple[int, ...]) -> Any:
    """Pixels of the restored chip that its DQ array marks unusable, or None (no DQ of
    that shape). The bits are the telescope's, as in training (``io.fits_hdus.bad_dq_bits``)."""
    dq = None
    for i, h in enumerate(hdul):
        if i != sci_index and h.name.upper() == "DQ" and int(h.header.get("EXTVER", 1)) == extver:
            dq = h
            break
    if dq is None or image_shape(dq) is None:
        return None
    flags = squeeze_leading(np.asarray(dq.data))
    if flags.shape != squeeze_leading(np.empty(shape, dtype=np.bool_)).shape:
        return None  # a scaled or colour output has no pixel-matched DQ
    return dq_flagged(flags, bad_dq_bits(telescope([hdul[sci_index].header, hdul[0].header])))
