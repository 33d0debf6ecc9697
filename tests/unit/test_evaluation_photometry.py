"""Aperture photometry, completeness and depth on frames and catalogs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from astrorestore.evaluation import photometry as phot
from tests.unit.test_evaluation_detection import gaussian_stars


def test_noiseless_fluxes_are_recovered_with_known_and_annulus_sky():
    xy = np.array([[30.0, 30.0], [90.3, 40.7], [50.5, 95.2]])
    flux = np.array([1e3, 1e4, 1e5])
    image = gaussian_stars(128, xy, flux, fwhm=2.5, sky=20.0).astype(np.float32)
    # 5 sigma of the Gaussian PSF holds all but ~4e-6 of the light.
    radius = 5 * 2.5 / 2.3548
    known = phot.aperture_fluxes(image, xy, radius, sky=20.0)
    annulus = phot.aperture_fluxes(image, xy, radius)
    sky_map = phot.aperture_fluxes(image, xy, radius, sky=np.full(image.shape, 20.0))
    assert known == pytest.approx(flux, rel=1e-3)
    assert annulus == pytest.approx(flux, rel=1e-3)
    assert sky_map == pytest.approx(known, rel=1e-6)


def test_flux_errors_bias_and_robust_scatter():
    true = np.full(1001, 100.0)
    measured = true * (1 + np.linspace(-0.1, 0.1, 1001)) + 2.0  # +2 % bias
    errors = phot.flux_errors(measured, true)
    assert errors["bias"] == pytest.approx(0.02, abs=1e-9)
    # MAD of a uniform on [-0.1, 0.1] is 0.05.
    assert errors["scatter"] == pytest.approx(1.4826 * 0.05, rel=1e-2)
    assert phot.flux_errors(np.array([]), np.array([]))["bias"] is None


def test_magnitudes_and_completeness_curve():
    assert phot.magnitudes(np.array([1.0, 100.0, 0.0]), 25.0)[:2] == pytest.approx([25.0, 20.0])
    assert np.isnan(phot.magnitudes(np.array([0.0]))[0])
    mags = np.linspace(15, 25, 200)
    matched = mags < 21.0
    curve = phot.completeness_curve(mags, matched, phot.magnitude_edges(mags, 1.0))
    by_centre = dict(zip(curve["center"], curve["completeness"], strict=True))
    assert by_centre[17.5] == 1.0 and by_centre[23.5] == 0.0


def test_magnitude_at_completeness_finds_the_step():
    # Dense sources so the 10-source running window is narrow (0.05 mag) around the step.
    mags = np.linspace(15, 25, 2000)
    limit = phot.magnitude_at_completeness(mags, mags < 21.0, 0.9)
    assert limit == pytest.approx(21.0, abs=0.05)
    # One missed bright star does not decide the depth.
    matched = mags < 21.0
    matched[0] = False
    assert phot.magnitude_at_completeness(mags, matched, 0.9) == pytest.approx(21.0, abs=0.05)
    assert phot.magnitude_at_completeness(mags, np.zeros(2000, bool)) is None


def test_depth_skips_thresholds_with_low_purity():
    mags = np.linspace(15, 25, 2000)
    deep, shallow = mags < 23.0, mags < 20.0
    # The deep threshold has purity 50 %: it must not count.
    depth = phot.depth_at_purity(
        mags, [deep, shallow], [int(deep.sum()) * 2, 1000], [int(deep.sum()), 5]
    )
    assert depth["threshold_index"] == 1
    assert depth["magnitude"] == pytest.approx(20.0, abs=0.05)
    assert phot.depth_at_purity(mags, [deep], [0], [0])["magnitude"] is None
