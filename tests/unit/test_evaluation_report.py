"""evaluate_image / write_report / cheap_metrics end to end on a small simulated field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from astrorestore.data.simulation.scene import render_field
from astrorestore.errors import UserError
from astrorestore.evaluation import cheap_metrics, evaluate_image, write_report
from astrorestore.evaluation.baselines import gaussian

READ = 5.0


@pytest.fixture(scope="module")
def field():
    truth, catalog = render_field(128, np.random.default_rng(9100), n_stars=40, n_galaxies=5)
    rng = np.random.default_rng(1)
    noisy = (rng.poisson(truth) + rng.normal(0, READ, truth.shape)).astype(np.float32)
    return truth, noisy, gaussian(noisy, sigma=1.0), catalog


@pytest.fixture(scope="module")
def with_truth(field):
    truth, noisy, restored, catalog = field
    return evaluate_image(restored, noisy, truth, catalog=catalog, name="field", read_noise=READ)


def _has_nan(value) -> bool:
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return isinstance(value, float) and math.isnan(value)


def test_truth_evaluation_has_every_section(with_truth):
    result = with_truth
    for key in ("quality", "detection", "depth", "photometry", "psf", "astrometry", "residual"):
        assert key in result
    assert result["quality"]["data_range_e"] > 0
    det = result["detection"]
    assert det["reference"] == "catalog" and det["recall_on"].startswith("point sources (kind 0)")
    # Thresholded at the noisy frame's sigma, the noiseless truth invents nothing.
    assert det["truth"]["n_spurious"] == 0 and det["truth"]["n_recovered"] > 0
    assert det["noisy"]["n_recovered"] > 0
    assert (
        det["restored"]["n_matched"] + det["restored"]["n_spurious"]
        == det["restored"]["n_detected"]
    )
    assert 0 < result["psf"]["restored"]["peak_ratio_median"] < 1  # blurring lowers peaks
    assert result["psf"]["restored"]["fwhm_ratio_median"] > 1.1  # ... and widens stars
    assert result["psf"]["noisy"]["fwhm_ratio_median"] == pytest.approx(1.0, abs=0.1)
    # Bright stars are complete in both; the per-magnitude tables are there for the report.
    assert result["completeness"]["noisy"]["completeness"][0] == 1.0
    assert result["completeness"]["restored"]["completeness"][0] == 1.0
    assert result["photometry"]["restored"]["residual_vs_mag"]["center"]
    assert result["astrometry"]["noisy"]["offset_vs_mag"]["median"]
    sources = result["tables"]["sources"]
    assert len(sources["x"]) == det["n_reference"]


def test_report_files_and_keys(tmp_path, field, with_truth):
    truth, noisy, restored, _ = field
    no_truth = evaluate_image(restored, noisy, name="real", read_noise=READ)
    folder = write_report([with_truth, no_truth], tmp_path / "report", title="test")
    report = json.loads((folder / "report.json").read_text())
    assert [image["name"] for image in report["images"]] == ["field", "real"]
    assert {"mean", "pooled"} <= set(report["aggregate"])
    assert "depth_gain_mag" in report["aggregate"]["pooled"]
    for name in report["files"]:
        assert (folder / name).is_file(), name
    for png in (
        "precision_recall.png",
        "prf_vs_threshold.png",
        "flux_scatter.png",
        "flux_residual_vs_mag.png",
        "completeness_vs_mag.png",
        "centroid_offset_vs_mag.png",
        "residual.png",
    ):
        assert png in report["files"]
    header = (folder / "sources_field.csv").read_text().splitlines()[0]
    assert header.startswith("x,y,kind,counted,mag,flux_truth")
    summary = (folder / "summary.md").read_text()
    assert "data range" in summary and "Goals met" in summary
    assert not _has_nan(report)
    # The folder gets the umask's permissions, not the owner-only ones of a temporary folder.
    assert folder.stat().st_mode & 0o077 == 0o777 & ~_umask() & 0o077
    # Writing again replaces the folder whole and leaves no temporary folders behind.
    write_report([no_truth], folder)
    assert json.loads((folder / "report.json").read_text())["images"][0]["name"] == "real"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_no_sources_is_reported_not_a_nan_table(tmp_path):
    rng = np.random.default_rng(2)
    truth = np.full((64, 64), 20.0, np.float32)
    noisy = (truth + rng.normal(0, READ, truth.shape)).astype(np.float32)
    result = evaluate_image(noisy, noisy, truth, name="empty")
    assert any("no sources found in the truth" in w for w in result["warnings"])
    assert result["detection"]["n_reference"] == 0
    folder = write_report([result], tmp_path / "r")
    assert not _has_nan(json.loads((folder / "report.json").read_text()))
    assert "nan" not in (folder / "sources_empty.csv").read_text().lower()
    no_truth = evaluate_image(noisy, noisy, name="blank")
    assert any("no sources found in the noisy input" in w for w in no_truth["warnings"])


def test_shape_mismatch_is_a_user_error(field):
    truth, noisy, restored, _ = field
    with pytest.raises(UserError, match=r"truth shape \(64, 64\) differs from the restored"):
        evaluate_image(restored, noisy, truth[:64, :64])
    with pytest.raises(UserError, match="noisy input shape"):
        evaluate_image(restored, noisy[:, :100])


def test_nan_truth_is_masked_and_said(field):
    truth, noisy, restored, catalog = field
    holed = truth.copy()
    holed[:10, :10] = np.nan
    result = evaluate_image(restored, noisy, holed, catalog=catalog, read_noise=READ)
    assert any("NaN/inf pixels" in w and "masked" in w for w in result["warnings"])
    assert np.isfinite(result["quality"]["restored"]["psnr"])
    assert np.isfinite(result["residual"]["variance_ratio"])


def test_empty_result_list_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="folder empty"):
        write_report([], tmp_path / "r")


def test_cheap_metrics_track_a_good_and_a_bad_restoration(field):
    truth, noisy, restored, _ = field
    perfect = cheap_metrics(truth, truth, noisy)
    assert perfect["f1"] == 1.0
    assert perfect["flux_bias"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["peak_ratio"] == pytest.approx(1.0)
    blurred = cheap_metrics(restored, truth, noisy)
    assert blurred["peak_ratio"] < 0.9 and blurred["flux_bias"] < 0


def test_a_frame_not_in_electrons_is_labelled_in_its_unit_and_warned_about_once(tmp_path):
    rng = np.random.default_rng(0)
    noisy = (0.02 + 0.005 * rng.standard_normal((64, 64))).astype(np.float32)
    restored = np.full_like(noisy, 0.02)
    result = evaluate_image(restored, noisy, unit="MJy/sr")
    assert result["settings"]["unit"] == "MJy/sr"
    unit_warnings = [w for w in result["warnings"] if "not electrons" in w]
    assert len(unit_warnings) == 1
    # The electron noise model would call this residual "noise left in the output": not said.
    assert not any("residual variance" in w for w in result["warnings"])
    text = (write_report([result], tmp_path / "report") / "summary.md").read_text()
    assert "MJy/sr" in text and " e-" not in text
    electrons = evaluate_image(restored * 1000, noisy * 1000)
    assert not any("not electrons" in w for w in electrons["warnings"])


def _umask():
    import os

    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_nan_input_pixels_are_masked_against_the_truth_too(field):
    # Bad pixels of the input stay NaN in the output; every figure against the truth must
    # skip them (the asinh-space PSNR/SSIM and the empty-sky noise ratio came out NaN).
    truth, noisy, restored, catalog = field
    holed, holed_restored = noisy.copy(), restored.copy()
    holed[60:70, 60:70] = np.nan
    holed_restored[60:70, 60:70] = np.nan
    result = evaluate_image(holed_restored, holed, truth, catalog=catalog, read_noise=READ)
    assert any(w.startswith("input has 100 NaN/inf") for w in result["warnings"])
    quality = result["quality"]
    assert np.isfinite(quality["normalised"]["restored"]["psnr"])
    assert np.isfinite(quality["normalised"]["noisy"]["ssim"])
    assert np.isfinite(quality["empty_sky_noise_ratio"])
    assert not _has_nan(quality)


def test_scores_against_a_truth_carry_the_frames_unit(tmp_path, field):
    # PSNR/SSIM rows and plot axes said "electrons"/"e-" for every frame, even one in MJy/sr.
    truth, noisy, restored, catalog = field
    result = evaluate_image(
        restored, noisy, truth, catalog=catalog, read_noise=READ, unit="MJy/sr", name="jw"
    )
    folder = write_report([result], tmp_path / "report")
    text = (folder / "summary.md").read_text()
    assert "PSNR (dB, MJy/sr)" in text and "SSIM (MJy/sr)" in text
    assert "(dB, electrons)" not in text and "range, electrons" not in text and " e-" not in text


def test_a_sky_map_normaliser_judges_the_empty_sky_around_its_map(field, with_truth, tmp_path):
    from astrorestore.data.normalization.asinh import AsinhNormalizer
    from astrorestore.inference.scoring import Scorer
    from astrorestore.metrics.image_quality import empty_sky_mask

    truth, noisy, restored, _ = field
    normalizer = AsinhNormalizer(background="map")
    scorer = Scorer(tmp_path / "report", {"read_noise": READ})
    scorer.add("field", restored, noisy, truth, normalizer=normalizer)
    mask = empty_sky_mask(truth, 2.5, sky_map=normalizer.sky_map(noisy))
    assert scorer.results[0]["quality"]["empty_sky_pixels"] == int(mask.sum())
    assert int(mask.sum()) != with_truth["quality"]["empty_sky_pixels"]
    with pytest.raises(UserError, match="sky map shape"):
        evaluate_image(restored, noisy, truth, sky_map=noisy[:64])
