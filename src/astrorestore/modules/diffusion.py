"""SR3 diffusion training: the network learns to denoise ``x_t`` given the up-sampled input.

Per batch: draw a noise level ``sqrt(gamma)`` per example (piecewise uniform over the training
schedule), noise the diffused quantity and fit the network's output to the noise (``eps``), to
the clean quantity (``x0``) or to ``v`` with the pixel loss of the ``loss`` group (L1 by
default). The diffused quantity (``target``) is the high-resolution image or, by default, its
residual from the bicubic up-sampling of the input divided by ``residual_scale`` (see
:mod:`astrorestore.diffusion.sampler`): after 1000 CPU training steps the residual model (v or
x0 prediction) beats bicubic on SSIM where the image model still samples noise and the
residual eps model is far behind (``bench/bench_generative.py``, docs/methods/super-resolution.md).

An exponential moving average of the weights (``ema``, the base module's weight averaging, on
by default here) is what validation samples with and what checkpoints export for inference
(``restorer_spec`` names ``ema``). Validation
reports the denoising loss on every batch, at fixed levels and noise (a seeded generator), and
every ``sample_every_n_epochs`` samples a small fixed subset (the first ``n_sample_images`` of
the first batch) with the fast sampler to log PSNR/SSIM/LPIPS and panels. With
``sample_every_n_epochs > 1`` monitor ``val/loss`` (``monitor.metric=val/loss``): PSNR then
exists only on sampling epochs. Testing samples every test image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from astrorestore.diffusion.sampler import (
    PREDICTIONS,
    SAMPLERS,
    TARGETS,
    SuperResolutionSampler,
    check_back_projection,
    check_choice,
    check_residual_scale,
    projection,
    sample,
    to_target,
    training_goal,
    upsample,
)
from astrorestore.diffusion.schedule import NoiseSchedule
from astrorestore.errors import UserError
from astrorestore.modules.base import RestorationModule


class DiffusionModule(RestorationModule):
    """Args:
    net: ``net(x_t, sqrt_gamma, cond)`` (e.g. :class:`~astrorestore.nets.sr3_unet.SR3UNet`).
    loss: pixel loss ``(pred, target, mask) -> (total, terms)``.
    optimizer, scheduler: factories (the scheduler watches the run's monitor).
    schedule: dict of :class:`~astrorestore.diffusion.schedule.NoiseSchedule` arguments.
    scale: super-resolution factor (``${data.pairing.scale}``).
    prediction: ``eps``, ``x0`` or ``v``.
    target: ``residual`` (HR - bicubic(LR), divided by ``residual_scale``) or ``image``.
    residual_scale: divides the residual to about unit variance (ignored for ``image``).
    back_projection, psf_sigma: Landweber steps per sampling step toward the input under the
        training degradation (PSF sigma ``${data.pairing.psf_sigma}``); 0 = off.
    ema_decay: EMA decay of the exported weights (the shared weight averaging of
        :class:`~astrorestore.modules.base.RestorationModule`; on by default here).
    sampler, sample_steps: the fast sampler used in validation/test and exported for inference.
    sample_every_n_epochs, n_sample_images: the validation sampling subset.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        schedule: dict | None = None,
        scale: int = 2,
        prediction: str = "v",
        target: str = "residual",
        residual_scale: float = 0.07,
        back_projection: int = 0,
        psf_sigma: float = 0.0,
        ema_decay: float = 0.999,
        sampler: str = "ddim",
        sample_steps: int = 25,
        sample_every_n_epochs: int = 1,
        n_sample_images: int = 4,
        **base: Any,
    ) -> None:
        super().__init__(ema_decay=ema_decay, **base)
        check_choice("model.prediction", prediction, PREDICTIONS)
        check_choice("model.sampler", sampler, SAMPLERS)
        check_choice("model.target", target, TARGETS)
        check_residual_scale(residual_scale)
        check_back_projection(back_projection, psf_sigma)
        for key, value in (
            ("sample_steps", sample_steps),
            ("sample_every_n_epochs", sample_every_n_epochs),
            ("n_sample_images", n_sample_images),
        ):
            if int(value) != value or value < 1:
                raise UserError(f"model.{key}={value!r} is invalid: use an integer >= 1")
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "postprocess"], logger=False
        )
        self.net = net
        self.loss = loss
        self.schedule = NoiseSchedule(**(schedule or {}))
        self.schedule.set_timesteps(sample_steps)  # fails now if the step count is invalid
        self.average_weights(net)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._batch_loss: torch.Tensor | None = None

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.net, "size_multiple", 1))

    # ------------------------------------------------------------------ inference
    def restore(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        hp = self.hparams
        cond = upsample(x, hp.scale)
        return sample(
            self.inference_net,
            cond,
            self.schedule,
            hp.sample_steps,
            hp.sampler,
            hp.prediction,
            generator,
            hp.target,
            hp.residual_scale,
            projection(x, hp.scale, hp.psf_sigma, hp.back_projection),
        )

    def restorer_spec(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "_target_": f"{SuperResolutionSampler.__module__}.SuperResolutionSampler",
            "weights": self.exported_weights,
            "net_config": "net",
            "scale": int(hp.scale),
            "steps": int(hp.sample_steps),
            "sampler": hp.sampler,
            "prediction": hp.prediction,
            "target": hp.target,
            "residual_scale": float(hp.residual_scale),
            "back_projection": int(hp.back_projection),
            "psf_sigma": float(hp.psf_sigma),
            "schedule": self.schedule.config(),
        }

    # ------------------------------------------------------------------ training
    def denoising_loss(
        self,
        batch: dict[str, torch.Tensor],
        net: nn.Module,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        hp = self.hparams
        cond = upsample(batch["input"], hp.scale)
        x0 = to_target(batch["target"], cond, hp.target, hp.residual_scale)
        levels = self.schedule.sample_levels(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
        x_t = self.schedule.add_noise(x0, noise, levels)
        output = net(x_t, levels, cond)
        goal = training_goal(x0, noise, levels, hp.prediction)
        total, _ = self.loss(output.float(), goal, batch.get("loss_mask"))
        return total

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.denoising_loss(batch, self.net)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["target"].shape[0])
        return loss

    # ------------------------------------------------------------------ evaluation
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator(device=batch["target"].device).manual_seed(0)
        loss = self._batch_loss
        if loss is None:
            loss = self.denoising_loss(batch, self.inference_net, generator)
        return loss, self.restore(batch["input"], generator)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Fixed levels and noise per batch: val/loss is comparable between epochs.
        generator = torch.Generator(device=batch["target"].device).manual_seed(batch_idx)
        loss = self.denoising_loss(batch, self.inference_net, generator)
        size = batch["target"].shape[0]
        epoch = self.current_epoch + 1
        if batch_idx == 0 and (
            epoch % self.hparams.sample_every_n_epochs == 0 or self.trainer.sanity_checking
        ):
            n = self.hparams.n_sample_images
            subset = {k: v[:n] if torch.is_tensor(v) else v for k, v in batch.items()}
            self._panel_batch = True
            # Logs the whole batch's loss (weighted as the subset) and the subset's samples.
            self._batch_loss = loss
            try:
                self._evaluate(subset, "val")
            finally:
                self._batch_loss = None
            return
        self.log("val/loss", loss, batch_size=size, sync_dist=True, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimizer_config(self.net.parameters())
