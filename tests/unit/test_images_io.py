import hashlib
import os
import warnings

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from astrorestore.errors import UserError
from astrorestore.io.formats import SUPPORTED_SUFFIXES, image_format
from astrorestore.io.images import read_image, write_image
from astrorestore.io.paths import resolve_io


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mef(path, scaled=False):
    primary = fits.PrimaryHDU()
    primary.header["OBSERVER"] = "test"
    data = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    if scaled:
        sci = fits.ImageHDU((data % 1000).astype(np.int16), name="SCI")
        sci.header["BSCALE"] = 2.0
        sci.header["BZERO"] = 10.0
    else:
        sci = fits.ImageHDU(data, name="SCI")
    sci.header["GAIN"] = (1.5, "e-/ADU")
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=[1.0, 2.0])])
    fits.HDUList([primary, sci, table]).writeto(path)
    return data


def test_supported_suffixes_and_formats():
    assert ".fits.gz" in SUPPORTED_SUFFIXES and ".npy" in SUPPORTED_SUFFIXES
    assert image_format("a.FITS.gz") == "fits"
    assert image_format("a.JPG") == "jpeg"
    assert image_format("a.tif") == "tiff"
    assert image_format("a.txt") is None


def test_fits_picks_sci_extension_and_round_trips(tmp_path):
    src = tmp_path / "in.fits"
    data = _mef(src)
    img = read_image(src)
    assert img.format == "fits" and img.hdu_index == 1
    assert img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, data)
    before = _digest(src)
    out = tmp_path / "sub" / "out.fits"
    write_image(out, img.data * 2, img, history=["hello"], keywords={"ARMODEL": ("m", "c")})
    assert _digest(src) == before
    with fits.open(out) as hl:
        assert len(hl) == 3
        assert hl[0].header["OBSERVER"] == "test"
        assert hl[1].header["GAIN"] == 1.5
        assert hl[1].header["ARMODEL"] == "m"
        assert "hello" in str(hl[1].header["HISTORY"])
        assert hl[1].data.dtype.kind == "f"
        np.testing.assert_array_equal(hl[1].data, data * 2)
        np.testing.assert_array_equal(hl[2].data["x"], [1.0, 2.0])
    assert [p.name for p in out.parent.iterdir()] == ["out.fits"]


def test_fits_scaled_ints_become_physical_float(tmp_path):
    src = tmp_path / "in.fits"
    _mef(src, scaled=True)
    img = read_image(src)
    assert img.source_dtype == np.int16
    assert img.data[0, 1] == pytest.approx(1 * 2.0 + 10.0)
    out = tmp_path / "out.fits"
    write_image(out, img.data + 0.25, img, history=[], keywords={})
    with fits.open(out) as hl:
        assert "BSCALE" not in hl[1].header and "BZERO" not in hl[1].header
        assert hl[1].header["BITPIX"] == -32
        np.testing.assert_allclose(hl[1].data, img.data + 0.25)


def test_fits_explicit_hdu_and_errors(tmp_path):
    src = tmp_path / "in.fits"
    _mef(src)
    assert read_image(src, hdu="SCI").hdu_index == 1
    assert read_image(src, hdu=1).hdu_index == 1
    with pytest.raises(UserError, match="no image data"):
        read_image(src, hdu=2)
    with pytest.raises(UserError, match="no HDU"):
        read_image(src, hdu="NOPE")


def test_fits_cube_rejected_but_degenerate_axis_squeezed(tmp_path):
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 20, 20), np.float32)).writeto(cube)
    with pytest.raises(UserError, match=r"3-D cube of shape \(3, 20, 20\)"):
        read_image(cube)
    flat = tmp_path / "flat.fits"
    fits.PrimaryHDU(np.ones((1, 20, 30), np.float32)).writeto(flat)
    img = read_image(flat)
    assert img.data.shape == (20, 30)
    out = tmp_path / "o.fits"
    write_image(out, img.data, img, history=[], keywords={})
    with fits.open(out) as hl:
        assert hl[0].header["NAXIS"] == 3 and hl[0].data.shape == (1, 20, 30)


def test_fits_without_image_data(tmp_path):
    src = tmp_path / "empty.fits"
    fits.PrimaryHDU().writeto(src)
    with pytest.raises(UserError, match="no image data"):
        read_image(src)


