"""PSF-model star cores: the frame's own PSF, fitted on its stars, denoises their cores."""

import numpy as np
import pytest
import torch

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.simulation.scene import render_field
from astrorestore.errors import UserError
from astrorestore.postprocess import build_postprocess
from astrorestore.postprocess.psf_cores import PSFCores, PSFModel, describe

SKY = 20.0


def field(seed=0, size=160, **psf):
    psf = psf or {"psf": "moffat", "psf_fwhm": 1.6, "psf_beta": 3.0}
    truth, catalog = render_field(
        size,
        np.random.default_rng(seed),
        sky=SKY,
        n_stars=30,
        n_galaxies=0,
        n_bright_stars=12,
        saturation=None,
        **psf,
    )
    noise = PoissonGaussianNoise(gain=1.0, read_noise=5.0)
    noisy = noise.draw(torch.from_numpy(truth), torch.Generator().manual_seed(seed)).numpy()
    return truth, noisy, catalog


def test_unit_flux_and_pixel_integration():
    offsets = np.arange(-20, 21, dtype=float)
    for model in (PSFModel("moffat", 1.0, 3.0), PSFModel("airy", 1.2, e1=0.2)):
        dx = np.broadcast_to(offsets[None, :] - 0.3, (41, 41))
        dy = np.broadcast_to(offsets[:, None] + 0.2, (41, 41))
        stamp = model(dx, dy)
        assert stamp.sum() == pytest.approx(1.0, abs=0.03)  # Airy wings beyond 20 px: ~1.5 %
        # the brightest pixel is the one the source sits in
        assert np.unravel_index(np.argmax(stamp), stamp.shape) == (20, 20)


def test_cores_of_the_input_are_denoised_by_the_fitted_psf():
    truth, noisy, _ = field()
    stage = PSFCores(gain=1.0)
    # The identity "restoration": every core keeps its shot noise, as the bounded net leaves it.
    out = stage(noisy, noisy)
    core = truth - SKY > 300
    before = np.mean((noisy - truth)[core] ** 2)
    after = np.mean((out - truth)[core] ** 2)
    assert after < 0.5 * before, (before, after)  # measured 0.36
    assert stage.info["psf_profile"] == "moffat"
    assert stage.info["psf_fwhm"] == pytest.approx(1.6, rel=0.05)
    # the sky is not touched: nothing changes far from the fitted stars
    assert np.array_equal(out[truth - SKY < 1.0], noisy[truth - SKY < 1.0].astype(np.float32))


def test_diffraction_limited_psf_is_recognised():
    truth, noisy, _ = field(seed=3, psf="airy", psf_fwhm=2.0)
    stage = PSFCores(gain=1.0)
    out = stage(noisy, noisy)
    assert stage.info["psf_profile"] == "airy"
    assert stage.info["psf_fwhm"] == pytest.approx(2.0, rel=0.05)
    core = truth - SKY > 300
    assert np.mean((out - truth)[core] ** 2) < np.mean((noisy - truth)[core] ** 2)


def test_a_galaxy_is_not_replaced_by_a_star():
    truth, noisy, catalog = field(seed=5)
    yy, xx = np.mgrid[: truth.shape[0], : truth.shape[1]]
    # a bright, resolved blob (sigma 3 px) where there are no stars
    x0, y0 = 80.0, 80.0
    distance = np.hypot(catalog["x"] - x0, catalog["y"] - y0)
    assert distance.min() > 12, "test field: move the galaxy away from the stars"
    blob = 3000.0 * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 9.0)
    rng = np.random.default_rng(1)
    noisy = noisy + rng.poisson(blob).astype(np.float32)
    out = PSFCores(gain=1.0)(noisy, noisy)
    near = np.hypot(xx - x0, yy - y0) < 6
    assert np.array_equal(out[near], noisy[near])


def test_too_few_stars_leave_the_frame_as_restored():
    rng = np.random.default_rng(0)
    noisy = rng.normal(SKY, 5.0, (96, 96)).astype(np.float32)
    restored = np.full_like(noisy, SKY)
    stage = PSFCores(gain=1.0)
    out = stage(noisy, restored)
    assert np.array_equal(out, restored)
    assert "fewer than" in describe(stage.info)


def test_masked_pixels_stay_masked_and_weigh_nothing():
    truth, noisy, _ = field()
    noisy[10:20, 10:20] = np.nan
    out = PSFCores(gain=1.0)(noisy, noisy)
    assert np.isnan(out[10:20, 10:20]).all()
    assert np.isfinite(out[30:, 30:]).all()


def from_config(settings, gain):
    """The stage ``postprocess.psf_cores: settings`` builds (None: off)."""
    return build_postprocess({"psf_cores": settings}, gain=gain).psf_cores


def test_config_block():
    assert from_config(None, 1.0) is None
    assert build_postprocess(None).psf_cores is None
    stage = from_config({"gain": None, "min_snr": 10}, 2.0)
    assert stage.gain == 2.0 and stage.min_snr == 10.0
    with pytest.raises(UserError, match="postprocess.psf_cores.snr is not a setting"):
        from_config({"snr": 3}, 1.0)
    with pytest.raises(UserError, match="postprocess.psf_cores.gain"):
        from_config({"gain": 0}, 1.0)
    with pytest.raises(UserError, match="profiles"):
        from_config({"profiles": ["gauss"]}, 1.0)
    with pytest.raises(UserError, match="model_variance=0"):
        from_config({"model_variance": 0}, 1.0)
    assert from_config({"model_variance": 2}, 1.0).model_variance == 2.0
    with pytest.raises(UserError, match="same shape"):
        PSFCores()(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(UserError, match="sky noise is 0"):
        PSFCores()(np.ones((32, 32)), np.ones((32, 32)))


def test_units_do_not_matter_but_a_wrong_gain_is_caught():
    truth, noisy, _ = field(seed=2)
    in_electrons = PSFCores(gain=1.0)(noisy, noisy)
    # the same frame in units 1000x smaller (as MJy/sr values are), with the matching gain
    scaled = PSFCores(gain=1000.0)(noisy * 1e-3, noisy * 1e-3) * 1e3
    np.testing.assert_allclose(scaled, in_electrons, rtol=1e-4, atol=1e-2)
    # ... and with gain 1 there: the shot noise is overestimated 1000x, which the bright stars'
    # fits show; the frame is left as it was, with a note saying what to pass
    stage = PSFCores(gain=1.0)
    out = stage(noisy * 1e-3, noisy * 1e-3)
    assert np.array_equal(out, (noisy * 1e-3).astype(np.float32))
    assert "psf_cores.gain" in describe(stage.info)
