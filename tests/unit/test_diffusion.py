"""Diffusion pieces: the schedule, its re-derivation for fewer steps, the sampler, the SR3 net."""

import math

import pytest
import torch

from astrorestore.diffusion.sampler import (
    SuperResolutionSampler,
    predict_x0,
    sample,
    step,
    to_image,
    to_target,
    training_goal,
    upsample,
)
from astrorestore.diffusion.schedule import NoiseSchedule
from astrorestore.errors import UserError
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.modules.base import ExponentialMovingAverage
from astrorestore.modules.diffusion import DiffusionModule
from astrorestore.nets.sr3_unet import SR3UNet


def tiny_net(channels=3, scale=2):
    return SR3UNet(channels=channels, scale=scale, base_channels=8, depth=2, dropout=0.0)


def test_schedule_is_monotone_float32_and_ends_in_noise():
    schedule = NoiseSchedule(2000)
    g = schedule.gammas
    assert g.dtype == torch.float32 and g.shape == (2001,)
    assert g[0] == 1.0 and bool((g[1:] < g[:-1]).all())
    assert g[-1] < 1e-4  # the training schedule reaches (near) pure noise


def test_training_levels_are_piecewise_uniform_over_the_schedule():
    schedule = NoiseSchedule(100)
    levels = schedule.sample_levels(20000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert levels.min() >= schedule.sqrt_gammas[-1] and levels.max() <= 1.0
    # Step t uniform: the share of levels above the schedule's midpoint level is ~1/2.
    mid = schedule.sqrt_gammas[50]
    assert (levels > mid).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_q_sample_statistics():
    x0 = torch.full((4, 3, 128, 128), 0.5)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    level = torch.full((4,), 0.6)
    x_t = NoiseSchedule.add_noise(x0, noise, level)
    assert x_t.mean().item() == pytest.approx(0.6 * 0.5, abs=0.01)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - 0.36), rel=0.01)


@pytest.mark.parametrize("steps", [5, 20, 50, 2000])
def test_rederived_schedule_starts_from_pure_noise(steps):
    schedule = NoiseSchedule(2000)
    gammas = schedule.set_timesteps(steps)
    assert gammas.shape == (steps + 1,) and gammas.dtype == torch.float32
    assert gammas[0] == schedule.gammas[-1] and gammas[0] < 1e-4
    assert gammas[-1] == 1.0 and bool((gammas[1:] > gammas[:-1]).all())
    betas = schedule.betas_for(gammas)
    assert bool((betas > 0).all()) and bool((betas < 1).all())


def test_keeping_the_training_betas_with_fewer_steps_would_start_far_from_noise():
    # The failure the re-derivation avoids: 50 steps of the training beta range.
    betas = torch.linspace(1e-6, 1e-2, 50, dtype=torch.float64)
    assert torch.prod(1 - betas).item() > 0.7


def test_invalid_step_count_is_a_user_error():
    with pytest.raises(UserError, match="steps=0"):
        NoiseSchedule(100).set_timesteps(0)


def test_ddim_step_with_the_true_clean_image_lands_on_the_forward_process():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    gamma_t, gamma_s = torch.tensor(0.2), torch.tensor(0.7)
    x_t = NoiseSchedule.add_noise(x0, eps, gamma_t.sqrt().expand(2))
    x_s = step(x_t, x0, gamma_t, gamma_s, "ddim")
    expected = NoiseSchedule.add_noise(x0, eps, gamma_s.sqrt().expand(2))
    torch.testing.assert_close(x_s, expected, atol=1e-5, rtol=1e-5)
    # eps-prediction inverts add_noise exactly
    torch.testing.assert_close(predict_x0(eps, x_t, gamma_t, "eps"), x0, atol=1e-5, rtol=1e-5)


def test_ancestral_step_mean_and_variance():
    x0 = torch.zeros(1, 1, 64, 64)
    x_t = torch.ones(1, 1, 64, 64)
    gamma_t, gamma_s = torch.tensor(0.3), torch.tensor(0.6)
    draws = torch.stack(
        [
            step(x_t, x0, gamma_t, gamma_s, "ancestral", torch.Generator().manual_seed(i))
            for i in range(8)
        ]
    )
    alpha = gamma_t / gamma_s
    mean = alpha.sqrt() * (1 - gamma_s) / (1 - gamma_t)
    variance = (1 - alpha) * (1 - gamma_s) / (1 - gamma_t)
    assert draws.mean().item() == pytest.approx(mean.item(), abs=0.01)
    assert draws.var().item() == pytest.approx(variance.item(), rel=0.05)
    # the last step (to the clean level) adds no noise
    assert torch.equal(step(x_t, x0, gamma_t, torch.tensor(1.0), "ancestral"), x0)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_sampling_with_an_oracle_returns_the_clean_image(sampler):
    target = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    oracle = lambda x_t, level, cond: target  # noqa: E731  (x0-prediction)
    out = sample(oracle, target, NoiseSchedule(200), 10, sampler, "x0", torch.Generator())
    torch.testing.assert_close(out, target)
    assert out.shape[0] == 3  # every image of the batch


