"""The noise level the network is told: the current step's level when sampling, and every level
of the training schedule (steps 1..T) when training.

The networks here *use* the level they are given, so a sampler or a training step that passed
the wrong level would change the result; an oracle that ignores the level (as in
``test_diffusion.py``) cannot notice.
"""

import pytest
import torch

from astrorestore.diffusion.sampler import sample
from astrorestore.diffusion.schedule import NoiseSchedule
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.modules.diffusion import DiffusionModule


class NoiseOracle(torch.nn.Module):
    """An eps-prediction network that knows the clean image: it returns the noise that makes
    ``x_t`` out of ``clean`` *at the level it is told*. Told the true level, it is exact."""

    def __init__(self, clean: torch.Tensor) -> None:
        super().__init__()
        self.clean = clean
        self.levels: list[torch.Tensor] = []

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.levels.append(level.clone())
        level = level.view(-1, 1, 1, 1)
        return (x_t - level * self.clean) / (1.0 - level**2).sqrt()


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_sampler_tells_the_network_the_current_level(sampler):
    clean = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    schedule = NoiseSchedule(100)
    net = NoiseOracle(clean)
    out = sample(net, torch.zeros_like(clean), schedule, 10, sampler, "eps", torch.Generator())
    # Told the level x_t is at, the oracle's noise estimate is exact and every step lands on
    # the forward process: the clean image comes out. Told the next (less noisy) level, the
    # estimate is wrong at every step (and infinite at the last, whose next level is 1).
    torch.testing.assert_close(out, clean, atol=1e-4, rtol=0)
    gammas = schedule.set_timesteps(10)
    told = torch.stack([levels[0] for levels in net.levels])
    torch.testing.assert_close(told, gammas[:-1].sqrt())


def test_training_levels_cover_every_step_of_the_schedule():
    # Steps t = 1..T, each with its interval [sqrt_gamma_t, sqrt_gamma_{t-1}]: a draw from
    # 1..T-1 would leave the noisiest interval (t = T) empty.
    steps, draws = 10, 20000
    schedule = NoiseSchedule(steps, beta_start=0.05, beta_end=0.5)
    levels = schedule.sample_levels(draws, torch.device("cpu"), torch.Generator().manual_seed(1))
    bounds = schedule.sqrt_gammas  # decreasing, steps + 1 values
    assert levels.min() >= bounds[-1] and levels.max() <= bounds[0]
    # interval index of each level: t such that bounds[t] <= level <= bounds[t - 1]
    t = torch.bucketize(-levels, -bounds, right=False)
    counts = torch.bincount(t, minlength=steps + 1)[1:]
    assert counts.sum() == draws
    expected = draws / steps
    assert bool(((counts - expected).abs() < 0.1 * expected).all()), counts.tolist()


class LevelRecorder(torch.nn.Module):
    """Records the levels the training step passes; returns ``x_t`` scaled by its level, so
    the loss depends on it too."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.levels: list[torch.Tensor] = []

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.levels.append(level.detach().clone())
        return self.weight * level.view(-1, 1, 1, 1) * x_t


def test_training_step_feeds_levels_from_the_whole_schedule():
    steps = 8
    module = DiffusionModule(
        net=LevelRecorder(),
        loss=RestorationLoss(1, 0, 0),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        schedule={"num_train_steps": steps, "beta_start": 0.05, "beta_end": 0.5},
        scale=2,
        prediction="x0",
        sample_steps=4,
        compute_lpips=False,
    )
    hr = torch.randn(512, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    batch = {"input": torch.nn.functional.avg_pool2d(hr, 2), "target": hr}
    loss = module.denoising_loss(batch, module.net, torch.Generator().manual_seed(3))
    assert torch.isfinite(loss)
    levels = torch.cat(module.net.levels)
    bounds = module.schedule.sqrt_gammas
    # Some examples are in the noisiest interval (step T), none beyond the schedule.
    assert levels.min() >= bounds[-1]
    assert int((levels < bounds[-2]).sum()) > 512 / steps / 2
