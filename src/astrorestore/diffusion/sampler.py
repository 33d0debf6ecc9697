"""Sampling loops (ancestral and DDIM) and the SR3 restorer that ``infer.py`` runs.

One short loop: from pure noise, at each level of the re-derived schedule ask the network for
its prediction, turn it into an estimate of the clean image ``x0``, and step to the next,
less noisy level — with fresh noise (``ancestral``, the DDPM posterior) or deterministically
(``ddim``, eta = 0), which reaches comparable quality in far fewer steps. The update arithmetic
runs in float32 with autocast off, whatever precision the network runs in.

What is diffused (``target``): the high-resolution ``image`` itself (SR3), or the ``residual``
between it and the bicubic up-sampling of the low-resolution input, divided by
``residual_scale`` so it has about unit variance (SRDiff, Li et al. 2022). The residual is small
and mostly high-frequency, so a weakly trained network already returns bicubic plus a small
correction instead of noise; with ``x0`` prediction a network that outputs zeros returns
exactly bicubic. Parameterisations: ``eps`` (the noise), ``x0`` (the clean target) and ``v``
(``sqrt(gamma) eps - sqrt(1 - gamma) x0``, Salimans & Ho 2022).

Data are not clipped: ``x0`` estimates are left unbounded, because asinh-normalised frames are
unbounded; photographs live in about [-1, 1] (see ``data/normalization/photo.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astrorestore.diffusion.schedule import NoiseSchedule
from astrorestore.errors import UserError
from astrorestore.filters import gaussian_blur

SAMPLERS = ("ddim", "ancestral")
PREDICTIONS = ("eps", "x0", "v")
TARGETS = ("residual", "image")
Projection = Callable[[Tensor], Tensor]


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is invalid: use one of {', '.join(allowed)}")
    return value


def predict_x0(output: Tensor, x_t: Tensor, gamma: Tensor, prediction: str) -> Tensor:
    """The clean estimate from the network's output (``eps``, ``x0`` or ``v``)."""
    if prediction == "x0":
        return output
    if prediction == "v":
        return gamma.sqrt() * x_t - (1.0 - gamma).sqrt() * output
    return (x_t - (1.0 - gamma).sqrt() * output) / gamma.sqrt()


def training_goal(x0: Tensor, noise: Tensor, level: Tensor, prediction: str) -> Tensor:
    """What the network is fitted to for ``x_t = level x0 + sqrt(1 - level²) noise``."""
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return noise
    level = level.float().view(-1, *([1] * (x0.dim() - 1)))
    return level * noise - (1.0 - level**2).clamp_min(0.0).sqrt() * x0


def to_target(image: Tensor, cond: Tensor, target: str, residual_scale: float) -> Tensor:
    """The diffused quantity of a high-resolution ``image`` given its conditioning ``cond``."""
    if target == "image":
        return image.float()
    return (image.float() - cond.float()) / residual_scale


def to_image(x0: Tensor, cond: Tensor, target: str, residual_scale: float) -> Tensor:
    """Inverse of :func:`to_target`: the high-resolution image of a sampled ``x0``."""
    if target == "image":
        return x0
    return cond.float() + residual_scale * x0


def check_back_projection(iterations: int, psf_sigma: float, prefix: str = "model.") -> None:
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 0:
        raise UserError(
            f"{prefix}back_projection={iterations!r} is invalid: use an integer >= 0 (0 = off)"
        )
    if not (isinstance(psf_sigma, (int, float)) and psf_sigma >= 0 and math.isfinite(psf_sigma)):
        raise UserError(f"{prefix}psf_sigma={psf_sigma!r} is invalid: use a value >= 0")


def projection(low: Tensor, scale: int, psf_sigma: float, iterations: int) -> Projection | None:
    """:func:`back_project` toward ``low`` as a sampler's ``project`` (None when off)."""
    if not iterations:
        return None
    return lambda image: back_project(image, low, scale, psf_sigma, iterations)


def check_residual_scale(value: float, key: str = "model.residual_scale") -> float:
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise UserError(f"{key}={value!r} is invalid: use a positive number")
    return float(value)


