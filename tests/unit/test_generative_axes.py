"""The two-axis procedure on cases with a known answer."""

import math

import pytest
import torch

from astrorestore.data.pairings.colorization import ColorizationPairing
from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
from astrorestore.evaluation.generative import (
    flat_measures,
    forward_model_of,
    generative_axes,
    input_noise,
)
from astrorestore.metrics.calibration import expected_coverage


def _field(seed=0, shape=(2, 1, 64, 64)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_the_truth_scores_perfectly_on_realism_and_at_its_noise_on_consistency():
    truth = _field()
    pairing = SuperResolutionPairing(2, psf_sigma=1.0)
    observed = pairing.degrade(truth) + 0.05 * _field(1, (2, 1, 32, 32))
    axes = generative_axes(truth, truth, observed, pairing.degrade, sigma=0.05)
    assert set(axes) == {"distortion", "realism", "consistency"}
    assert all(abs(axes["realism"][f"power_{b}"] - 1) < 1e-6 for b in ("0-0.125", "0.25-0.5"))
    assert axes["realism"]["patch_swd"] == pytest.approx(0.0, abs=1e-6)
    # Only the input's own noise remains: ~1 sigma.
    assert axes["consistency"]["error_sigma"] == pytest.approx(1.0, abs=0.05)
    # Measured from the truth, the input's noise is that noise.
    sigma, source = input_noise(observed, truth, pairing.degrade)
    assert sigma == pytest.approx(0.05, rel=0.05) and source.startswith("measured")


def test_bicubic_loses_the_top_band_and_contradicts_a_blurred_input():
    truth = _field()
    pairing = SuperResolutionPairing(2, psf_sigma=1.0)
    observed = pairing.degrade(truth) + 0.01 * _field(1, (2, 1, 32, 32))
    bicubic = torch.nn.functional.interpolate(observed, scale_factor=2, mode="bicubic")
    axes = generative_axes(bicubic, truth, observed, pairing.degrade)
    assert axes["realism"]["power_0.25-0.5"] < 0.2
    assert axes["consistency"]["error_sigma"] > 2.0  # it was never blurred again
    flat = flat_measures(axes)
    assert "distortion/psnr" in flat and "consistency/sigma_source" not in flat


def test_a_grey_copy_has_no_colour_and_a_noiseless_input_is_measured_in_8_bit_levels():
    rgb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pairing = ColorizationPairing("ycbcr")
    forward = forward_model_of(pairing)
    grey = forward(rgb)
    axes = generative_axes(grey.expand(-1, 3, -1, -1), rgb, grey, forward)
    assert axes["realism"]["colourfulness_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert axes["realism"]["chroma_swd"] > 0.05
    assert axes["distortion"]["delta_e2000"] > 5
    # The input is noiseless: consistency in 1/255 of the truth's range; Y of grey = grey.
    assert axes["consistency"]["sigma_source"].startswith("noiseless")
    assert axes["consistency"]["error_sigma"] < 0.5


def test_a_calibrated_sampler_covers_what_student_t_predicts():
    # Truth and 8 samples drawn from the same distribution: a calibrated posterior.
    mean = _field(0, (1, 1, 128, 128))
    truth = mean + _field(1, (1, 1, 128, 128))
    samples = mean + _field(2, (8, 1, 1, 128, 128))
    axes = generative_axes(samples.mean(0), truth, samples=samples)
    calibration = axes["calibration"]
    assert calibration["expected_1sigma"] == pytest.approx(expected_coverage(1.0, 8))
    assert abs(calibration["coverage_1sigma"] - calibration["expected_1sigma"]) < 0.03
    assert abs(calibration["coverage_2sigma"] - calibration["expected_2sigma"]) < 0.03
    # Overconfident (spread a third of the truth's): far below.
    narrow = mean + _field(2, (8, 1, 1, 128, 128)) / 3
    low = generative_axes(narrow.mean(0), truth, samples=narrow)["calibration"]
    assert low["coverage_1sigma"] < 0.35
    assert math.isfinite(low["mean_std"])


def test_forward_model_of_a_denoising_pairing_is_none():
    assert forward_model_of(object()) is None
    pairing = SuperResolutionPairing(2)
    assert forward_model_of(pairing) == pairing.degrade
