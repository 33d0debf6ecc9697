"""Residual analysis without truth: pure noise passes, structure at sources is flagged."""

from __future__ import annotations

import numpy as np
import pytest

from astrorestore.evaluation.residual import radial_power_spectrum, residual_analysis
from tests.unit.test_evaluation_detection import gaussian_stars

SKY, READ = 50.0, 5.0


def star_field(seed: int = 0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(20, 236, (12, 2))
    clean = gaussian_stars(256, xy, np.full(12, 2e4), fwhm=3.0, sky=SKY)
    noisy = rng.poisson(clean) + rng.normal(0, READ, clean.shape)
    return noisy, clean, xy


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    noise = np.random.default_rng(1).normal(0, 2.0, (256, 256))
    spectrum = radial_power_spectrum(noise)
    assert np.allclose(spectrum["power"], 4.0, rtol=0.15)
    assert spectrum["frequency"][-1] < 0.5


def test_perfect_restoration_leaves_pure_noise_and_no_warnings():
    noisy, clean, xy = star_field()
    result = residual_analysis(noisy, clean, gain=1.0, read_noise=READ, source_xy=xy, fwhm=3.0)
    assert result["variance_ratio"] == pytest.approx(1.0, abs=0.05)
    assert abs(result["mean_in_sigma"]) < 4
    assert result["low_high_power_ratio"] == pytest.approx(1.0, abs=0.15)
    assert result["sources"]["n_flagged"] == 0
    assert result["warnings"] == []


def test_err_map_replaces_the_noise_model():
    noisy, clean, _ = star_field()
    err = np.sqrt(clean + READ**2)
    result = residual_analysis(noisy, clean, err=2 * err)
    assert result["variance_ratio"] == pytest.approx(0.25, abs=0.03)
    assert result["noise_reference"] == "ERR map"
    assert any("noise left" in w for w in result["warnings"])


def test_flux_taken_from_stars_is_reported_as_structure():
    noisy, clean, xy = star_field()
    # A "restoration" that removes the noise but also shaves 20 % off every star.
    shaved = SKY + 0.8 * (clean - SKY)
    result = residual_analysis(noisy, shaved, gain=1.0, read_noise=READ, source_xy=xy, fwhm=3.0)
    assert result["sources"]["n_flagged"] == 12
    assert result["sources"]["median_fraction"] == pytest.approx(0.2, abs=0.02)
    assert any(w.startswith("structure at sources: 12 of 12") for w in result["warnings"])


def test_blurring_shows_as_low_frequency_power():
    from scipy.ndimage import gaussian_filter

    noisy, _, _ = star_field()
    result = residual_analysis(noisy, gaussian_filter(noisy, 3.0), gain=1.0, read_noise=READ)
    assert result["low_high_power_ratio"] > 1.5
    assert any("low frequencies" in w for w in result["warnings"])


def test_a_zero_flux_reshaping_of_every_star_shows_in_the_stacked_residual():
    from tests.unit.test_evaluation_detection import gaussian_stars

    rng = np.random.default_rng(5)
    xy = rng.uniform(20, 236, (30, 2)).round()  # stars on pixel centres: one stamp phase
    fluxes = np.full(30, 2e4)
    clean = gaussian_stars(256, xy, fluxes, fwhm=3.0, sky=SKY)
    noisy = rng.poisson(clean) + rng.normal(0, READ, clean.shape)
    result = residual_analysis(noisy, clean, gain=1.0, read_noise=READ, source_xy=xy, fwhm=3.0)
    assert result["sources"]["shape"]["n"] == 30
    assert result["sources"]["shape"]["chi2_dof"] < 1.5
    assert not any("reshaped" in w for w in result["warnings"])
    # The same stars, broadened (FWHM 3 -> 3.6 px): same fluxes, cores lowered, wings raised.
    broad = gaussian_stars(256, xy, fluxes, fwhm=3.6, sky=SKY)
    result = residual_analysis(noisy, broad, gain=1.0, read_noise=READ, source_xy=xy, fwhm=3.0)
    shape = result["sources"]["shape"]
    assert shape["chi2_dof"] > 5 and shape["largest_at"] == [0, 0]  # the core was lowered
    assert shape["largest_mean_sigma"] > 0  # input - output > 0 at the core
    assert any("sources reshaped" in w for w in result["warnings"])
