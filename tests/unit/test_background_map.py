"""The sky map: exact inverse, follows gradients and vignetting, refuses frames without sky."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrorestore.data.normalization.background import (
    BackgroundMap,
    default_box_size,
    estimate_background,
)
from astrorestore.errors import UserError
from astrorestore.metrics.bias import worst_region_bias


def _stars(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    y, x = np.mgrid[:n, :n].astype(float)
    scene = np.zeros((n, n))
    for _ in range(count):
        cx, cy = rng.uniform(0, n, 2)
        flux = 10 ** rng.uniform(2.0, 4.0)
        scene += flux / (2 * np.pi * 2.25) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.5)
    return scene


def _noisy(truth: np.ndarray, rng: np.random.Generator, read: float = 3.0) -> np.ndarray:
    return rng.poisson(np.clip(truth, 0, None)).astype(float) + rng.normal(0, read, truth.shape)


def test_default_box_size_scales_with_the_frame() -> None:
    assert default_box_size((256, 256)) == 16
    assert default_box_size((1024, 2048)) == 32
    assert default_box_size((8192, 8192)) == 128


def test_subtract_and_add_are_exact_inverses_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    frame = rng.normal(100.0, 5.0, (128, 128))
    bkg = estimate_background(frame, box_size=16)
    x32 = rng.normal(0.0, 1e4, (2, 128, 128)).astype(np.float32)
    flat = bkg.subtract(x32)
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(bkg.add(flat).astype(np.float32), x32)
    np.testing.assert_array_equal(bkg.add(flat), x32.astype(np.float64))  # bit-exact
    x64 = rng.normal(0.0, 1e4, (128, 128))
    np.testing.assert_allclose(bkg.add(bkg.subtract(x64)), x64, rtol=0, atol=1e-11)
    tensor = torch.from_numpy(x32)
    out = bkg.subtract(tensor)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert torch.equal(bkg.add(out).float(), tensor)
    np.testing.assert_array_equal(out.numpy(), flat)


def test_negative_and_below_sky_values_are_kept() -> None:
    rng = np.random.default_rng(1)
    frame = rng.normal(-20.0, 3.0, (128, 128))  # an over-subtracted, negative sky
    frame[40:60, 40:60] -= 30.0  # a region far below it
    bkg = estimate_background(frame, box_size=16)
    assert abs(np.median(bkg.background) + 20.0) < 1.0
    flat = bkg.subtract(frame)
    assert flat[40:60, 40:60].mean() < -20.0  # the dip is data, not clipped to the sky
    np.testing.assert_allclose(bkg.add(flat), frame, atol=1e-9)


def test_planar_gradient_is_recovered_under_stars() -> None:
    rng = np.random.default_rng(2)
    n = 256
    y, x = np.mgrid[:n, :n].astype(float)
    sky = 50.0 + 0.1 * x - 0.05 * y  # 50 -> 75 e- across, a 25 e- ramp
    frame = _noisy(sky + _stars(rng, n, 60), rng)
    bkg = estimate_background(frame)
    sigma = float(np.sqrt(np.median(sky) + 9.0))
    bias = worst_region_bias(bkg.background, sky, sigma)
    assert bias["worst"] < 0.5, bias
    assert np.sqrt(np.mean((bkg.background - sky) ** 2)) < 0.15 * sigma
    assert np.median(bkg.rms) == pytest.approx(sigma, rel=0.1)


def test_steep_vignetting_is_followed_into_the_corners() -> None:
    rng = np.random.default_rng(3)
    n = 512
    y, x = np.mgrid[:n, :n].astype(float)
    r = np.hypot(x - n / 2, y - n / 2) / (n / 2 * np.sqrt(2))
    vignetting = 1.0 / (1.0 + (r / 0.7) ** 6)  # corners at 10 % of the centre
    sky = 60.0 * vignetting
    frame = _noisy(sky + _stars(rng, n, 80) * vignetting, rng)
    bkg = estimate_background(frame)
    corner = (bkg.background - sky)[:16, :16].mean()
    sigma = float(np.sqrt(np.median(sky) + 9.0))
    assert abs(corner) < 0.4 * sigma, corner  # a 1/8-of-the-frame box gives ~2 sigma here
    assert worst_region_bias(bkg.background, sky, sigma)["worst"] < 0.7


def test_nan_pixels_are_ignored_and_stay_nan() -> None:
    rng = np.random.default_rng(4)
    frame = rng.normal(30.0, 2.0, (128, 128))
    frame[10:30, 70:100] = np.nan
    frame[5, :] = np.inf
    valid = np.ones(frame.shape, bool)
    valid[100:, :20] = False
    frame[100:, :20] = 1e6  # garbage where the user says the frame is not valid
    bkg = estimate_background(frame, valid=valid, box_size=16)
    assert np.all(np.isfinite(bkg.background))
    assert np.abs(bkg.background - 30.0).max() < 1.0
    out = bkg.subtract(frame)
    assert np.isnan(out[20, 80]) and np.isfinite(out[60, 60])


def test_too_little_sky_is_a_one_line_user_error() -> None:
    frame = np.full((128, 128), np.nan)
    frame[:8, :8] = 10.0
    with pytest.raises(UserError, match="cannot estimate the background") as info:
        estimate_background(frame, box_size=16)
    assert "\n" not in str(info.value) and "box_size" in str(info.value)
    valid = np.zeros((128, 128), bool)
    valid[:20, :] = True  # one row of boxes only: fewer than 9 sky boxes
    with pytest.raises(UserError, match="sky"):
        estimate_background(np.ones((128, 128)), valid=valid, box_size=32)


def test_wrong_shapes_are_user_errors() -> None:
    bkg = estimate_background(np.random.default_rng(5).normal(5, 1, (64, 64)), box_size=16)
    assert isinstance(bkg, BackgroundMap)
    with pytest.raises(UserError, match="background map is 64x64"):
        bkg.subtract(np.zeros((32, 32)))
    with pytest.raises(UserError, match="box_size"):
        estimate_background(np.zeros((64, 64)), box_size=100)
    with pytest.raises(UserError, match="2-D"):
        estimate_background(np.zeros((2, 64, 64)))
