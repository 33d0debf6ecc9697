"""Classical baselines: each lowers the noise of a flat noisy field and keeps a constant image."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from astrorestore.errors import UserError
from astrorestore.evaluation.baselines import (
    BASELINES,
    anscombe,
    get_baseline,
    inverse_anscombe,
)

HAS_BM3D = importlib.util.find_spec("bm3d") is not None
SKY, READ, GAIN = 40.0, 5.0, 2.0
FAST = ["gaussian", "median", "bilateral"]
ALL = FAST + [pytest.param("bm3d_vst", marks=pytest.mark.skipif(not HAS_BM3D, reason="no bm3d"))]


def flat_noisy(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (
        rng.poisson(SKY * GAIN, (size, size)) / GAIN + rng.normal(0, READ, (size, size))
    ).astype(np.float32)


@pytest.mark.parametrize("name", ALL)
def test_baseline_reduces_noise_and_keeps_the_level(name):
    noisy = flat_noisy()
    out = BASELINES[name](noisy, gain=GAIN, read_noise=READ)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert out.std() < 0.7 * noisy.std()
    # Flux is kept: the mean level of a flat field moves by far less than 1 %.
    assert out.mean() == pytest.approx(noisy.mean(), rel=0.005)


@pytest.mark.parametrize("name", ["noisy", *FAST])
def test_baseline_preserves_a_constant_image(name):
    constant = np.full((32, 32), 1234.5, np.float32)
    out = BASELINES[name](constant, gain=GAIN, read_noise=READ)
    np.testing.assert_allclose(out, constant, rtol=1e-6)


def test_anscombe_inverse_is_unbiased_for_poisson_gaussian_noise():
    rng = np.random.default_rng(0)
    read_sigma = 3.0
    for mean in (2.0, 20.0, 500.0):
        counts = rng.poisson(mean, 200_000) + rng.normal(0, read_sigma, 200_000)
        stabilised = anscombe(counts, read_sigma)
        assert stabilised.var() == pytest.approx(1.0, abs=0.08)
        # The mean of the transformed noisy data maps back to the true mean, not below it.
        assert inverse_anscombe(stabilised.mean(), read_sigma) == pytest.approx(
            mean, abs=0.05 * mean + 0.1
        )


def test_bm3d_missing_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(
        UserError, match=r"^bm3d_vst needs the optional package bm3d: pip install bm3d$"
    ):
        BASELINES["bm3d_vst"](flat_noisy(16), gain=1.0, read_noise=5.0)


def test_unknown_method_and_wrong_rank_are_user_errors():
    with pytest.raises(UserError, match="method='wiener' is unknown"):
        get_baseline("wiener")
    with pytest.raises(UserError, match="2-D"):
        BASELINES["gaussian"](np.zeros((2, 8, 8)), gain=1.0, read_noise=5.0)
