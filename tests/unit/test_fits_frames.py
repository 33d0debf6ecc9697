"""Tests of read_frame on JWST, HST, plain, cube and broken FITS files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astrorestore.data.sources.fits_frames import FrameSkipped, electrons_factor, read_frame
from astrorestore.errors import UserError
from tests.unit.fits_factory import sky, write_hst, write_jwst, write_plain


def test_jwst_cal_mask_sigma_units_and_meta(tmp_path) -> None:
    path = tmp_path / "jw_cal.fits"
    written = write_jwst(path, gain=2.0, photmjsr=0.5, xposure=100.0)
    frame = read_frame(path)
    assert frame.data.dtype == np.float32 and frame.data.shape == (96, 128)
    assert frame.valid[3, 4] == False  # noqa: E712  DO_NOT_USE
    assert frame.valid[4, 4] == True  # noqa: E712  JUMP_DET alone keeps the pixel
    assert np.isnan(frame.data[3, 4])
    good = frame.valid
    np.testing.assert_array_equal(frame.data[good], written["data"][good])
    np.testing.assert_allclose(frame.sigma[good], 1.0, rtol=1e-6)  # ERR = sqrt(0.8 + 0.2)
    assert frame.units == "MJy/sr"
    # MJy/sr -> DN/s (/ PHOTMJSR) -> DN (* exposure) -> e- (* gain)
    assert frame.to_electrons == pytest.approx(100.0 * 2.0 / 0.5)
    assert frame.pixel_scale == pytest.approx(0.031, rel=1e-6)
    assert frame.meta["telescope"] == "JWST" and frame.meta["instrument"] == "NIRCAM"
    assert frame.meta["filter"] == "F200W"  # PUPIL=CLEAR is not part of the filter
    assert frame.meta["exposure"] == 100.0
    assert frame.header["EXTNAME"] == "SCI"


def test_jwst_without_gain_has_no_electron_factor(tmp_path) -> None:
    path = tmp_path / "jw_cal.fits"
    write_jwst(path)
    assert read_frame(path).to_electrons is None
    assert read_frame(path, gain=1.8).to_electrons == pytest.approx(100.0 * 1.8 / 0.5)


def test_jwst_sigma_from_variances_when_no_err(tmp_path) -> None:
    path = tmp_path / "jw_i2d.fits"
    write_jwst(path, kind="i2d", with_err=False)
    frame = read_frame(path)
    np.testing.assert_allclose(frame.sigma[frame.valid], 1.0, rtol=1e-6)


def test_hst_chips_and_dq_bits(tmp_path) -> None:
    path = tmp_path / "j8abc1abq_flt.fits"
    written = write_hst(path)
    frame = read_frame(path)
    np.testing.assert_array_equal(frame.data[frame.valid], written["data1"][frame.valid])
    assert not frame.valid[5, 6] and frame.valid[7, 8]  # saturated dropped, warm kept
    assert frame.to_electrons == 1.0 and frame.meta["filter"] == "F606W"
    chip2 = read_frame(path, hdu="SCI,2")
    assert np.nanmedian(chip2.data) == pytest.approx(200.0, abs=2.0)
    assert frame.meta["pointing_id"] == chip2.meta["pointing_id"]  # same WCS in this file


def test_hst_rate_units_use_exposure(tmp_path) -> None:
    path = tmp_path / "ir_flt.fits"
    write_hst(path, bunit="ELECTRONS/S", exptime=250.0)
    assert read_frame(path).to_electrons == 250.0


def test_electrons_factor_table() -> None:
    h = fits.Header({"BUNIT": "DN/s", "EXPTIME": 10.0, "GAIN": 3.0})
    assert electrons_factor([h])[0] == 30.0
    assert electrons_factor([fits.Header({"BUNIT": "DN", "GAIN": 2.0})])[0] == 2.0
    assert electrons_factor([fits.Header({"BUNIT": "DN/s"})])[0] is None
    assert electrons_factor([fits.Header({"BUNIT": "Jy"})])[0] is None
    assert electrons_factor([fits.Header()])[0] is None


def test_plain_primary_with_nans(tmp_path) -> None:
    data = np.arange(64 * 70, dtype=np.float32).reshape(64, 70)
    data[0, :5] = np.nan
    write_plain(tmp_path / "plain.fits", data)
    frame = read_frame(tmp_path / "plain.fits")
    assert frame.sigma is None and frame.to_electrons is None and frame.pixel_scale is None
    assert frame.valid.sum() == data.size - 5
    assert frame.hdu_index == 0 and frame.meta["pointing_id"] is None


def test_cube_needs_a_plane(tmp_path) -> None:
    cube = np.stack([np.full((64, 64), v, np.float32) for v in (1.0, 2.0, 3.0)])
    write_plain(tmp_path / "cube.fits", cube)
    with pytest.raises(UserError, match=r"data\.plane=<0\.\.2>"):
        read_frame(tmp_path / "cube.fits")
    assert read_frame(tmp_path / "cube.fits", plane=1).data[0, 0] == 2.0
    with pytest.raises(UserError, match=r"data\.plane=5 is invalid"):
        read_frame(tmp_path / "cube.fits", plane=5)


def test_broken_empty_and_all_nan_files_are_skipped(tmp_path) -> None:
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 100)
    with pytest.raises(FrameSkipped, match="broken.fits"):
        read_frame(broken)
    table = tmp_path / "table.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.zeros(3))]),
        ]
    ).writeto(table)
    with pytest.raises(FrameSkipped, match="no image HDU"):
        read_frame(table)
    write_plain(tmp_path / "nan.fits", np.full((64, 64), np.nan, np.float32))
    with pytest.raises(FrameSkipped, match="no valid pixel"):
        read_frame(tmp_path / "nan.fits")
    for exc in (FrameSkipped("x"),):
        assert isinstance(exc, UserError) and "\n" not in str(exc)


def test_pointing_id_pairs_exposures_not_dithers(tmp_path) -> None:
    write_jwst(tmp_path / "a.fits", seed=1)
    write_jwst(tmp_path / "b.fits", seed=2)
    write_jwst(tmp_path / "c.fits", seed=3, ra=150.0 + 2 * 0.031 / 3600.0)  # 2 px dither
    ids = [read_frame(tmp_path / f"{n}.fits").meta["pointing_id"] for n in "abc"]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_truncated_file_is_skipped(tmp_path) -> None:
    path = tmp_path / "cut.fits"
    write_jwst(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 2880 * 3])
    with pytest.raises(FrameSkipped, match="truncated|readable"):
        read_frame(path)


def test_unknown_telescope_drops_any_dq_bit_unless_overridden(tmp_path) -> None:
    data = np.ones((64, 64), np.float32)
    dq = np.zeros((64, 64), np.int16)
    dq[1, 1], dq[2, 2] = 64, 1
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"), fits.ImageHDU(dq, name="DQ")]
    ).writeto(tmp_path / "other.fits")
    frame = read_frame(tmp_path / "other.fits")
    assert not frame.valid[1, 1] and not frame.valid[2, 2] and frame.valid.sum() == 64 * 64 - 2
    only_bit0 = read_frame(tmp_path / "other.fits", bad_dq_bits=1)
    assert only_bit0.valid[1, 1] and not only_bit0.valid[2, 2]


def test_pair_key_pairs_registered_frames_without_a_wcs(tmp_path) -> None:
    # Registered exposures without a celestial WCS had no pointing id: never paired.
    for name, field in (("a", "M13"), ("b", "M13"), ("c", "M92")):
        write_plain(tmp_path / f"{name}.fits", sky((64, 64), seed=1), OBJECT=field)
    write_plain(tmp_path / "d.fits", sky((64, 64), seed=2))
    assert read_frame(tmp_path / "a.fits").meta["pointing_id"] is None
    ids = [
        read_frame(tmp_path / f"{n}.fits", pair_key="OBJECT").meta["pointing_id"] for n in "abcd"
    ]
    assert ids[0] == ids[1] and ids[0] != ids[2] and ids[3] is None
