"""Tests of the batch noise models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from astrorestore.data.corruption.artifacts import Striping
from astrorestore.data.corruption.noise import (
    CompositeNoise,
    GaussianNoise,
    NoiseModel,
    PoissonGaussianNoise,
    PoissonNoise,
)
from astrorestore.errors import UserError

NOISE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "noise"


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


def _per_image_var(noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (noisy - target).double().flatten(1).var(dim=1)


def test_gaussian_sigma_range_is_drawn_per_image_and_reported() -> None:
    model = GaussianNoise(sigma_range=(2.0, 30.0))
    noisy, target = model(_constant(batch=32), torch.Generator().manual_seed(0))
    sigma = model.noise_sigma(target)
    assert sigma.shape == target.shape
    per_image = sigma[:, 0, 0, 0].double()
    assert per_image.min() >= 2.0 and per_image.max() <= 30.0 and per_image.std() > 3.0
    ratio = _per_image_var(noisy, target) / per_image**2
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.1)


@pytest.mark.parametrize("gain", [1.0, 4.0])
def test_poisson_is_gain_aware_counts(gain: float) -> None:
    model = PoissonNoise(gain=gain)
    noisy, target = model(_constant(50.0), torch.Generator().manual_seed(0))
    # Counts of photons: non-negative multiples of 1/gain (integers for gain 1).
    assert noisy.min() >= 0
    assert torch.equal(noisy * gain, torch.round(noisy * gain))
    resid = (noisy - target).double()
    assert resid.mean().item() == pytest.approx(0.0, abs=0.03)
    assert resid.var().item() == pytest.approx(50.0 / gain, rel=0.03)
    torch.testing.assert_close(
        model.noise_sigma(target), torch.full_like(target, (50 / gain) ** 0.5)
    )


def test_poisson_gaussian_ranges_match_noise_sigma_per_image() -> None:
    model = PoissonGaussianNoise(read_noise_range=(2.0, 15.0), gain_range=(0.5, 4.0))
    noisy, target = model(_constant(200.0, batch=32), torch.Generator().manual_seed(3))
    sigma = model.noise_sigma(target)[:, 0, 0, 0].double()
    # Read noise 2..15 and gain 0.5..4 give per-image sigma from ~7 to ~25 e-.
    assert sigma.max() / sigma.min() > 1.5
    ratio = _per_image_var(noisy, target) / sigma**2
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.1)
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.03)


def test_noise_sigma_follows_the_signal() -> None:
    # Half the image faint, half bright: the sigma map and the empirical noise agree in both.
    clean = torch.cat([torch.full((64, 1, 32, 16), 10.0), torch.full((64, 1, 32, 16), 1e4)], -1)
    model = PoissonGaussianNoise(gain=2.0, read_noise=5.0)
    noisy, target = model(clean, torch.Generator().manual_seed(0))
    sigma = model.noise_sigma(target)
    for half in (slice(0, 16), slice(16, 32)):
        resid = (noisy - target)[..., half].double()
        assert resid.std().item() == pytest.approx(sigma[..., half].mean().item(), rel=0.02)


def test_sample_pair_shares_parameters_not_noise() -> None:
    model = PoissonGaussianNoise(read_noise_range=(1.0, 20.0))
    n1, n2, target = model.sample_pair(_constant(batch=32), torch.Generator().manual_seed(0))
    sigma = model.noise_sigma(target)[:, 0, 0, 0].double()
    # Both frames have the same per-image noise level (one detector), drawn independently.
    for noisy in (n1, n2):
        ratio = _per_image_var(noisy, target) / sigma**2
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.1)
    r1, r2 = (n1 - target).flatten().double(), (n2 - target).flatten().double()
    assert abs(torch.corrcoef(torch.stack([r1, r2]))[0, 1].item()) < 0.01


def test_composite_variances_add_and_poisson_must_come_first() -> None:
    model = CompositeNoise(
        [
            PoissonGaussianNoise(gain=1.0, read_noise=3.0),
            Striping(amplitude=4.0),
            GaussianNoise(2.0),
        ],
        exposure_range=(2.0, 2.0),
    )
    noisy, target = model(_constant(50.0), torch.Generator().manual_seed(0))
    assert torch.equal(target, _constant(100.0))
    expected = 100.0 + 9.0 + 16.0 + 4.0
    assert (noisy - target).double().var().item() == pytest.approx(expected, rel=0.05)
    sigma = model.noise_sigma(target)
    assert sigma.mean().item() == pytest.approx(expected**0.5, rel=1e-5)
    with pytest.raises(UserError, match="Poisson model first"):
        CompositeNoise([GaussianNoise(1.0), PoissonNoise()])
    with pytest.raises(UserError, match="noise.models"):
        CompositeNoise([])


def test_a_draw_only_subclass_still_pairs() -> None:
    class Shift(NoiseModel):
        def draw(self, target, generator=None):
            return target + torch.rand(target.shape, generator=generator)

    n1, n2, target = Shift().sample_pair(_constant(batch=2, size=8), torch.Generator())
    assert not torch.equal(n1, n2) and torch.all(n1 > target)


@pytest.mark.parametrize("path", sorted(NOISE_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_noise_yaml_instantiates_and_draws_reproducibly(path: Path) -> None:
    config = OmegaConf.load(path)
    if "_target_" not in config:  # noise=none: the pairing gets no noise model at all
        assert config == {"noise": None}
        return
    model = instantiate(config)
    assert isinstance(model, NoiseModel)
    # Large enough that rare artefacts (2 cosmic rays per 64² image) surely appear.
    clean = torch.full((4, 1, 128, 128), 100.0)
    a = model(clean, torch.Generator().manual_seed(1))
    b = model(clean, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.float32 and a[0].shape == clean.shape
    assert not torch.equal(a[0], a[1])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GaussianNoise(sigma_range=(5.0, 1.0)), "noise.sigma_range"),
        (lambda: PoissonGaussianNoise(read_noise_range=(-1.0, 2.0)), "noise.read_noise_range"),
        (lambda: PoissonGaussianNoise(gain_range=(0.0, 2.0)), "noise.gain_range"),
        (lambda: PoissonNoise(gain=-1.0), "noise.gain"),
    ],
)
def test_bad_ranges_raise_one_line_user_error(make, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_noise_sigma_refuses_a_batch_it_did_not_draw() -> None:
    model = GaussianNoise(sigma_range=(1.0, 5.0))
    model(_constant(batch=4, size=8), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="latest draw was for 4"):
        model.noise_sigma(_constant(batch=3, size=8))
