"""The frame's noise model: header keys, ERR/VAR maps, a mean-variance fit, never a default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from astropy.io import fits

from astrorestore.data.corruption.noise_estimate import estimate_frame_noise, fit_mean_variance
from astrorestore.errors import UserError


def _poisson_gaussian_frame(gain: float, read_e: float, n: int = 384, seed: int = 0):
    """A frame in DN spanning ~20..3000 DN (smooth structure + stars), with its true level."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n].astype(float)
    level = 20.0 + 3000.0 * (x / n) ** 2 * (0.5 + 0.5 * np.sin(y / 60.0) ** 2)
    for _ in range(100):
        cx, cy = rng.uniform(0, n, 2)
        flux = 10 ** rng.uniform(2.0, 4.5)
        level += flux / (2 * np.pi * 2.25) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.5)
    frame = rng.poisson(level * gain) / gain + rng.normal(0.0, read_e / gain, level.shape)
    return frame, level


@pytest.mark.parametrize(("gain", "read_e"), [(2.0, 5.0), (0.5, 3.0)])
def test_fit_recovers_gain_and_read_noise_within_ten_percent(gain: float, read_e: float) -> None:
    frame, _ = _poisson_gaussian_frame(gain, read_e)
    noise = estimate_frame_noise(frame)
    assert noise.gain == pytest.approx(gain, rel=0.1)
    assert noise.read_noise_electrons == pytest.approx(read_e, rel=0.1)
    assert "fit" in noise.gain_source and "fit" in noise.read_noise_source
    assert noise.gain_uncertainty is not None and noise.gain_uncertainty < 0.1


def test_header_keys_are_read_with_their_units() -> None:
    frame = np.zeros((64, 64))
    header = fits.Header({"GAIN": 2.5, "RDNOISE": 4.0})
    noise = estimate_frame_noise(frame, header)
    assert (noise.gain, noise.read_noise_electrons) == (2.5, pytest.approx(4.0))
    assert noise.read_noise == pytest.approx(4.0 / 2.5)  # frame units (DN)
    assert noise.gain_source == "header GAIN (e-/DN)"
    assert noise.read_noise_source == "header RDNOISE (e-)"
    hst = fits.Header({"ATODGAIN": 1.5, "READNSEA": 3.0, "READNSEB": 5.0})
    noise = estimate_frame_noise(frame, hst)
    assert noise.gain == 1.5 and noise.read_noise_electrons == pytest.approx(4.0)
    assert "READNSEA/READNSEB" in noise.read_noise_source
    other = estimate_frame_noise(frame, {"CCDGAIN": 1.0, "READNOIS": 7.0})
    assert other.gain_source.startswith("header CCDGAIN") and other.read_noise == 7.0
    electrons = estimate_frame_noise(frame, {"BUNIT": "ELECTRONS", "GAIN": 2.0, "RDNOISE": 3.0})
    assert electrons.gain == 1.0 and electrons.gain_source == "BUNIT electrons"
    given = estimate_frame_noise(frame, header, gain=3.0, read_noise_electrons=6.0)
    assert given.gain_source == "given" and given.read_noise == pytest.approx(2.0)
    assert "gain 3 e-/unit (given)" in given.describe()


def test_header_gain_with_fitted_read_noise() -> None:
    frame, _ = _poisson_gaussian_frame(2.0, 5.0, seed=1)
    noise = estimate_frame_noise(frame, {"GAIN": 2.0})
    assert noise.gain_source.startswith("header") and "fit" in noise.read_noise_source
    assert noise.read_noise_electrons == pytest.approx(5.0, rel=0.15)


def test_sigma_follows_the_model_and_the_maps() -> None:
    noise = estimate_frame_noise(np.zeros((8, 8)), {"GAIN": 2.0, "RDNOISE": 4.0})
    level = np.array([[-10.0, 0.0, 100.0]])
    np.testing.assert_allclose(noise.variance(level), [[4.0, 4.0, 54.0]])
    torch.testing.assert_close(
        noise.sigma(torch.tensor([[100.0]], dtype=torch.float64)),
        torch.tensor([[np.sqrt(54.0)]], dtype=torch.float64),
    )
    err = np.full((8, 8), 3.0)
    mapped = estimate_frame_noise(np.zeros((8, 8)), {"GAIN": 2.0, "RDNOISE": 4.0}, err=err)
    np.testing.assert_allclose(mapped.sigma(np.zeros((8, 8))), err)
    assert mapped.sigma_map_source == "ERR map"
    with pytest.raises(UserError, match="noise map is"):
        mapped.sigma(np.zeros((4, 4)))
    with pytest.raises(UserError, match="ERR map is"):
        estimate_frame_noise(np.zeros((8, 8)), err=np.ones((4, 8)))


def test_gain_is_read_exactly_from_a_variance_map() -> None:
    frame, level = _poisson_gaussian_frame(2.0, 5.0, n=256)
    var = level / 2.0 + (5.0 / 2.0) ** 2  # VAR_POISSON + VAR_RNOISE, DN^2
    noise = estimate_frame_noise(frame, var=var)
    assert noise.gain == pytest.approx(2.0, rel=0.03)
    assert noise.read_noise_electrons == pytest.approx(5.0, rel=0.1)
    assert noise.sigma_map_source == "VAR map" and "VAR map" in noise.gain_source


def test_no_header_and_a_flat_frame_is_a_user_error_not_a_default() -> None:
    rng = np.random.default_rng(2)
    flat = rng.normal(100.0, 3.0, (256, 256))  # one level only: gain and read noise degenerate
    with pytest.raises(UserError, match="cannot tell this frame's gain and read noise") as info:
        estimate_frame_noise(flat)
    assert "\n" not in str(info.value) and "gain=" in str(info.value)
    with pytest.raises(UserError, match="read noise"):
        estimate_frame_noise(np.full((16, 16), 5.0), {"GAIN": 2.0})


def test_a_crowded_frame_gets_a_right_gain_or_a_refusal_never_a_wrong_one() -> None:
    rng = np.random.default_rng(3)
    n, gain = 256, 1.0
    y, x = np.mgrid[:n, :n].astype(float)
    level = np.full((n, n), 20.0)
    for _ in range(1500):  # a globular-cluster-like crowd: stars in most 16x16 boxes
        cx, cy = rng.normal(n / 2, n / 4, 2)
        level += 10 ** rng.uniform(2.0, 4.0) / 14.1 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.5)
    frame = rng.poisson(level * gain) / gain + rng.normal(0.0, 3.0, level.shape)
    try:
        noise = estimate_frame_noise(frame)
    except UserError as error:
        assert "mean-variance fit failed" in str(error)
    else:
        assert noise.gain == pytest.approx(gain, rel=0.25)


def test_the_fit_refits_on_the_bins_its_last_outlier_pass_kept():
    # Boxes of gain 2, read variance 9, 47 of them inflated by texture (x1.2-3). The third
    # outlier pass dropped bins and then scored the line with the weights of the bins before:
    # a shape error that failed the fit (seen on the demo frames' ERR maps).
    rng = np.random.default_rng(177)
    levels = rng.uniform(0, 1000, 400)
    variances = (levels / 2 + 9) * rng.chisquare(200, 400) / 200
    inflated = rng.choice(400, rng.integers(20, 80), replace=False)
    variances[inflated] *= rng.uniform(1.2, 3.0, inflated.size)
    slope, intercept, error = fit_mean_variance(levels, variances)
    assert slope == pytest.approx(0.5, rel=0.03) and intercept == pytest.approx(9.0, rel=0.05)
    assert error < 0.05
