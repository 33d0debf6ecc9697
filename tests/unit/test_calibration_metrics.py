"""Calibration: a Gaussian sampler with the right spread covers the truth as often as its
sigma says (68 % / 95 %, less for few samples, as Student's t predicts); a sampler with half
the spread covers much less."""

import math

import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.metrics.calibration import (
    calibration_summary,
    coverage,
    expected_coverage,
    sample_mean_std,
)


def _sampler(n_samples, spread=1.0, seed=0, shape=(1, 64, 64)):
    """Truth and sampler draws from the same Gaussian posterior N(centre, sigma^2), except that
    the sampler's spread is ``spread`` x sigma."""
    generator = torch.Generator().manual_seed(seed)
    centre = torch.rand(shape, generator=generator)
    sigma = 0.05 + 0.1 * torch.rand(shape, generator=generator)
    truth = centre + sigma * torch.randn(shape, generator=generator)
    draws = centre + spread * sigma * torch.randn((n_samples, *shape), generator=generator)
    return draws, truth


def test_expected_coverage_reference_values():
    assert expected_coverage(1.0) == pytest.approx(0.6827, abs=1e-4)
    assert expected_coverage(2.0) == pytest.approx(0.9545, abs=1e-4)
    assert expected_coverage(1.0, 8) == pytest.approx(0.623, abs=2e-3)
    assert expected_coverage(1.0, 10_000) == pytest.approx(0.6827, abs=1e-3)


def test_mean_and_std_per_pixel():
    draws = torch.stack([torch.zeros(2, 3), 2 * torch.ones(2, 3)])
    mean, std = sample_mean_std(draws)
    assert torch.allclose(mean, torch.ones(2, 3))
    assert torch.allclose(std, torch.full((2, 3), math.sqrt(2.0)))


def test_calibrated_sampler_covers_68_and_95_percent():
    draws, truth = _sampler(256)
    summary = calibration_summary(draws, truth)
    assert summary["coverage_1sigma"] == pytest.approx(0.683, abs=0.03)
    assert summary["coverage_2sigma"] == pytest.approx(0.954, abs=0.015)


def test_few_samples_cover_what_student_t_predicts():
    draws, truth = _sampler(8, shape=(1, 128, 128))
    summary = calibration_summary(draws, truth)
    assert summary["n_samples"] == 8
    assert summary["coverage_1sigma"] == pytest.approx(summary["expected_1sigma"], abs=0.02)
    assert summary["coverage_2sigma"] == pytest.approx(summary["expected_2sigma"], abs=0.02)


def test_overconfident_sampler_covers_less():
    draws, truth = _sampler(256, spread=0.5)
    summary = calibration_summary(draws, truth)
    # Half the spread: |z| <= 0.5 and <= 1 for the truth, i.e. 38 % and 68 %.
    assert summary["coverage_1sigma"] == pytest.approx(math.erf(0.5 / math.sqrt(2)), abs=0.03)
    assert summary["coverage_2sigma"] < 0.75


def test_coverage_skips_nan_pixels_and_refuses_bad_input():
    mean, std, truth = torch.zeros(4), torch.ones(4), torch.tensor([0.5, 3.0, float("nan"), 0.0])
    assert float(coverage(mean, std, truth)) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match="2 samples"):
        calibration_summary(torch.zeros(1, 4, 4), torch.zeros(4, 4))
    with pytest.raises(UserError, match="shapes"):
        coverage(torch.zeros(4), torch.ones(4), torch.zeros(5))