def step(
    x_t: Tensor,
    x0: Tensor,
    gamma_t: Tensor,
    gamma_s: Tensor,
    sampler: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One update from level ``gamma_t`` to the less noisy ``gamma_s`` given the estimate ``x0``."""
    if sampler == "ddim":
        eps = (x_t - gamma_t.sqrt() * x0) / (1.0 - gamma_t).sqrt()
        return gamma_s.sqrt() * x0 + (1.0 - gamma_s).sqrt() * eps
    # Ancestral: the Gaussian posterior q(x_s | x_t, x0) of the forward process.
    alpha = gamma_t / gamma_s
    beta = 1.0 - alpha
    mean = (gamma_s.sqrt() * beta * x0 + alpha.sqrt() * (1.0 - gamma_s) * x_t) / (1.0 - gamma_t)
    variance = beta * (1.0 - gamma_s) / (1.0 - gamma_t)
    if float(gamma_s) >= 1.0:
        return mean
    noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return mean + variance.clamp_min(0.0).sqrt() * noise


def back_project(
    image: Tensor, low: Tensor, scale: int, psf_sigma: float, iterations: int
) -> Tensor:
    """Move a high-resolution ``image`` toward agreeing with its low-resolution input ``low``
    under the training degradation (Gaussian PSF ``psf_sigma``, ``scale`` x ``scale`` area
    average): ``iterations`` Landweber steps ``image += blur(repeat(low - degrade(image)))``.
    The degradation's norm is 1 / scale, so a step of scale² (the repeat) converges; without a
    PSF one step is the exact (least-change) projection onto the images whose footprint means
    are ``low``."""
    for _ in range(int(iterations)):
        degraded = F.avg_pool2d(gaussian_blur(image, psf_sigma), scale)
        correction = F.interpolate(low.float() - degraded, scale_factor=scale, mode="nearest")
        image = image + gaussian_blur(correction, psf_sigma)
    return image


Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]


def sample(
    net: Denoiser,
    cond: Tensor,
    schedule: NoiseSchedule,
    steps: int,
    sampler: str = "ddim",
    prediction: str = "eps",
    generator: torch.Generator | None = None,
    target: str = "image",
    residual_scale: float = 1.0,
    project: Projection | None = None,
) -> Tensor:
    """Draw one high-resolution image per image of ``cond`` (B, C, H, W), the up-sampled
    low-resolution frames; returns float32 (B, C, H, W). ``project`` (e.g. :func:`back_project`
    toward the input) corrects each step's clean estimate, as an image, before the step."""
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("target", target, TARGETS)
    gammas = schedule.set_timesteps(steps).to(cond.device)
    x = torch.randn(cond.shape, generator=generator, device=cond.device, dtype=torch.float32)
    batch = cond.shape[0]
    for k in range(int(steps)):
        gamma_t, gamma_s = gammas[k], gammas[k + 1]
        output = net(x, gamma_t.sqrt().expand(batch), cond)
        with torch.autocast(device_type=cond.device.type, enabled=False):
            x0 = predict_x0(output.float(), x, gamma_t, prediction)
            if project is not None:
                image = project(to_image(x0, cond, target, residual_scale))
                x0 = to_target(image, cond, target, residual_scale)
            x = step(x, x0, gamma_t, gamma_s, sampler, generator)
    return to_image(x, cond, target, residual_scale)


class SuperResolutionSampler(nn.Module):
    """The SR3 restorer: low-resolution normalised tiles -> sampled high-resolution tiles.

    Built by ``load_restorer`` from the checkpoint's record with the (EMA) network; ``steps``
    and ``sampler`` are the fast sampler chosen at training time, which
    :meth:`set_sampling` (``infer.py sample_steps=... sampler=...``) overrides. ``target`` and
    ``residual_scale`` say what the network was trained to diffuse; records written before the
    residual option lack them and diffused the image. ``back_projection`` Landweber steps per
    sampling step pull each clean estimate toward the input under the training degradation
    (``psf_sigma``, :func:`back_project`); older records lack it (0, off). Stochastic: tiles of one image share the
    generator ``infer.py`` passes, so a seed reproduces the whole image.
    """

    stochastic = True

    def __init__(
        self,
        net: nn.Module,
        scale: int,
        steps: int = 50,
        sampler: str = "ddim",
        prediction: str = "eps",
        schedule: dict | None = None,
        target: str = "image",
        residual_scale: float = 1.0,
        back_projection: int = 0,
        psf_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        check_back_projection(back_projection, psf_sigma, "")
        self.back_projection, self.psf_sigma = int(back_projection), float(psf_sigma)
        self.net = net
        self.scale = int(scale)
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.target = check_choice("target", target, TARGETS)
        self.residual_scale = check_residual_scale(residual_scale, "residual_scale")
        self.schedule = NoiseSchedule(**(schedule or {}))
        self.set_sampling(steps, sampler)

    def set_sampling(self, steps: int | None = None, sampler: str | None = None) -> None:
        """Choose the step count and sampler at inference (None keeps the current one); the
        schedule is re-derived for the new count, so it still starts from pure noise."""
        if steps is not None:
            n = self.schedule.num_train_steps
            if int(steps) != steps or not 1 <= steps <= n:
                # Named as the user set it (infer.py / pipeline.py sample_steps=).
                raise UserError(
                    f"sample_steps={steps} is invalid: this checkpoint's schedule has {n} "
                    f"steps; pass sample_steps=<1..{n}>"
                )
            self.schedule.set_timesteps(steps)
            self.steps = int(steps)
        if sampler is not None:
            self.sampler = check_choice("sampler", sampler, SAMPLERS)

    def forward(self, low: Tensor, generator: torch.Generator | None = None) -> Tensor:
        cond = upsample(low, self.scale)
        return sample(
            self.net,
            cond,
            self.schedule,
            self.steps,
            self.sampler,
            self.prediction,
            generator,
            self.target,
            self.residual_scale,
            projection(low, self.scale, self.psf_sigma, self.back_projection),
        )


def upsample(low: Tensor, scale: int) -> Tensor:
    """The conditioning image: bicubic up-sampling of the low-resolution frame (float32)."""
    return F.interpolate(low.float(), scale_factor=scale, mode="bicubic", align_corners=False)
