"""Galaxy surface-brightness profiles (``evaluation.profiles``) on a synthetic Sersic galaxy."""

import numpy as np
from astropy.modeling.models import Gaussian2D, Sersic2D

from astrorestore.evaluation.profiles import galaxy_annuli, profile_bias_summary, profile_biases

SKY, SIGMA = 20.0, 2.0


def _frame():
    y, x = np.mgrid[:160, :160]
    galaxy = Sersic2D(amplitude=40.0, r_eff=12.0, n=1.0, x_0=70.0, y_0=80.0, ellip=0.4,
                      theta=np.deg2rad(30.0))  # fmt: skip
    star = Gaussian2D(500.0, 140.0, 20.0, 1.2, 1.2)  # compact: never a galaxy to profile
    return SKY + galaxy(x, y) + star(x, y), galaxy


def test_the_galaxy_and_its_shape_are_found_and_the_annuli_follow_its_profile():
    truth, galaxy = _frame()
    annuli = galaxy_annuli(truth, SKY, SIGMA)
    assert annuli and {a.galaxy for a in annuli} == {0}  # the star is excluded as compact
    # Along the major axis the Sersic's value at an annulus's middle is its mean (thin annuli of
    # a smooth profile: within 15 % here); the last annulus is the first above 1 sigma.
    q, theta = 0.6, np.deg2rad(30.0)
    for a in annuli[1:]:
        r = 0.5 * (a.a_in + a.a_out)
        expected = galaxy(70.0 + r * np.cos(theta), 80.0 + r * np.sin(theta))
        assert abs(a.excess / expected - 1.0) < 0.15, (r, a.excess, expected)
    assert annuli[-1].excess >= SIGMA
    outer = annuli[-1].a_out * 1.2 + 2.0  # the next annulus would fall below 1 sigma
    assert galaxy(70.0 + outer * np.cos(theta), 80.0 + outer * np.sin(theta)) < 1.3 * SIGMA
    assert 0.5 < q and annuli[-1].a_out > 2 * 12.0 * q


def test_biases_are_relative_to_the_light_above_the_sky():
    truth, _ = _frame()
    annuli = galaxy_annuli(truth, SKY, SIGMA)
    assert np.allclose(profile_biases(truth, truth, annuli), 0.0)
    brighter = SKY + 1.1 * (truth - SKY)  # 10 % more light, sky unchanged
    assert np.allclose(profile_biases(brighter, truth, annuli), 0.10)
    # A constant added light is a bias growing outwards: worst at the faintest annulus.
    summary = profile_bias_summary(truth + 0.5, truth, annuli)
    assert summary["worst"] == max(0.5 / a.excess for a in annuli)
    assert 0 < summary["median"] < summary["worst"]
    flat = np.full_like(truth, SKY)
    assert galaxy_annuli(flat, SKY, SIGMA) == []
    assert np.isnan(profile_bias_summary(flat, flat, [])["worst"])
