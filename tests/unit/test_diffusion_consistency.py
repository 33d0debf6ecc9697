"""SR3's back-projection: each clean estimate is pulled toward agreeing with the input."""

import pytest
import torch
import torch.nn.functional as F

from astrorestore.diffusion.sampler import SuperResolutionSampler, back_project, upsample
from astrorestore.errors import UserError
from astrorestore.filters import gaussian_blur
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.modules.diffusion import DiffusionModule


def degrade(image, psf_sigma):
    return F.avg_pool2d(gaussian_blur(image, psf_sigma), 2)


def scene():
    return gaussian_blur(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), 1.0)


def test_without_a_psf_one_step_matches_every_footprint_mean_with_the_least_change():
    truth = scene()
    low = degrade(truth, 0.0)
    start = upsample(low, 2) + 0.05 * torch.randn(truth.shape)
    out = back_project(start, low, 2, 0.0, 1)
    torch.testing.assert_close(degrade(out, 0.0), low, atol=1e-6, rtol=0)
    # The least change: one constant per 2 x 2 footprint.
    change = out - start
    torch.testing.assert_close(change, F.interpolate(F.avg_pool2d(change, 2), scale_factor=2))


def test_with_a_psf_each_step_reduces_the_disagreement_and_the_error():
    truth = scene()
    low = degrade(truth, 1.0)
    start = upsample(low, 2)
    misfit, error = [], []
    for iterations in (0, 1, 3, 10):
        out = back_project(start, low, 2, 1.0, iterations)
        misfit.append(float((degrade(out, 1.0) - low).pow(2).mean()))
        error.append(float((out - truth).pow(2).mean()))
    assert misfit == sorted(misfit, reverse=True) and misfit[-1] < 0.2 * misfit[0]
    assert error == sorted(error, reverse=True)


class ZeroNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, level, cond):
        return torch.zeros_like(x) + self.w


def test_back_projected_samples_agree_with_their_input_and_are_exported():
    kwargs = {"scale": 2, "prediction": "x0", "compute_lpips": False}
    module = DiffusionModule(ZeroNet(), RestorationLoss(1, 0, 0), None, back_projection=1, **kwargs)
    low = degrade(scene(), 0.0)
    # A network that predicts a zero residual gives bicubic; back-projected, its footprint
    # means are the input's.
    out = module.restore(low)
    torch.testing.assert_close(degrade(out, 0.0), low, atol=1e-6, rtol=0)
    off = DiffusionModule(ZeroNet(), RestorationLoss(1, 0, 0), None, **kwargs).restore(low)
    assert float((degrade(off, 0.0) - low).abs().max()) > 1e-3
    spec = module.restorer_spec()
    assert (spec["back_projection"], spec["psf_sigma"]) == (1, 0.0)
    restorer = SuperResolutionSampler(ZeroNet(), 2, steps=2, prediction="x0", target="residual",
                                      back_projection=1)  # fmt: skip
    torch.testing.assert_close(restorer(low), out)


@pytest.mark.parametrize("key, value", [("back_projection", -1), ("psf_sigma", -0.5)])
def test_invalid_back_projection_settings_are_one_line(key, value):
    with pytest.raises(UserError, match=f"model.{key}"):
        DiffusionModule(ZeroNet(), RestorationLoss(1, 0, 0), None, compute_lpips=False,
                        **{key: value})  # fmt: skip