def test_fits_gz_round_trip(tmp_path):
    src = tmp_path / "in.fits.gz"
    fits.PrimaryHDU(np.ones((10, 12), np.float32)).writeto(src)
    img = read_image(src)
    out = tmp_path / "out.fits.gz"
    write_image(out, img.data * 3, img, history=[], keywords={})
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_image(out).data, 3.0)
    # The gzip header's file name (FNAME, what `gunzip -N` restores) is the output's, less
    # .gz, not the temporary file's the archive was written as.
    header = out.read_bytes()
    assert header[3] & 0x08 and header[10:].split(b"\0", 1)[0] == b"out.fits"


@pytest.mark.parametrize(
    "kind, exact", [({"compression_type": "GZIP_2", "quantize_level": 0}, True), ({}, False)]
)
def test_tile_compressed_fits_fz_round_trip(tmp_path, kind, exact):
    # fpack'd frames (DECam, Legacy Survey, Rubin): the CompImageHDU is the science image and
    # the output is compressed the same way; lossy float quantisation is said in HISTORY.
    rng = np.random.default_rng(0)
    data = (100 + rng.normal(0, 5, (32, 40))).astype(np.float32)
    sci = fits.CompImageHDU(data, name="SCI", tile_shape=(16, 40), **kind)
    sci.header["BUNIT"] = "electron"
    src = tmp_path / "c4d_ooi.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), sci]).writeto(src)
    assert [p.name for _, p in resolve_io(str(tmp_path), str(tmp_path / "out"))] == [src.name]
    img = read_image(src)
    assert img.hdu_index == 1 and img.extra["compressed"]
    out = tmp_path / "out" / src.name
    write_image(out, img.data + 1, img, history=["hello"], keywords={})
    with fits.open(out) as hl:
        assert isinstance(hl[1], fits.CompImageHDU)
        assert hl[1].compression_type == sci.compression_type
        assert tuple(hl[1].tile_shape) == (16, 40) and hl[1].header["BUNIT"] == "electron"
        history = str(hl[1].header["HISTORY"])
        if exact:
            np.testing.assert_array_equal(hl[1].data, img.data + 1)
            assert "lossy" not in history
        else:
            np.testing.assert_allclose(hl[1].data, img.data + 1, atol=1.0)
            assert "(RICE_1): floats quantised to noise/16, lossy" in history


