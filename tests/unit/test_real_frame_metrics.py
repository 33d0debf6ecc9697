"""Measures of the real-frame benchmark: region bias, robust sigma, errors in electrons, stars."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from astrorestore.metrics.bias import mad_sigma, region_means, worst_region_bias
from astrorestore.metrics.electrons import (
    psnr_electrons,
    robust_range,
    sky_error_rms,
    ssim_electrons,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    path = REPO / "bench" / "bench_real_frames.py"
    spec = importlib.util.spec_from_file_location("bench_real_frames", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worst_region_bias_finds_a_known_offset_region() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, (128, 160))
    restored = truth + rng.normal(0, 2.0, truth.shape)
    restored[32:48, 96:112] += 1.5  # one 16x16 region lifted by 1.5 e- (0.75 sigma)
    result = worst_region_bias(restored, truth, sigma=2.0)
    # The region's mean error is 1.5 + noise of 2 / 16 = 0.125 e-.
    assert result["worst"] == pytest.approx(0.75, abs=4 * 0.125 / 2.0)
    assert result["worst_signed"] > 0
    assert (result["x"], result["y"]) == (104.0, 40.0)
    darker = worst_region_bias(truth - 0.5, truth, sigma=2.0)
    assert darker["worst_signed"] == pytest.approx(-0.25) and darker["worst_electrons"] == -0.5


def test_region_means_drop_partial_regions_and_respect_the_mask() -> None:
    error = np.zeros((40, 40))
    error[:16, :16] = 3.0
    error[0:16, 16:32] = np.nan
    means = region_means(error, 16)
    assert means.shape == (2, 2)  # the 8-px edge strip is dropped
    assert means[0, 0] == 3.0 and math.isnan(means[0, 1])
    mask = np.ones((40, 40), bool)
    mask[:16, :12] = False  # 3/4 of the region masked: too few pixels left to count
    assert math.isnan(region_means(error, 16, mask)[0, 0])


def test_mad_sigma_ignores_smooth_structure() -> None:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:256, :256]
    scene = 500.0 * np.exp(-((x - 128.0) ** 2 + (y - 128.0) ** 2) / 5000.0) + 0.3 * x
    assert mad_sigma(scene + rng.normal(0, 4.0, scene.shape)) == pytest.approx(4.0, rel=0.05)


def test_errors_in_electrons_use_the_robust_range() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.0, 100.0, (64, 64))
    truth[0, 0] = 1e6  # one hot pixel must not set the range
    low, high = robust_range(truth)
    assert high < 101.0 and low >= 0.0
    restored = truth + 1.0
    assert psnr_electrons(restored, truth) == pytest.approx(20 * np.log10(high - low), rel=1e-6)
    assert ssim_electrons(truth, truth) == pytest.approx(1.0)
    sky = np.zeros((64, 64), bool)
    sky[10:20] = True
    assert sky_error_rms(restored, truth, sky) == pytest.approx(1.0)


def test_electrons_scale_puts_the_injected_noise_at_the_asked_ratio(bench) -> None:
    k = bench.electrons_scale(sky_above_pedestal=14.0, own_sigma=2.0, ratio=3.0)
    injected = math.sqrt(k * 14.0 + bench.READ_NOISE**2)
    assert injected == pytest.approx(3.0 * k * 2.0)


def test_star_fidelity_reads_a_known_flux_loss(bench) -> None:
    y, x = np.mgrid[:96, :96].astype(float)
    sky = np.full((96, 96), 10.0)
    truth = sky.copy()
    for cx, cy, flux in ((30, 30, 5000.0), (60, 50, 3000.0), (40, 70, 8000.0)):
        truth += flux / (2 * np.pi * 1.5**2) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.5)
    truth[80, 80] = 1e5  # a clipped/saturated pixel is not taken as a star
    xy = bench.bright_sources(truth, sky, sigma=1.0)
    assert {tuple(p) for p in xy.astype(int)} == {(30, 30), (60, 50), (40, 70)}
    assert bench.star_fidelity(truth, truth, sky, xy) == pytest.approx((0.0, 1.0))
    dimmer = sky + 0.9 * (truth - sky)
    flux_bias, peak = bench.star_fidelity(dimmer, truth, sky, xy)
    assert flux_bias == pytest.approx(-0.1) and peak == pytest.approx(0.9)


def test_vignetted_frame_dims_towards_the_corners_only(bench) -> None:
    falloff = bench.vignetting((101, 141))
    assert falloff[50, 70] == pytest.approx(1.0)
    assert falloff[0, 0] == pytest.approx(bench.VIGNETTE_CORNER) == falloff[-1, -1]
    assert np.all(np.diff(falloff[50, 70:]) < 0)  # falls monotonically outwards
    truth = np.full((101, 141), 5.0)
    whole = (slice(None), slice(None))
    assert bench.vignetted("xdf", truth, truth.shape, whole) is truth
    vig = bench.vignetted("xdf_vig", truth, truth.shape, whole)
    assert vig[50, 70] == pytest.approx(5.0 + bench.VIGNETTED_SKY_E)
    # The corners far below the frame's median sky: > 5 of its Poisson + read noise sigmas.
    sky = np.median(vig)
    assert sky - vig[0, 0] > 5 * math.sqrt(sky + bench.READ_NOISE**2)
    # A crop keeps the whole frame's falloff (the smoke run's corner is its darkest part).
    corner = bench.vignetted(
        "xdf_vig", truth[-20:, -20:], truth.shape, (slice(81, None), slice(121, None))
    )
    assert np.array_equal(corner, vig[-20:, -20:])


def test_the_n2n_pair_is_a_second_independent_draw_of_the_same_truth(bench) -> None:
    truth = np.full((64, 64), 100.0)
    first = bench.draw(truth, "xdf", 0)
    second = bench.draw(truth, "xdf", 0, exposure=2)
    assert np.array_equal(second, bench.draw(truth, "xdf", 0, exposure=2))  # reproducible
    assert not np.array_equal(second, bench.draw(truth, "xdf", 1, exposure=2))
    assert not np.array_equal(first, bench.draw(truth, "m13", 0))  # each frame its own draw
    assert abs(np.corrcoef((first - truth).ravel(), (second - truth).ravel())[0, 1]) < 0.05
    assert (second - truth).std() == pytest.approx(math.sqrt(100.0 + bench.READ_NOISE**2), rel=0.05)


def test_the_residual_figure_is_written(bench, tmp_path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 50, (48, 48))
    noisy = truth + rng.normal(0, 2.0, truth.shape)
    path = tmp_path / "figures" / "frame_r3.png"
    bench.write_figure(path, truth, noisy, {"a": truth, "b": noisy * 0.9}, 2.0, "frame r=3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["frame_r3.png"]  # no partial file left
