"""Each noise-model loss, averaged over many seeded noise draws, equals the supervised loss.

The "network" is a fixed, non-symmetric 3x3 linear filter with zero padding, so the supervised
expectation is known in closed form: ``mean((K x - x)^2) + mean(conv(v_in, K^2))`` where
``v_in`` is the per-pixel variance of the network's input. Gain and read-noise maps vary per
pixel, so a loss that only handled scalar noise would fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from astrorestore.errors import UserError
from astrorestore.losses.noise_model import (
    recorrupt_gaussian,
    recorrupt_poisson,
    recorrupt_poisson_gaussian,
    recorrupted_mse,
    sure_poisson_gaussian,
)

DRAWS = 3000
SIZE = 24
ALPHA = 0.4
KERNEL = torch.tensor(
    [[0.05, 0.10, 0.02], [0.12, 0.40, 0.08], [0.03, 0.15, 0.05]], dtype=torch.float64
)[None, None]


def linear_net(image: torch.Tensor) -> torch.Tensor:
    return F.conv2d(image, KERNEL, padding=1)


def _scene() -> torch.Tensor:
    y, x = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float64),
        torch.arange(SIZE, dtype=torch.float64),
        indexing="ij",
    )
    star = 400.0 * torch.exp(-((x - 9) ** 2 + (y - 14) ** 2) / 6.0)
    return (30.0 + 2.0 * x + star)[None, None]  # 30..76 e- of sky and a 400 e- star


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    y, x = torch.meshgrid(
        torch.linspace(0, 1, SIZE, dtype=torch.float64),
        torch.linspace(0, 1, SIZE, dtype=torch.float64),
        indexing="ij",
    )
    gain = (0.5 + 1.5 * x)[None, None]  # 0.5..2 e-/unit
    read_variance = (4.0 + 12.0 * y)[None, None]  # 4..16 units^2
    return gain, read_variance


def supervised_expectation(truth: torch.Tensor, input_variance: torch.Tensor) -> float:
    bias = (linear_net(truth) - truth).square().mean()
    noise = F.conv2d(input_variance, KERNEL.square(), padding=1).mean()
    return float(bias + noise)


def _assert_matches(values: torch.Tensor, expected: float) -> None:
    mean = float(values.mean())
    error = float(values.std()) / math.sqrt(values.numel())
    assert abs(mean - expected) < 4 * error, (mean, expected, error)
    assert abs(mean - expected) < 0.02 * expected, (mean, expected)


def _per_image_mse(prediction, target, constant) -> torch.Tensor:
    """:func:`recorrupted_mse` of each image of the batch (one noise draw each)."""
    squared = (prediction - target).square().flatten(1).mean(1)
    return squared - constant.flatten(1).mean(1)


def test_r2r_gaussian_with_a_variance_map_is_unbiased() -> None:
    generator = torch.Generator().manual_seed(0)
    truth = _scene()
    _, variance = _maps()
    noisy = truth + variance.sqrt() * torch.randn(
        (DRAWS, 1, SIZE, SIZE), generator=generator, dtype=torch.float64
    )
    net_input, target, constant = recorrupt_gaussian(noisy, variance, ALPHA, generator)
    values = _per_image_mse(linear_net(net_input), target, constant)
    _assert_matches(values, supervised_expectation(truth, variance / (1 - ALPHA)))
    together = recorrupted_mse(linear_net(net_input), target, constant)
    assert float(together) == pytest.approx(float(values.mean()), rel=1e-9)
    # Without the constant the loss is off by exactly mean(variance) / alpha.
    raw = recorrupted_mse(linear_net(net_input), target)
    assert float(raw - values.mean()) == pytest.approx(float(variance.mean() / ALPHA), rel=1e-6)


def test_gr2r_poisson_with_a_gain_map_is_unbiased() -> None:
    generator = torch.Generator().manual_seed(1)
    truth = _scene()
    gain, _ = _maps()
    counts = torch.poisson((truth * gain).expand(DRAWS, 1, SIZE, SIZE).contiguous(), generator)
    noisy = counts / gain
    net_input, target, constant = recorrupt_poisson(noisy, gain, ALPHA, generator)
    values = _per_image_mse(linear_net(net_input), target, constant)
    _assert_matches(values, supervised_expectation(truth, truth / (gain * (1 - ALPHA))))


def _poisson_gaussian_draws(truth, gain, read_variance, generator) -> torch.Tensor:
    """DRAWS frames of Poisson(truth * gain) / gain + N(0, read_variance), per-pixel maps."""
    counts = torch.poisson((truth * gain).expand(DRAWS, 1, SIZE, SIZE).contiguous(), generator)
    read = torch.randn(counts.shape, generator=generator, dtype=torch.float64)
    return counts / gain + read_variance.sqrt() * read


def test_r2r_poisson_gaussian_with_maps_is_unbiased_for_a_linear_net() -> None:
    generator = torch.Generator().manual_seed(2)
    truth = _scene()
    gain, read_variance = _maps()
    noisy = _poisson_gaussian_draws(truth, gain, read_variance, generator)
    net_input, target, constant = recorrupt_poisson_gaussian(
        noisy, gain, read_variance, ALPHA, generator
    )
    values = _per_image_mse(linear_net(net_input), target, constant)
    variance = truth / gain + read_variance
    _assert_matches(values, supervised_expectation(truth, variance / (1 - ALPHA)))


def test_sure_poisson_gaussian_with_maps_is_unbiased() -> None:
    generator = torch.Generator().manual_seed(3)
    truth = _scene()
    gain, read_variance = _maps()
    noisy = _poisson_gaussian_draws(truth, gain, read_variance, generator)
    values = sure_poisson_gaussian(linear_net, noisy, gain, read_variance, generator=generator)
    _assert_matches(values, supervised_expectation(truth, truth / gain + read_variance))


def test_bad_parameters_are_user_errors() -> None:
    noisy = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UserError, match="alpha"):
        recorrupt_gaussian(noisy, 1.0, alpha=1.0)
    with pytest.raises(UserError, match="variance map has shape"):
        recorrupt_gaussian(noisy, torch.ones(4, 4))
    with pytest.raises(UserError, match="negative"):
        recorrupt_gaussian(noisy, -torch.ones(8, 8))
