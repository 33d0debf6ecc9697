"""The shared FITS layout helpers: infer.py and training pick the same HDU and the same bad
pixels from one file, and an HST chip can be named as ``SCI,2`` by either."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrorestore.data.sources.fits_frames import read_frame
from astrorestore.errors import UserError
from astrorestore.io.fits_hdus import (
    HST_BAD_DQ,
    Chip,
    NoImageData,
    dq_flagged,
    read_noise_map,
    select_image_hdu,
)
from astrorestore.io.images import read_image, write_image
from tests.unit.fits_factory import write_hst, write_jwst


def test_infer_and_training_read_the_same_chip(tmp_path) -> None:
    path = tmp_path / "flt.fits"
    written = write_hst(path)
    for hdu, key in ((None, "data1"), ("SCI,2", "data2")):
        image = read_image(path, hdu=hdu)
        frame = read_frame(path, hdu=hdu)
        assert image.hdu_index == frame.hdu_index
        np.testing.assert_array_equal(image.data, written[key])
        good = frame.valid
        np.testing.assert_array_equal(frame.data[good], written[key][good])


def test_restored_output_and_training_flag_the_same_dq_pixels(tmp_path) -> None:
    path = tmp_path / "flt.fits"
    write_hst(path)
    image = read_image(path)
    out = tmp_path / "out.fits"
    write_image(out, image.data, image, history=[], keywords={})
    with fits.open(out) as hdul:
        restored = hdul[image.hdu_index].data
    frame = read_frame(path)
    # Saturation (256) is unusable for HST, a warm pixel (64) is not; both readers agree.
    np.testing.assert_array_equal(np.isnan(restored), ~frame.valid)
    assert np.isnan(restored[5, 6]) and not np.isnan(restored[7, 8])


def test_dq_bits_cast_to_the_flags_own_type() -> None:
    flags = np.array([[256, 64], [-32768, 0]], np.int16)  # bit 15 set in a signed DQ
    np.testing.assert_array_equal(dq_flagged(flags, HST_BAD_DQ), [[True, False], [False, False]])
    np.testing.assert_array_equal(dq_flagged(flags, -1), [[True, True], [True, False]])


def test_noise_map_from_err_or_variances(tmp_path) -> None:
    path = tmp_path / "cal.fits"
    write_jwst(path)
    assert read_noise_map(path, 1) == pytest.approx(np.ones((96, 128)), rel=1e-6)
    with fits.open(path) as hdul:
        del hdul["ERR"]
        # Without ERR: sqrt(VAR_POISSON + VAR_RNOISE), the same budget.
        np.testing.assert_allclose(Chip(hdul, 1, (96, 128)).noise_map(), 1.0, rtol=1e-6)


def test_selection_errors_name_the_setting(tmp_path) -> None:
    path = tmp_path / "flt.fits"
    write_hst(path)
    with fits.open(path) as hdul:
        with pytest.raises(UserError, match=r"no HDU 'NOPE'.*set data\.hdu="):
            select_image_hdu(hdul, "NOPE", path, key="data.hdu")
    table = tmp_path / "table.fits"
    column = fits.Column(name="a", format="E", array=np.zeros(3))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([column])]).writeto(table)
    with fits.open(table) as hdul:
        with pytest.raises(NoImageData, match="no image data"):
            select_image_hdu(hdul, None, table)
        with pytest.raises(NoImageData, match=r"HDU 1 holds no image data; set hdu="):
            select_image_hdu(hdul, 1, table)
