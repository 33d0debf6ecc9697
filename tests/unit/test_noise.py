"""Tests of the batch noise models."""

from __future__ import annotations

import pytest
import torch

from astrorestore.data.noise import GaussianNoise, PoissonGaussianNoise
from astrorestore.errors import UserError


def _constant(value: float = 100.0, batch: int = 64, size: int = 64) -> torch.Tensor:
    return torch.full((batch, 1, size, size), value)


def test_poisson_gaussian_mean_and_variance() -> None:
    model = PoissonGaussianNoise(gain=2.0, read_noise=5.0)
    noisy, target = model(_constant(), torch.Generator().manual_seed(0))
    assert noisy.dtype == torch.float32 and noisy.shape == target.shape
    resid = (noisy - target).double()
    expected = 100.0 / 2.0 + 25.0
    assert resid.mean().item() == pytest.approx(0.0, abs=0.05)
    assert resid.var().item() == pytest.approx(expected, rel=0.03)


def test_exposure_scales_target_and_variance() -> None:
    model = PoissonGaussianNoise(gain=1.0, read_noise=3.0, exposure_range=(0.5, 4.0))
    noisy, target = model(_constant(), torch.Generator().manual_seed(1))
    t = target[:, 0, 0, 0] / 100.0
    assert torch.all((t >= 0.5 - 1e-6) & (t <= 4.0 + 1e-6))
    assert t.std() > 0.1  # different exposures per image
    # Each image is constant: its own residual variance follows its own exposure.
    var = (noisy - target).double().flatten(1).var(dim=1)
    expected = (100.0 * t + 9.0).double()
    assert torch.allclose(var / expected, torch.ones_like(var), atol=0.12)
    assert (var / expected).mean().item() == pytest.approx(1.0, abs=0.02)


def test_exposure_range_is_mutable_and_validated() -> None:
    model = GaussianNoise(sigma=1.0)
    model.exposure_range = [2.0, 2.0]
    _, target = model(_constant(batch=2, size=8))
    assert torch.allclose(target, torch.full_like(target, 200.0))
    with pytest.raises(UserError, match="exposure_range"):
        model.exposure_range = (2.0, 1.0)


def test_gaussian_sigma() -> None:
    noisy, target = GaussianNoise(sigma=7.0)(_constant(), torch.Generator().manual_seed(0))
    assert torch.equal(target, _constant())
    assert (noisy - target).std().item() == pytest.approx(7.0, rel=0.02)


@pytest.mark.parametrize(
    "model", [PoissonGaussianNoise(exposure_range=(0.5, 2.0)), GaussianNoise(sigma=3.0)]
)
def test_seeded_generator_is_deterministic(model) -> None:
    clean = _constant(batch=4, size=16)
    a = model(clean, torch.Generator().manual_seed(5))
    b = model(clean, torch.Generator().manual_seed(5))
    c = model(clean, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_sample_pair_is_independent_with_shared_target() -> None:
    model = PoissonGaussianNoise(read_noise=5.0, exposure_range=(0.5, 2.0))
    n1, n2, target = model.sample_pair(_constant(), torch.Generator().manual_seed(0))
    r1 = (n1 - target).flatten().double()
    r2 = (n2 - target).flatten().double()
    corr = torch.corrcoef(torch.stack([r1, r2]))[0, 1].item()
    assert abs(corr) < 0.01
    assert not torch.equal(n1, n2)
    assert n1.shape == n2.shape == target.shape


def test_bad_parameters_raise_user_error() -> None:
    with pytest.raises(UserError, match="gain"):
        PoissonGaussianNoise(gain=0.0)
    with pytest.raises(UserError, match="read_noise"):
        PoissonGaussianNoise(read_noise=-1.0)
    with pytest.raises(UserError, match="exposure_range"):
        PoissonGaussianNoise(exposure_range=(0.0, 1.0))
    with pytest.raises(UserError, match="sigma"):
        GaussianNoise(sigma=-1.0)