def test_sampling_stays_float32_under_bf16_autocast():
    net = tiny_net().eval()
    cond = torch.randn(2, 3, 16, 16)
    schedule = NoiseSchedule(100)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out = sample(net, cond, schedule, 3, "ancestral", "eps", torch.Generator().manual_seed(0))
        gammas = schedule.set_timesteps(3)
    assert out.dtype == torch.float32 and gammas.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_sr3_net_shapes_and_level_conditioning():
    net = tiny_net().eval()
    x_t, cond = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    a = net(x_t, torch.tensor([0.1, 0.1]), cond)
    b = net(x_t, torch.tensor([0.9, 0.9]), cond)
    assert a.shape == x_t.shape
    assert not torch.allclose(a, b)  # the noise level changes the prediction
    assert net.size_multiple == 2  # 2**depth on the HR grid = 2 on the LR grid at scale 2


def test_sr3_restorer_is_seeded_and_upsamples():
    restorer = SuperResolutionSampler(
        tiny_net().eval(), scale=2, steps=3, schedule={"num_train_steps": 50}
    )
    low = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        a = restorer(low, torch.Generator().manual_seed(7))
        b = restorer(low, torch.Generator().manual_seed(7))
        c = restorer(low, torch.Generator().manual_seed(8))
    assert a.shape == (2, 3, 16, 16) and restorer.stochastic
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ema_moves_towards_the_weights():
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = (ema.weight - net.weight).abs().sum().item()
    ExponentialMovingAverage(0.9).update(ema, net, step=1000)
    after = (ema.weight - net.weight).abs().sum().item()
    assert after == pytest.approx(0.9 * before, rel=1e-5)
    with pytest.raises(UserError, match="ema_decay"):
        ExponentialMovingAverage(1.0)


# ---------------------------------------------------------------- residual target, v, overrides
class ZeroNet(torch.nn.Module):
    def forward(self, x_t, level, cond):
        return torch.zeros_like(x_t)


class CountingNet(ZeroNet):
    calls = 0

    def forward(self, x_t, level, cond):
        self.calls += 1
        return super().forward(x_t, level, cond)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_residual_sample_with_zero_x0_prediction_is_bicubic(sampler):
    cond = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    out = sample(
        ZeroNet(), cond, NoiseSchedule(100), 5, sampler, "x0", torch.Generator(), "residual", 0.1
    )
    torch.testing.assert_close(out, cond)


def test_residual_sample_is_bicubic_plus_the_scaled_residual():
    cond = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    residual = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    oracle = lambda x_t, level, c: residual  # noqa: E731
    out = sample(oracle, cond, NoiseSchedule(100), 4, "ddim", "x0", None, "residual", 0.07)
    torch.testing.assert_close(out, cond + 0.07 * residual)
    # to_target / to_image are inverses, and the image target leaves the sample alone
    image = torch.randn(2, 3, 8, 8)
    x0 = to_target(image, cond, "residual", 0.07)
    torch.testing.assert_close(to_image(x0, cond, "residual", 0.07), image)
    torch.testing.assert_close(to_target(image, cond, "image", 0.07), image)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_training_goal_inverts_to_the_clean_target(prediction):
    g = torch.Generator().manual_seed(7)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    level = torch.tensor([0.2, 0.5, 0.9])
    x_t = NoiseSchedule.add_noise(x0, eps, level)
    goal = training_goal(x0, eps, level, prediction)
    gamma = (level**2).view(-1, 1, 1, 1)
    torch.testing.assert_close(predict_x0(goal, x_t, gamma, prediction), x0, atol=1e-5, rtol=0)


def test_diffusion_module_trains_on_the_residual_and_exports_it():
    module = DiffusionModule(
        net=ZeroNet(),
        loss=RestorationLoss(1, 0, 0),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        scale=2,
        prediction="x0",
        residual_scale=0.5,
        compute_lpips=False,
    )
    hr = torch.randn(2, 3, 8, 8)
    low = torch.nn.functional.avg_pool2d(hr, 2)
    # Zero output at x0-prediction: the loss is |residual| / residual_scale exactly.
    loss = module.denoising_loss({"input": low, "target": hr}, module.net)
    expected = ((hr - upsample(low, 2)) / 0.5).abs().mean()
    torch.testing.assert_close(loss, expected)
    spec = module.restorer_spec()
    assert (spec["target"], spec["prediction"], spec["residual_scale"]) == ("residual", "x0", 0.5)
    torch.testing.assert_close(module.restore(low), upsample(low, 2))
    with pytest.raises(UserError, match="model.target"):
        DiffusionModule(ZeroNet(), RestorationLoss(1, 0, 0), None, target="hr", compute_lpips=False)


def test_sampler_and_steps_are_overridden_at_inference():
    restorer = SuperResolutionSampler(
        tiny_net().eval(), scale=2, steps=3, schedule={"num_train_steps": 50}
    )
    assert restorer.target == "image"  # records without a target diffused the image
    restorer.set_sampling(7, "ancestral")
    assert (restorer.steps, restorer.sampler) == (7, "ancestral")
    restorer.net = CountingNet()
    restorer(torch.randn(1, 3, 4, 4), torch.Generator().manual_seed(0))
    assert restorer.net.calls == 7
    restorer.set_sampling(sampler="ddim")  # None keeps the step count
    assert (restorer.steps, restorer.sampler) == (7, "ddim")
    # Named as infer.py / pipeline.py take it, with the range (it said "steps=51").
    with pytest.raises(UserError, match=r"sample_steps=51 is invalid.*sample_steps=<1\.\.50>"):
        restorer.set_sampling(51)
    with pytest.raises(UserError, match="sampler='euler'"):
        restorer.set_sampling(sampler="euler")