def test_fz_output_of_an_uncompressed_input_is_refused(tmp_path):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(src)
    img = read_image(src)
    assert not img.extra["compressed"]
    with pytest.raises(UserError, match=r"tile-compressed \(\.fz\).*name the output \.fits"):
        write_image(tmp_path / "out.fits.fz", img.data, img, history=[], keywords={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fits"]


@pytest.mark.parametrize("cut", [1000, 2880 + 100])
def test_corrupt_fits(tmp_path, cut):
    good = tmp_path / "good.fits"
    fits.PrimaryHDU(np.ones((50, 50), np.float32)).writeto(good)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(good.read_bytes()[:cut])
    with pytest.raises(UserError, match=r"cannot read .*bad\.fits.*valid FITS file"):
        read_image(bad)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(UserError, match="input file not found"):
        read_image(tmp_path / "nope.fits")
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    with pytest.raises(UserError, match=r"\.fits\.gz"):
        read_image(txt)


def test_random_bytes_png(tmp_path):
    bad = tmp_path / "noise.png"
    bad.write_bytes(os.urandom(500))
    with pytest.raises(UserError, match="cannot read .*valid PNG file"):
        read_image(bad)


def test_png_gray_rgba_and_16bit(tmp_path):
    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    img = read_image(tmp_path / "g8.png")
    assert img.data.shape == (20, 30) and img.source_dtype == np.uint8
    np.testing.assert_array_equal(img.data, g8)

    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    assert img.data.shape == (20, 30, 3)
    np.testing.assert_array_equal(img.data, rgba[..., :3])

    g16 = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.source_dtype == np.uint16
    np.testing.assert_array_equal(img.data, g16.astype(np.float32))
    out = tmp_path / "out" / "g16.png"
    write_image(out, img.data + 0.4, img, history=[], keywords={})
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, g16)


def test_png_uint8_write_rounds_and_clips(tmp_path):
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    restored = img.data.copy()
    restored[0, 0] = -20
    restored[0, 1] = 300
    restored[0, 2] = 10.6
    restored[0, 3] = np.nan
    write_image(tmp_path / "b.png", restored, img, history=[], keywords={})
    back = np.asarray(Image.open(tmp_path / "b.png"))
    assert back.dtype == np.uint8
    assert list(back[0, :4]) == [0, 255, 11, 0]


def test_jpeg_round_trip(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=100)
    img = read_image(tmp_path / "a.jpg")
    assert img.format == "jpeg" and img.data.shape == (16, 16, 3)
    write_image(tmp_path / "b.jpeg", img.data, img, history=[], keywords={})
    back = np.asarray(Image.open(tmp_path / "b.jpeg"))
    assert back.dtype == np.uint8 and abs(int(back[8, 8, 0]) - 200) <= 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_tiff_round_trip_keeps_dtype(tmp_path, dtype):
    arr = (np.arange(24 * 18).reshape(24, 18) % 200).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(img.data, arr.astype(np.float32))
    write_image(tmp_path / "b.tiff", img.data, img, history=[], keywords={})
    back = tifffile.imread(tmp_path / "b.tiff")
    expected = np.float32 if np.dtype(dtype).kind == "f" else dtype
    assert back.dtype == expected
    np.testing.assert_array_equal(back, arr.astype(expected))


def test_tiff_rgb_and_stack(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 60000, (10, 12, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    img = read_image(tmp_path / "rgb.tif")
    assert img.data.shape == (10, 12, 3)
    write_image(tmp_path / "o.tif", img.data, img, history=[], keywords={})
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif"), rgb)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 10, 12), np.uint16))
    with pytest.raises(UserError, match="stack"):
        read_image(tmp_path / "stack.tif")


def test_npy(tmp_path):
    arr = np.random.default_rng(0).random((9, 11))
    arr[2, 3] = np.nan
    np.save(tmp_path / "a.npy", arr)
    img = read_image(tmp_path / "a.npy")
    assert img.data.dtype == np.float32 and np.isnan(img.data[2, 3])
    write_image(tmp_path / "b.npy", img.data, img, history=[], keywords={})
    back = np.load(tmp_path / "b.npy")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, img.data)
    np.save(tmp_path / "c.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(UserError, match="shape"):
        read_image(tmp_path / "c.npy")


def test_write_refuses_input_path_and_format_change(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 4)))
    img = read_image(tmp_path / "a.npy")
    before = _digest(tmp_path / "a.npy")
    with pytest.raises(UserError, match="output path equals the input"):
        write_image(tmp_path / "." / "a.npy", img.data, img, history=[], keywords={})
    with pytest.raises(UserError, match="keep the input format"):
        write_image(tmp_path / "a.png", img.data, img, history=[], keywords={})
    assert _digest(tmp_path / "a.npy") == before


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.ones((4, 4)))
    img = read_image(tmp_path / "a.npy")

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "save", boom)
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError):
        write_image(out_dir / "b.npy", img.data, img, history=[], keywords={})
    assert list(out_dir.iterdir()) == []


