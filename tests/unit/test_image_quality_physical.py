"""PSNR/SSIM with a stated data range, and the empty-sky noise ratio."""

from __future__ import annotations

import numpy as np
import pytest

from astrorestore.metrics import image_quality as quality
from tests.unit.test_evaluation_detection import gaussian_stars


def field():
    rng = np.random.default_rng(0)
    xy = np.array([[20.0, 20.0], [60.0, 40.0], [40.0, 70.0]])
    truth = gaussian_stars(96, xy, np.array([5e3, 2e4, 1e3]), fwhm=2.5, sky=20.0)
    noisy = truth + rng.normal(0, 5.0, truth.shape)
    return truth, noisy


def test_data_range_is_the_truth_percentile_range():
    truth, _ = field()
    lo, hi = np.percentile(truth, [0.5, 99.5])
    assert quality.data_range(truth) == pytest.approx(hi - lo)
    assert quality.data_range(np.full((8, 8), 3.0)) > 0  # flat truth: floored, not zero


def test_metrics_state_their_range_and_rank_images():
    truth, noisy = field()
    smooth = truth + 0.3 * (noisy - truth)
    result = quality.quality_metrics(smooth, noisy, truth, fwhm=2.5)
    assert result["data_range_e"] == pytest.approx(quality.data_range(truth))
    assert "percentile" in result["data_range_definition"]
    assert result["restored"]["psnr"] == pytest.approx(
        result["noisy"]["psnr"] + 20 * np.log10(1 / 0.3)
    )
    assert result["restored"]["ssim"] > result["noisy"]["ssim"]
    assert result["normalised"]["restored"]["psnr"] > result["normalised"]["noisy"]["psnr"]
    assert result["empty_sky_noise_ratio"] == pytest.approx(0.3, rel=1e-6)
    assert result["empty_sky_pixels"] > 0.5 * truth.size


def test_empty_sky_mask_keeps_away_from_sources():
    truth, _ = field()
    mask = quality.empty_sky_mask(truth, fwhm=2.5)
    assert not mask[20, 20] and not mask[20, 24]  # the star and 4 px (< 2 FWHM + core) away
    assert mask[90, 5]


def test_nan_pixels_in_truth_are_ignored():
    truth, noisy = field()
    truth[:5] = np.nan
    result = quality.quality_metrics(noisy, noisy, truth, fwhm=2.5)
    assert np.isfinite(result["restored"]["psnr"]) and np.isfinite(result["restored"]["ssim"])
    assert result["empty_sky_noise_ratio"] == pytest.approx(1.0)


def test_empty_sky_around_a_sky_map_keeps_the_bright_side_of_a_gradient():
    truth, _ = field()
    ramp = np.linspace(-10.0, 10.0, truth.shape[1])[None, :]  # sky 10 -> 30 e- left to right
    truth = truth + ramp
    sky_map = 20.0 + ramp + 0.02  # a map as measured on the noisy frame, slightly off
    median = quality.empty_sky_mask(truth, fwhm=2.5)
    mapped = quality.empty_sky_mask(truth, fwhm=2.5, sky_map=sky_map)
    assert median[:, 80:].mean() < 0.05  # around the median, the bright side is "source light"
    assert mapped[:, 80:].mean() > 0.9 and mapped[:, :10].mean() > 0.9
    assert not mapped[20, 20] and not mapped[40, 60]  # stars are still excluded
    result = quality.quality_metrics(truth, truth + 1.0, truth, fwhm=2.5, sky_map=sky_map)
    assert result["empty_sky_pixels"] == int(mapped.sum())
