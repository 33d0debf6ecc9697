"""data=jwst through the real entry points: the embedded demo frames, a folder of exposure pairs,
train -> infer on a frame (header, WCS, input noise and DQ handling), and bad folders."""

import json

import numpy as np
import pytest
from astropy.io import fits

from astrorestore.data.sources.demo_frames import write_demo_frames
from tests.unit.fits_factory import write_hst, write_jwst, write_plain

FAST = ["debug=fast_dev_run", "logger=csv"]
# Small crops and tiles for the 128 px frames the tests write.
SMALL = [
    "data.tile_size=128",
    "data.stride=64",
    "data.patch_size=32",
    "data.batch_size=4",
    "data.val_patches=8",
]
DEEP = ["model=supervised", "data=jwst", "data.deep_as_clean=true", "loss=l1"]


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    """Three pointings, two exposures each (independent noise, one WCS per pointing)."""
    folder = tmp_path_factory.mktemp("pairs")
    write_demo_frames(folder, n_pointings=3, size=128, seed=5)
    return folder


def test_no_root_trains_on_the_embedded_demo_frames(run, tmp_path):
    result = run("train.py", *DEEP, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "writing simulated JWST-like frames" in log
    assert len(list((tmp_path / "data" / "jwst_demo").glob("*_cal.fits"))) == 10
    assert "in electron" in log  # MJy/sr converted with PHOTMJSR, XPOSURE and the demo gain


def test_noise2noise_on_real_exposure_pairs(run, pairs_folder):
    result = run(
        "train.py",
        "pairing=noise2noise",
        "data=jwst",
        f"data.root={pairs_folder}",
        "data.pairs=true",
        "loss=l1",
        "curriculum=none",
        *SMALL,
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/loss" in result.stdout and "val/psnr" not in result.stdout  # no truth


def test_train_then_infer_a_frame_keeps_header_wcs_and_flags(run, tmp_path, pairs_folder):
    result = run(
        "train.py",
        *DEEP,
        f"data.root={pairs_folder}",
        "data.gain=2.0",
        "debug=tiny",
        "trainer.max_epochs=1",
        "curriculum=none",
        "test=false",
        "logger=csv",
        *SMALL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next((tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt"))
    frame = sorted(pairs_folder.glob("*_cal.fits"))[0]
    out = tmp_path / "restored.fits"
    result = run(
        "infer.py", f"ckpt_path={ckpt}", f"input={frame}", f"output={out}", "tile_size=64",
        "overlap=8", "progress=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with fits.open(frame) as src, fits.open(out) as dst:
        for key in ("CTYPE1", "CRVAL1", "CRVAL2", "CRPIX1", "CDELT1", "CDELT2", "BUNIT"):
            assert dst["SCI"].header[key] == src["SCI"].header[key]
        assert dst["SCI"].header["ARMODEL"] == "supervised"
        assert "ERR" not in dst and dst["ERR_IN"].header["ARINPUT"] is True
        np.testing.assert_array_equal(dst["ERR_IN"].data, src["ERR"].data)
        np.testing.assert_array_equal(dst["DQ"].data, src["DQ"].data)
        flagged = (src["DQ"].data & ((1 << 0) | (1 << 11))) > 0
        restored = dst["SCI"].data
        assert np.isnan(restored[flagged]).all() and np.isfinite(restored[~flagged]).all()
        # back in the input's units (MJy/sr): the sky level is where it was
        sky_in = np.nanmedian(src["SCI"].data)
        assert np.nanmedian(restored) == pytest.approx(sky_in, rel=0.1)


def _empty(folder):
    (folder / "notes.txt").write_text("no FITS here")


def _unreadable(folder):
    (folder / "broken_cal.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)


def _no_image(folder):
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(folder / "table.fits")


def _all_nan(folder):
    write_plain(folder / "nan.fits", np.full((96, 96), np.nan, np.float32))


def _mixed_units(folder):
    write_jwst(folder / "a_cal.fits", (96, 96))  # MJy/sr, no gain: stays MJy/sr
    write_hst(folder / "b_flt.fits", (96, 96))  # electrons


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_empty, "holds no FITS files"),
        (_unreadable, "not a readable FITS file"),
        (_no_image, "has no image HDU"),
        (_all_nan, "no valid pixel"),
        (_mixed_units, "mixes units"),
    ],
    ids=["empty", "unreadable", "no-image", "all-nan", "mixed-units"],
)
def test_bad_folders_fail_in_one_line_through_train_py(run, tmp_path, make, message):
    folder = tmp_path / "frames"
    folder.mkdir()
    make(folder)
    result = run("train.py", *DEEP, f"data.root={folder}", *FAST)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]


def test_noise2void_on_real_frames_then_infer_with_a_report(run, tmp_path):
    # The command users quote first, on the embedded JWST-like frames (no data.root), then
    # infer.py on one of those frames with a report of what can be known without a truth.
    result = run(
        "train.py", "model=n2v", "data=jwst", "debug=tiny", "trainer.max_epochs=1", "test=false",
        "logger=csv", *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["monitor"], summary["mode"]) == ("val/loss", "min")
    assert not any("val/psnr" in row for row in summary["history"])  # no truth, no PSNR
    frame = sorted((tmp_path / "data" / "jwst_demo").glob("*_cal.fits"))[0]
    report = tmp_path / "report"
    result = run(
        "infer.py", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"input={frame}",
        f"output={tmp_path / 'restored.fits'}", "tile_size=64", "overlap=8", "progress=false",
        f"report={report}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    text = json.dumps(data).lower()
    assert "residual" in text and "sky" in text
    # The frames are in MJy/sr: the report says so instead of labelling them electrons (only
    # the noise model's line speaks of electrons: its gain is in e- per data unit).
    lines = (report / "summary.md").read_text().splitlines()
    assert '"unit": "mjy/sr"' in text
    assert not [line for line in lines if " e-" in line and not line.startswith("- noise model:")]
    assert any(line.startswith("- noise model:") and "e-/unit" in line for line in lines)
    with fits.open(tmp_path / "restored.fits") as hdul:
        assert hdul["SCI"].header["ARMODEL"] == "n2v"


@pytest.mark.parametrize(("n_frames", "size"), [(1, 160), (2, 96)], ids=["one-frame", "two"])
def test_noise2void_on_one_or_two_frames_trains_and_skips_the_missing_test(
    run, tmp_path, n_frames, size
):
    # Two frames leave no pointing for a test split; one 160 px frame is cut into a training
    # and a validation band, with no room for a test band. Training and validation run, the
    # test after training is skipped with a note (both used to stop before training, exit 2).
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(n_frames):
        write_plain(folder / f"f{i}.fits", np.random.default_rng(i).normal(50, 5, (size, size)))
    result = run(
        "train.py", "model=n2v", "data=fits", f"data.root={folder}", "debug=tiny",
        "trainer.max_epochs=1", "logger=csv", "data.tile_size=64", "data.stride=32", *SMALL[2:],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "the test after training is skipped" in log and "test/loss" not in log
    assert "LPIPS skipped" not in log  # no truth: LPIPS is never computed, nothing to warn about
    assert list((tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt"))