def test_resolve_io_file_folder_glob(tmp_path):
    for name in ("b.npy", "a.npy", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    pairs = resolve_io(str(tmp_path / "a.npy"), str(tmp_path / "out.npy"))
    assert pairs == [(tmp_path / "a.npy", tmp_path / "out.npy")]
    pairs = resolve_io(str(tmp_path), str(tmp_path / "res"))
    assert [(p.name, q) for p, q in pairs] == [
        ("a.npy", tmp_path / "res" / "a.npy"),
        ("b.npy", tmp_path / "res" / "b.npy"),
    ]
    assert not (tmp_path / "res").exists()  # created only when something is written
    pairs = resolve_io(str(tmp_path / "*.npy"), str(tmp_path / "res"))
    assert len(pairs) == 2
    with pytest.raises(UserError, match="pattern"):
        resolve_io(str(tmp_path / "*.fits"), str(tmp_path / "res"))
    with pytest.raises(UserError, match="looks like a single file"):
        resolve_io(str(tmp_path / "*.npy"), str(tmp_path / "out.npy"))
    with pytest.raises(UserError, match="output path equals the input"):
        resolve_io(str(tmp_path / "a.npy"), str(tmp_path / "a.npy"))
    with pytest.raises(UserError, match="output path equals the input"):
        resolve_io(str(tmp_path), str(tmp_path))
    with pytest.raises(UserError, match="input file not found"):
        resolve_io(str(tmp_path / "zzz.npy"), str(tmp_path / "res"))
    with pytest.raises(UserError, match="no supported images"):
        resolve_io(str(tmp_path / "sub"), str(tmp_path / "res"))


def test_write_that_fails_midway_keeps_the_old_output_and_leaves_no_part(tmp_path, monkeypatch):
    # A writer that has already written part of the file when it fails: the destination must
    # keep its previous content and no partial file may remain.
    import astrorestore.io.images as images

    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    img = read_image(tmp_path / "a.npy")
    out = tmp_path / "out" / "b.npy"
    write_image(out, img.data, img, history=[], keywords={})
    before = _digest(out)

    def half_writer(tmp, restored, source):
        with open(tmp, "wb") as handle:
            handle.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setitem(images._WRITERS, "npy", half_writer)
    with pytest.raises(UserError, match="cannot write"):
        write_image(out, img.data * 2, img, history=[], keywords={})
    assert _digest(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.npy"]


def test_fits_scaled_output_rescales_wcs_and_keeps_header(tmp_path):
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [20.0, 15.0]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    header = wcs.to_header()
    header["FILTER"] = "F200W"
    data = np.random.default_rng(0).random((30, 40)).astype(np.float32)
    fits.writeto(tmp_path / "in.fits", data, header)
    source = read_image(tmp_path / "in.fits")
    big = data.repeat(2, axis=0).repeat(2, axis=1)
    write_image(tmp_path / "out.fits", big, source, history=["x2"], keywords={}, scale=2)
    with fits.open(tmp_path / "out.fits") as hdul:
        out_header, out_data = hdul[0].header, hdul[0].data
    assert out_data.shape == (60, 80) and out_header["FILTER"] == "F200W"
    before, after = WCS(header), WCS(out_header)
    # The same sky position lies at the matching place of the finer grid (pixel corners agree).
    for x, y in ((0.0, 0.0), (39.0, 29.0), (12.5, 7.25)):
        sky = before.pixel_to_world_values(x, y)
        fine = after.world_to_pixel_values(*sky)
        np.testing.assert_allclose(fine, ((x + 0.5) * 2 - 0.5, (y + 0.5) * 2 - 0.5), atol=1e-6)


def test_fits_cd_matrix_is_rescaled(tmp_path):
    from astrorestore.io.fits import rescale_wcs

    header = fits.Header(
        {
            "CRPIX1": 10.0,
            "CRPIX2": 5.0,
            "CD1_1": -2e-4,
            "CD1_2": 1e-5,
            "CD2_1": 1e-5,
            "CD2_2": 2e-4,
            "NAXIS": 2,
        }
    )
    rescale_wcs(header, 4)
    assert header["CD1_1"] == pytest.approx(-5e-5) and header["CD1_2"] == pytest.approx(2.5e-6)
    assert header["CRPIX1"] == pytest.approx(38.5) and "CDELT1" not in header


def _jwst_like(path, shape=(24, 32), checksum=False):
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "JWST"
    data = np.full(shape, 5.0, np.float32)
    sci = fits.ImageHDU(data, name="SCI")
    sci.header["CTYPE1"], sci.header["CRVAL1"] = "RA---TAN", 53.1
    dq = np.zeros(shape, np.uint32)
    dq[2, 3] = 1 << 11  # HOT: unusable
    dq[4, 5] = 1 << 2  # JUMP_DET: usable
    hdus = [primary, sci, fits.ImageHDU(np.ones(shape, np.float32), name="ERR")]
    hdus += [fits.ImageHDU(dq, name="DQ")]
    hdus += [
        fits.ImageHDU(np.ones(shape, np.float32), name=n) for n in ("VAR_POISSON", "VAR_RNOISE")
    ]
    hdus += [fits.ImageHDU(np.ones(shape, np.float32), name="WHT")]
    fits.HDUList(hdus).writeto(path, checksum=checksum)
    return data, dq


def test_fits_output_keeps_input_noise_under_new_names_and_nans_dq_flagged_pixels(tmp_path):
    src = tmp_path / "in_cal.fits"
    data, dq = _jwst_like(src)
    img = read_image(src)
    restored = img.data * 0.5
    write_image(tmp_path / "out.fits", restored, img, history=[], keywords={})
    assert restored[2, 3] == 2.5  # the caller's array is not touched
    with fits.open(tmp_path / "out.fits") as hl:
        names = [h.name for h in hl]
        assert names == ["PRIMARY", "SCI", "ERR_IN", "DQ", "VAR_POISSON_IN", "VAR_RNOISE_IN", "WHT"]
        for name in ("ERR_IN", "VAR_POISSON_IN", "VAR_RNOISE_IN"):
            assert hl[name].header["ARINPUT"] is True
            assert "noise of the input" in str(hl[name].header["COMMENT"])
            np.testing.assert_array_equal(hl[name].data, 1.0)  # the values themselves are kept
        np.testing.assert_array_equal(hl["DQ"].data, dq)  # DQ passes through unchanged
        out = hl["SCI"].data
        assert np.isnan(out[2, 3]) and np.isnan(out).sum() == 1  # HOT is NaN, JUMP_DET is not
        assert out[4, 5] == 2.5
        assert hl["SCI"].header["CRVAL1"] == 53.1
        history = str(hl["SCI"].header["HISTORY"])
        assert "1 pixels flagged in DQ" in history and "ERR_IN" in history


def test_fits_output_checksums_stay_valid(tmp_path):
    # JWST products carry CHECKSUM/DATASUM in every HDU: the renamed noise HDUs' headers
    # change, so their CHECKSUM is recomputed; the science HDU's stale ones are dropped.
    src = tmp_path / "in_cal.fits"
    _jwst_like(src, checksum=True)
    img = read_image(src)
    write_image(tmp_path / "out.fits", img.data * 0.5, img, history=[], keywords={})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(tmp_path / "out.fits", checksum=True) as hl:
            assert "CHECKSUM" in hl["ERR_IN"].header and "CHECKSUM" not in hl["SCI"].header
            assert [h.data.sum() for h in hl[1:]]


def test_fits_output_renames_only_the_restored_chip(tmp_path):
    src = tmp_path / "flt.fits"
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        hdus.append(fits.ImageHDU(np.ones((16, 16), np.float32), name="SCI", ver=ver))
        hdus.append(fits.ImageHDU(np.ones((16, 16), np.float32), name="ERR", ver=ver))
    fits.HDUList(hdus).writeto(src)
    img = read_image(src, hdu=3)  # SCI,2
    write_image(tmp_path / "out.fits", img.data, img, history=[], keywords={})
    with fits.open(tmp_path / "out.fits") as hl:
        assert [(h.name, h.ver) for h in hl[1:]] == [
            ("SCI", 1),
            ("ERR", 1),
            ("SCI", 2),
            ("ERR_IN", 2),
        ]


@pytest.mark.parametrize("name", ["b.npy", "b.fits"])
def test_written_output_has_umask_permissions_not_the_temp_files(tmp_path, name):
    # The temporary file is owner-only (0600); the output must be readable like any file the
    # user writes (0644 under umask 022), e.g. by collaborators on a shared cluster.
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    img = read_image(tmp_path / "a.npy")
    if name.endswith(".fits"):
        fits.writeto(tmp_path / "a.fits", img.data)
        img = read_image(tmp_path / "a.fits")
    old = os.umask(0o022)
    try:
        write_image(tmp_path / "out" / name, img.data, img, history=[], keywords={})
    finally:
        os.umask(old)
    assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o644


def test_a_colour_fits_output_reads_back_as_colour(tmp_path):
    # A colorizer's FITS output (a (3, H, W) cube) was refused as a cube by the next infer.py
    # (e.g. super-resolving the colorized frame); it is marked and read back as (H, W, 3).
    grey = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    fits.writeto(tmp_path / "g.fits", grey)
    colour = np.stack([grey, 2 * grey, 3 * grey], axis=-1)
    write_image(tmp_path / "c.fits", colour, read_image(tmp_path / "g.fits"), ["colorized"], {})
    back = read_image(tmp_path / "c.fits")
    assert back.data.shape == (20, 24, 3)
    np.testing.assert_array_equal(back.data, colour)
    # Written again (a colour model on a colour frame): still one marked colour image.
    write_image(tmp_path / "d.fits", back.data + 1, back, [], {})
    np.testing.assert_array_equal(read_image(tmp_path / "d.fits").data, colour + 1)
    # A grey output of a colour frame is not marked; an unmarked 3-plane cube stays refused.
    write_image(tmp_path / "e.fits", grey, back, [], {})
    assert read_image(tmp_path / "e.fits").data.shape == (20, 24)
    fits.writeto(tmp_path / "cube.fits", np.stack([grey] * 3))
    with pytest.raises(UserError, match="3-D cube"):
        read_image(tmp_path / "cube.fits")
