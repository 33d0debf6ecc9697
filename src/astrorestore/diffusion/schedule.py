"""Noise schedule of SR3 in terms of the continuous noise level ``sqrt(gamma)``.

``x_t = sqrt(gamma) x_0 + sqrt(1 - gamma) eps``: ``gamma`` is the cumulative product of
``1 - beta`` over the training schedule (T = 2000 linear betas by default, as in SR3). The
network is conditioned on ``sqrt(gamma)``, never on an integer step, in training and sampling.

Training draws ``sqrt(gamma)`` per example, uniformly between two neighbouring levels of the
training schedule (piecewise uniform, SR3 section 2.4). Sampling with fewer steps *re-derives*
the schedule (:meth:`NoiseSchedule.set_timesteps`): it keeps the training schedule's levels at
evenly spaced steps, so the first sampling step is at the training schedule's noisiest level
(``gamma`` ~ 1e-5, pure noise). Keeping the training betas over fewer steps instead would start
sampling from ``gamma`` = exp(-steps * mean beta), e.g. 0.78 for 50 steps, a signal level the
network never had to denoise from, and a known cause of "fewer steps, noisier images".

All schedule tensors are float32 (computed in float64) whatever the training precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.errors import UserError


class NoiseSchedule:
    """Args: num_train_steps (T), beta_start, beta_end (linear betas)."""

    def __init__(
        self, num_train_steps: int = 2000, beta_start: float = 1e-6, beta_end: float = 1e-2
    ) -> None:
        if int(num_train_steps) < 2:
            raise UserError(
                f"model.schedule.num_train_steps={num_train_steps} is invalid: use an integer >= 2"
            )
        if not 0 < beta_start <= beta_end < 1:
            raise UserError(
                f"model.schedule betas [{beta_start}, {beta_end}] are invalid: use "
                "0 < beta_start <= beta_end < 1"
            )
        self.num_train_steps = int(num_train_steps)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        betas = torch.linspace(beta_start, beta_end, self.num_train_steps, dtype=torch.float64)
        gammas = torch.cumprod(1.0 - betas, dim=0)
        #: ``gamma`` of steps 0..T, step 0 being the clean image (gamma = 1).
        self.gammas = torch.cat([torch.ones(1, dtype=torch.float64), gammas]).float()
        self.sqrt_gammas = self.gammas.sqrt()
        self.sampling_gammas = self.gammas  # set by set_timesteps

    def config(self) -> dict:
        return {
            "num_train_steps": self.num_train_steps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    # ------------------------------------------------------------------ training
    def sample_levels(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-example ``sqrt(gamma)`` (B,), uniform between the levels of steps t-1 and t, with
        t uniform in 1..T."""
        t = torch.randint(1, self.num_train_steps + 1, (batch,), generator=generator, device=device)
        u = torch.rand(batch, generator=generator, device=device)
        sqrt_gammas = self.sqrt_gammas.to(device)
        high, low = sqrt_gammas[t - 1], sqrt_gammas[t]
        return low + u * (high - low)

    @staticmethod
    def add_noise(x0: Tensor, noise: Tensor, level: Tensor) -> Tensor:
        """``x_t`` for per-example levels ``sqrt(gamma)`` (B,), in float32."""
        level = level.float().view(-1, *([1] * (x0.dim() - 1)))
        return level * x0.float() + (1.0 - level**2).clamp_min(0.0).sqrt() * noise.float()

    # ------------------------------------------------------------------ sampling
    def set_timesteps(self, steps: int) -> Tensor:
        """Re-derive a ``steps``-step schedule; returns its ``gamma`` from noisiest to clean,
        ``steps + 1`` values ending with 1 (the clean image). Its first value is the training
        schedule's last, so sampling starts from (near) pure noise for every step count."""
        if int(steps) != steps or not 1 <= steps <= self.num_train_steps:
            raise UserError(
                f"steps={steps} is invalid: use an integer in [1, {self.num_train_steps}]"
            )
        indices = torch.linspace(self.num_train_steps, 0, int(steps) + 1, dtype=torch.float64)
        self.sampling_gammas = self.gammas[indices.round().long()]
        return self.sampling_gammas

    def betas_for(self, gammas: Tensor) -> Tensor:
        """The betas of a re-derived schedule: ``1 - gamma_k / gamma_{k-1}`` (clean-to-noisy)."""
        ordered = gammas.flip(0)
        return 1.0 - ordered[1:] / ordered[:-1]
