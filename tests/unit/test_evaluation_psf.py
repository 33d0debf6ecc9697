"""Star fidelity: FWHM from 2-D fits, peak ratios and centroid offsets on known stars."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.modeling.models import Gaussian2D, Moffat2D

from astrorestore.data.simulation.scene import moffat_alpha
from astrorestore.errors import UserError
from astrorestore.evaluation import psf


def moffat_stamp(fwhm: float, beta: float, size: int = 25, x0: float = 12.3, y0: float = 11.8):
    yy, xx = np.mgrid[:size, :size]
    return Moffat2D.evaluate(xx, yy, 1000.0, x0, y0, moffat_alpha(fwhm, beta), beta)


@pytest.mark.parametrize(("fwhm", "beta"), [(2.5, 3.0), (4.0, 2.5), (1.8, 4.0)])
def test_moffat_fit_recovers_fwhm_within_3_percent(fwhm, beta):
    rng = np.random.default_rng(0)
    stamp = moffat_stamp(fwhm, beta) + 20.0 + rng.normal(0, 0.5, (25, 25))
    fit = psf.fit_star(stamp, "moffat", background=20.0)
    assert fit["fwhm"] == pytest.approx(fwhm, rel=0.03)
    assert (fit["x"], fit["y"]) == pytest.approx((12.3, 11.8), abs=0.02)


def test_gaussian_fit_recovers_fwhm():
    yy, xx = np.mgrid[:21, :21]
    sigma = 3.0 / 2.3548
    stamp = Gaussian2D.evaluate(xx, yy, 500.0, 10.4, 9.7, sigma, sigma, 0.0)
    assert psf.fit_star(stamp, "gaussian")["fwhm"] == pytest.approx(3.0, rel=0.01)
    with pytest.raises(UserError, match="psf model"):
        psf.fit_star(stamp, "airy")


def test_peak_ratio_flags_clipped_cores():
    image = np.zeros((40, 40))
    image[10, 10], image[30, 30] = 1000.0, 500.0
    clipped = np.minimum(image, 400.0)
    xy = np.array([[10.0, 10.0], [30.0, 30.0]])
    assert psf.peak_ratio(image, image, xy, background=0.0)["median"] == 1.0
    ratio = psf.peak_ratio(clipped, image, xy, background=0.0)
    assert ratio["median"] == pytest.approx((0.4 + 0.8) / 2)
    assert ratio["p5"] == pytest.approx(0.4 + 0.05 * 0.4)


def test_centroid_offsets_measure_a_known_shift():
    big = np.zeros((60, 60))
    yy, xx = np.mgrid[:60, :60]
    alpha = moffat_alpha(3.0, 3.0)
    truth = big + Moffat2D.evaluate(xx, yy, 1000.0, 30.0, 30.0, alpha, 3.0)
    moved = big + Moffat2D.evaluate(xx, yy, 1000.0, 30.3, 30.0, alpha, 3.0)
    xy = np.array([[30.0, 30.0]])
    same = psf.centroid_offsets(truth, truth, xy, fwhm=3.0, background=0.0, truth_background=0.0)
    assert same[0] == pytest.approx(0.0, abs=1e-9)
    shift = psf.centroid_offsets(moved, truth, xy, fwhm=3.0, background=0.0, truth_background=0.0)
    assert shift[0] == pytest.approx(0.3, abs=0.02)


def test_bright_isolated_keeps_apertures_inside_the_frame_and_skips_crowded_stars():
    from astrorestore.evaluation.psf import bright_isolated

    xy = np.array([[3.0, 50.0], [50.0, 50.0], [52.0, 51.0], [80.0, 20.0], [96.0, 60.0]])
    flux = np.array([900.0, 800.0, 700.0, 600.0, 500.0])
    kind = np.zeros(5, int)
    # No frame given: only the close pair (50,50)-(52,51) is dropped.
    assert list(bright_isolated(xy, flux, kind, 2.5, 10)) == [0, 3, 4]
    # A 100 x 100 frame with a 15 px margin: the stars at x = 3 and x = 96 are out too.
    assert list(bright_isolated(xy, flux, kind, 2.5, 10, shape=(100, 100), margin=15.0)) == [3]
