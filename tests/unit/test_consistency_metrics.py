"""Consistency with the data: a perfect output re-degrades to its noiseless input (0), a noisy
input is matched within its noise (~1), and a wrong output is not."""

import functools

import numpy as np
import pytest
import torch

from astrorestore.colour import luminance
from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
from astrorestore.errors import UserError
from astrorestore.metrics.consistency import consistency_error, consistency_residual

SIGMA = 0.01


def _scene(seed=0, shape=(2, 3, 64, 64)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _noisy(low, sigma, seed=1):
    return low + sigma * torch.randn(low.shape, generator=torch.Generator().manual_seed(seed))


def test_perfect_output_under_a_noiseless_forward_model_scores_zero():
    degrade = SuperResolutionPairing(2, psf_sigma=1.0).degrade
    truth = _scene()
    error = consistency_error(truth, degrade(truth), degrade, SIGMA)
    assert error.shape == (2,)
    assert torch.allclose(error, torch.zeros(2), atol=1e-4)


def test_truth_against_a_noisy_input_scores_about_one():
    degrade = SuperResolutionPairing(2, psf_sigma=1.0).degrade
    truth = _scene()
    error = consistency_error(truth, _noisy(degrade(truth), SIGMA), degrade, SIGMA)
    assert torch.allclose(error, torch.ones(2), atol=0.05)


def test_a_contradicting_output_scores_far_above_one():
    degrade = SuperResolutionPairing(2, psf_sigma=1.0).degrade
    truth = _scene()
    observed = _noisy(degrade(truth), SIGMA)
    assert (consistency_error(truth + 0.05, observed, degrade, SIGMA) > 4).all()


def test_sigma_map_and_numpy_inputs():
    forward = functools.partial(luminance, space="ycbcr")
    rgb = _scene(2, (1, 3, 32, 32))
    grey = forward(rgb)
    sigma_map = torch.full((32, 32), SIGMA)
    sigma_map[:, 16:] = 2 * SIGMA  # noisier right half
    observed = grey + sigma_map * torch.randn(
        grey.shape, generator=torch.Generator().manual_seed(3)
    )
    error = consistency_error(rgb.numpy(), observed.numpy(), forward, sigma_map.numpy())
    assert abs(float(error[0]) - 1.0) < 0.05
    # The wrong (scalar) sigma on the noisy half reads the excess.
    assert float(consistency_error(rgb, observed, forward, SIGMA)[0]) > 1.4
    residual = consistency_residual(rgb[0], observed[0], forward, sigma_map)
    assert residual.shape == (1, 1, 32, 32)


def test_nan_input_pixels_are_left_out():
    forward = functools.partial(luminance, space="ycbcr")
    rgb = _scene(4, (1, 3, 16, 16))
    observed = forward(rgb)
    observed[..., :4, :4] = float("nan")
    assert float(consistency_error(rgb, observed, forward, SIGMA)[0]) < 1e-4


def test_bad_arguments_are_one_line_errors():
    degrade = SuperResolutionPairing(2, psf_sigma=1.0).degrade
    truth = _scene()
    with pytest.raises(UserError, match="forward model"):
        consistency_error(truth, truth, degrade, SIGMA)  # input at the output's size
    with pytest.raises(UserError, match="sigma"):
        consistency_error(truth, degrade(truth), degrade, 0.0)
    with pytest.raises(UserError, match="sigma"):
        consistency_error(truth, degrade(truth), degrade, np.ones((5, 5)))
