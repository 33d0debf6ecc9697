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
from astrorestore.io.formats import LoadedImage, as_image_array

_STALE_FITS_CARDS = ("CHECKSUM", "DATASUM", "BLANK", "BSCALE", "BZERO")
# Per-pixel noise of the science array (JWST, HST): true of the input, not of a restored output.
INPUT_NOISE_EXTENSIONS = ("ERR", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
INPUT_SUFFIX = "_IN"


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


def read_fits(path: Path, hdu: int | str | None) -> LoadedImage:
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
            unit = str(sci.header.get("BUNIT", "")).strip() or None
            compressed = isinstance(sci, fits.CompImageHDU)
            data = _squeeze_leading(np.asarray(sci.data))
            if data.ndim == 3 and data.shape[0] == 3 and _is_rgb_cube(sci.header):
                # A colour image astrorestore wrote (a colorizer's output): planes R, G, B.
                data = np.moveaxis(data, 0, -1)
            if data.ndim != 2 and not (data.ndim == 3 and data.shape[2] == 3):
                raise UserError(_cube_message(path, index, disk_shape))
            arr = as_image_array(data, path, "FITS image")
    return LoadedImage(
        path=path,
        format="fits",
        data=arr,
        hdu_index=index,
        source_dtype=raw_dtype,
        extra={"disk_shape": disk_shape, "unit": unit, "compressed": compressed},
    )


# The keyword that marks a (3, H, W) cube as one colour image (planes R, G, B), so that a
# colour output can be read back (e.g. colorized, then super-resolved by a second infer.py).
RGB_KEYWORD = "ARCOLOR"


def _is_rgb_cube(header: Any) -> bool:
    return str(header.get(RGB_KEYWORD, "")).strip().upper() == "RGB"


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

    def is_image(i: int, shape: tuple[int, ...]) -> bool:  # a plane, or a marked RGB cube
        rgb = len(shape) == 3 and shape[0] == 3 and _is_rgb_cube(hdul[i].header)
        return is_2d(shape) or rgb

    for i, s in images:
        if hdul[i].name.upper() == "SCI" and is_image(i, s):
            return i
    for i, s in images:
        if is_image(i, s):
            return i
    first, shape = images[0]
    if len(shape) < 2:
        raise UserError(f"{path} HDU {first} holds 1-D data of shape {shape}; pass a 2-D image")
    raise UserError(_cube_message(path, first, shape))


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
) -> None:
    """Copy the source file with the science data replaced by ``restored``.

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
        with fits.open(source.path, mode="readonly") as hdul:
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
            for line in history:
                header.add_history(line)
            for key, (value, comment) in keywords.items():
                header[key] = (value, comment)
            if data.ndim == 3 and data.shape[0] == 3:
                header[RGB_KEYWORD] = ("RGB", "the 3 planes are one colour image: R, G, B")
            else:
                header.remove(RGB_KEYWORD, ignore_missing=True)
            if tmp.name.lower().endswith(".gz"):
                _write_gzip(hdul, tmp, (name or tmp.name)[: -len(".gz")])
            else:
                hdul.writeto(tmp, overwrite=True, output_verify="silentfix")


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
    that shape). The bits are the telescope's, as in training (``data.fits_frames``)."""
    from astrorestore.data.sources.fits_frames import HST_BAD_DQ, JWST_BAD_DQ, OTHER_BAD_DQ

    dq = None
    for i, h in enumerate(hdul):
        if i != sci_index and h.name.upper() == "DQ" and int(h.header.get("EXTVER", 1)) == extver:
            dq = h
            break
    if dq is None or _fits_image_shape(dq) is None:
        return None
    flags = _squeeze_leading(np.asarray(dq.data))
    squeezed = tuple(shape)
    while len(squeezed) > 2 and squeezed[0] == 1:
        squeezed = squeezed[1:]
    if flags.shape != squeezed:  # a scaled or colour output has no pixel-matched DQ
        return None
    if flags.dtype.kind not in "iu":
        flags = flags.astype(np.int64)
    telescope = ""
    for header in (hdul[sci_index].header, hdul[0].header):
        telescope = telescope or str(header.get("TELESCOP", "")).strip().upper()
    bits = {"JWST": JWST_BAD_DQ, "HST": HST_BAD_DQ}.get(telescope, OTHER_BAD_DQ)
    # Bits cast to the DQ's own integer type (a signed 16-bit HST DQ must not overflow).
    mask = np.array(int(bits) & ((1 << (8 * flags.dtype.itemsize)) - 1)).astype(flags.dtype)
    return (flags & mask) != 0
