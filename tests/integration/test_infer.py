"""Inference through the real entry point (infer.py) with a checkpoint trained by train.py."""

import hashlib
import json

import numpy as np
import pytest
import torch
from astropy.io import fits

from tests.integration.conftest import restore_sci


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def best_ckpt(trained_run):
    _, run_dir, _ = trained_run
    return json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]


def test_fits_round_trip_keeps_header_and_reduces_noise(run, best_ckpt, noisy_fits, tmp_path):
    path, noisy, truth, header = noisy_fits
    before = sha(path)
    out = tmp_path / "restored.fits"
    result = run(
        "infer.py",
        f"ckpt_path={best_ckpt}",
        f"input={path}",
        f"output={out}",
        "tile_size=64",
        "overlap=16",
        "progress=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sha(path) == before  # input untouched
    with fits.open(out) as hdul:
        assert len(hdul) == 2 and hdul[0].header["TELESCOP"] == "SIMULATED"
        sci = hdul["SCI"]
        restored = sci.data.astype(np.float64)
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1", "FILTER"):
            assert sci.header[key] == header[key]
        assert sci.header["ARMODEL"] == "supervised"
        assert any("astrorestore" in str(line) for line in sci.header["HISTORY"])
    assert restored.shape == noisy.shape
    sky = np.abs(truth - 20.0) < 0.5
    assert np.std((restored - truth)[sky]) < 0.8 * np.std((noisy - truth)[sky])


def test_nan_pixels_stay_nan_without_spreading(run, best_ckpt, tmp_path):
    rng = np.random.default_rng(1)
    image = (20 + rng.normal(0, 5, (64, 64))).astype(np.float32)
    image[30, 30] = np.nan
    image[5, 40] = np.inf
    path = tmp_path / "frame.npy"
    np.save(path, image)
    out = tmp_path / "out.npy"
    result = run(
        "infer.py",
        f"ckpt_path={best_ckpt}",
        f"input={path}",
        f"output={out}",
        "tile_size=32",
        "overlap=8",
        "progress=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    restored = np.load(out)
    assert np.isnan(restored[30, 30]) and np.isnan(restored[5, 40])
    assert np.isfinite(restored).sum() == image.size - 2
    assert abs(restored[29:32, 29:32][np.isfinite(restored[29:32, 29:32])].mean() - 20) < 5


def test_rgb_png_luminance_path(run, best_ckpt, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    rgb = np.clip(rng.normal(100, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    result = run(
        "infer.py",
        f"ckpt_path={best_ckpt}",
        f"input={tmp_path / 'a.png'}",
        f"output={tmp_path / 'out'}",
        "tile_size=32",
        "overlap=8",
        "progress=false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == rgb.shape and out.dtype == np.uint8


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    return lines[0]


def test_missing_input(run, best_ckpt, tmp_path):
    line = one_error_line(
        run(
            "infer.py",
            f"ckpt_path={best_ckpt}",
            f"input={tmp_path / 'nope.fits'}",
            f"output={tmp_path / 'o.fits'}",
        )
    )
    assert "nope.fits" in line
    assert not (tmp_path / "o.fits").exists()


def test_missing_checkpoint(run, noisy_fits, tmp_path):
    path = noisy_fits[0]
    line = one_error_line(
        run(
            "infer.py",
            f"ckpt_path={tmp_path / 'x.ckpt'}",
            f"input={path}",
            f"output={tmp_path / 'o.fits'}",
        )
    )
    assert "checkpoint not found" in line


def test_foreign_checkpoint(run, noisy_fits, tmp_path):
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, foreign)
    line = one_error_line(
        run(
            "infer.py",
            f"ckpt_path={foreign}",
            f"input={noisy_fits[0]}",
            f"output={tmp_path / 'o.fits'}",
        )
    )
    assert "not an astrorestore checkpoint" in line
    assert not (tmp_path / "o.fits").exists()


def test_cube_rejected(run, best_ckpt, tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 64, 64), np.float32)).writeto(path)
    line = one_error_line(
        run("infer.py", f"ckpt_path={best_ckpt}", f"input={path}", f"output={tmp_path / 'o.fits'}")
    )
    assert "cube" in line


def test_image_smaller_than_tile(run, best_ckpt, tmp_path):
    # A cut-out smaller than tile_size is restored in the largest tile that fits it.
    small = np.random.default_rng(0).normal(20.0, 5.0, (44, 40)).astype(np.float32)
    fits.PrimaryHDU(small).writeto(tmp_path / "small.fits")
    args = [f"ckpt_path={best_ckpt}", f"input={tmp_path / 'small.fits'}", "tile_size=64"]
    result = run("infer.py", *args, f"output={tmp_path / 'o.fits'}")
    assert result.returncode == 0, result.stderr
    with fits.open(tmp_path / "o.fits") as hdul:
        assert hdul[0].data.shape == small.shape
        assert "tile_size=40 (fitted to the image)" in "\n".join(
            map(str, hdul[0].header["HISTORY"])
        )
    # ... but not one smaller than the network's smallest tile
    fits.PrimaryHDU(small[:1]).writeto(tmp_path / "thin.fits")
    args[1] = f"input={tmp_path / 'thin.fits'}"
    line = one_error_line(run("infer.py", *args, f"output={tmp_path / 'o2.fits'}"))
    assert "smallest tile" in line
    assert not (tmp_path / "o2.fits").exists()


def test_output_equal_to_input(run, best_ckpt, noisy_fits):
    path = noisy_fits[0]
    before = sha(path)
    line = one_error_line(
        run("infer.py", f"ckpt_path={best_ckpt}", f"input={path}", f"output={path}", "tile_size=64")
    )
    assert "output" in line
    assert sha(path) == before


def test_folder_run_skips_a_corrupt_frame_and_resumes(run, best_ckpt, noisy_fits, tmp_path):
    # A survey run: the corrupt frame is recorded in the manifest and skipped, the good one is
    # restored, and the run ends with one error line naming the bad frame. Rerun with the same
    # command: the good frame is not restored again.
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.fits").write_bytes(noisy_fits[0].read_bytes())
    (folder / "b.fits").write_bytes(noisy_fits[0].read_bytes()[:4000])
    out = tmp_path / "out"
    args = (
        "infer.py",
        f"ckpt_path={best_ckpt}",
        f"input={folder}",
        f"output={out}",
        "tile_size=64",
    )
    line = one_error_line(run(*args))
    assert "1 of 2 frame(s) failed" in line and "b.fits" in line
    rows = {row["input"].rsplit("/", 1)[-1]: row for row in manifest_rows(out)}
    assert rows["a.fits"]["status"] == "done" and rows["b.fits"]["status"] == "failed"
    assert "b.fits" in rows["b.fits"]["error"]
    with fits.open(out / "a.fits") as hdul:
        assert (
            hdul["SCI"].header["ARINSUM"]
            == hashlib.sha256((folder / "a.fits").read_bytes()).hexdigest()
        )
    stamp = (out / "a.fits").stat().st_mtime_ns
    (folder / "b.fits").unlink()
    result = run(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "a.fits").stat().st_mtime_ns == stamp
    assert [row["status"] for row in manifest_rows(out)] == ["skipped"]


def manifest_rows(folder):
    return json.loads((folder / "manifest.json").read_text())["frames"]


def test_misspelled_key(run):
    line = one_error_line(run("infer.py", "tile_sise=64"))
    assert "tile_size" in line


def _truth_file(tmp_path, truth, name="field.fits"):
    folder = tmp_path / "truth"
    folder.mkdir(exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(truth.astype(np.float32), name="SCI")]).writeto(
        folder / name
    )
    return folder


def test_classical_method_scored_against_truth(run, noisy_fits, tmp_path):
    # No checkpoint: a baseline goes through the same restoration + evaluation path.
    path, noisy, truth, _ = noisy_fits
    truths = _truth_file(tmp_path, truth)
    out, report = tmp_path / "gauss.fits", tmp_path / "report"
    result = run(
        "infer.py",
        "method=gaussian",
        f"input={path}",
        f"output={out}",
        f"truth={truths}",
        f"report={report}",
        "eval.fwhm=2.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((report / "report.json").read_text())
    image = data["images"][0] if "images" in data else data["per_image"][0]
    assert image["name"] == "field.fits"
    assert (report / "summary.md").is_file() and list(report.glob("*.png"))
    with fits.open(out) as hdul:
        restored = hdul["SCI"].data
        assert hdul["SCI"].header["ARMODEL"] == "gaussian"
    sky = truth < 20.5  # a blur flattens star cores; in empty sky it must reduce the noise
    assert np.std((restored - truth)[sky]) < 0.7 * np.std((noisy - truth)[sky])


def test_report_without_truth_uses_the_frames_err_map(run, tmp_path):
    # A JWST frame in MJy/sr carries its own noise map (ERR): the residual is judged by it,
    # not by a gain/read-noise model in electrons that the report then had to disown.
    from tests.unit.fits_factory import write_jwst

    path = tmp_path / "jw_cal.fits"
    write_jwst(path, (96, 96), seed=1)
    with fits.open(path, mode="update") as hdul:  # sky + noise of the ERR map's sigma (1.0)
        hdul["SCI"].data = np.random.default_rng(0).normal(10.0, 1.0, (96, 96)).astype("f4")
    report = tmp_path / "report"
    result = run(
        "infer.py", "method=noisy", f"input={path}", f"output={tmp_path / 'o.fits'}",
        f"report={report}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    image = json.loads((report / "report.json").read_text())["images"][0]
    text = json.dumps(image)
    assert image["settings"]["err_map"] is True
    assert "ERR map" in text and "not electrons" not in text


def test_checkpoint_scored_without_truth(run, best_ckpt, noisy_fits, tmp_path):
    path, *_ = noisy_fits
    report = tmp_path / "report"
    result = run(
        "infer.py",
        f"ckpt_path={best_ckpt}",
        f"input={path}",
        f"output={tmp_path / 'o.fits'}",
        f"report={report}",
        "tile_size=32",
        "overlap=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (report / "summary.md").read_text().lower()
    assert "residual" in text


def test_truth_of_another_shape_fails_before_writing(run, noisy_fits, tmp_path):
    path, _, truth, _ = noisy_fits
    truths = _truth_file(tmp_path, truth[:64, :64])
    out = tmp_path / "o.fits"
    result = run(
        "infer.py",
        "method=median",
        f"input={path}",
        f"output={out}",
        f"truth={truths}",
        f"report={tmp_path / 'r'}",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "shape" in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "r").exists()


def test_bf16_channels_last_matches_fp32_within_the_noise(run, best_ckpt, noisy_fits, tmp_path):
    path, noisy, truth, _ = noisy_fits
    outputs = {}
    exact, fast = ["channels_last=false"], ["precision=bf16", "channels_last=true"]
    for name, switches in (("fp32", exact), ("fast", fast)):
        out = tmp_path / f"{name}.fits"
        outputs[name], header = restore_sci(run, best_ckpt, path, out, *switches)
    assert "bf16" in " ".join(str(line) for line in header["HISTORY"])
    sky = np.abs(truth - 20.0) < 0.5
    change = np.abs(outputs["fast"] - outputs["fp32"])
    assert change.max() > 0
    # bf16 rounding of the network's arithmetic: small against the local noise it removes
    # (measured: 99th percentile ~0.03 sigma; bright cores up to ~0.7 sigma, so fp32 stays default)
    local_sigma = np.sqrt(np.clip(truth, 0, None) + 25.0)
    assert np.percentile(change / local_sigma, 99) < 0.1
    assert np.percentile(change[sky], 99) < 0.05 * np.std((noisy - truth)[sky])
