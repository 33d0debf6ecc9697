"""Adversarial training (conditional GAN, pix2pix-style) with Lightning's manual optimisation.

Each step updates the discriminator on (condition, real) vs (condition, generated) pairs, then
the generator on ``reconstruction_weight * pixel loss + adversarial_weight * GAN loss``. Two
optimisers and their schedulers; ``toggle_optimizer`` freezes the other network's parameters
(``requires_grad``) during each half-step, so the discriminator loss never writes gradients
into the generator and vice versa. Gradients are clipped by hand (``gradient_clip``): Lightning
refuses ``trainer.gradient_clip_val`` under manual optimisation, so the model config sets it
to null. ``adversarial_weight: 0`` gives the L1-only generator of the same size (the baseline).

``adversarial_warmup_steps`` / ``adversarial_ramp_steps``: the generator first learns with the
pixel loss alone (the discriminator trains meanwhile, on those outputs), then the adversarial
weight rises linearly to ``adversarial_weight``. A discriminator pushing on a generator that
has not yet found the colours adds noise to the L1 descent instead of sharpening a good answer.

``discriminator_input``: a chroma-only generator keeps the input's luminance, so a true and a
generated pair differ in chroma alone, a small signal beside the grey structure (std ~0.02
against ~0.1 on the Hubble training quarter). Shown RGB, the discriminator stayed near chance and
its gradient at the generator's output was 1.4 % of the L1 term's; shown the chroma times 10 it
separates the pairs and the cGAN gains colour (docs/methods/colorization.md, issue 23).

Validation adds colour measures on RGB in [0, 1]: ``delta_e`` (CIE76) and ``colourfulness``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from astrorestore.colour import chroma, to_unit
from astrorestore.errors import UserError
from astrorestore.metrics.colour import colour_measures
from astrorestore.modules.base import RestorationModule

GAN_LOSSES = ("vanilla", "lsgan", "hinge")
DISCRIMINATOR_INPUTS = ("rgb", "chroma")


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss of the discriminator given its logits on real and generated pairs."""
    real, fake = real.float(), fake.float()
    if kind == "vanilla":
        return 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
    if kind == "lsgan":
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())
    return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def generator_gan_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """Adversarial loss of the generator given the discriminator's logits on its output."""
    fake = fake.float()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if kind == "lsgan":
        return (fake - 1).pow(2).mean()
    return -fake.mean()


class AdversarialModule(RestorationModule):
    """Args:
    net: the generator (condition -> image); what inference runs.
    discriminator: ``(condition, image) -> patch logits``.
    loss: the pixel reconstruction loss ``(pred, target, mask) -> (total, terms)`` (L1).
    optimizer, discriminator_optimizer: factories ``params -> Optimizer``.
    scheduler, discriminator_scheduler: optional factories ``optimizer -> scheduler``
        (stepped once per epoch; ReduceLROnPlateau ones with the run's monitor).
    reconstruction_weight: weight of the pixel loss (pix2pix: 100).
    adversarial_weight: weight of the GAN loss (0 = L1-only generator).
    adversarial_warmup_steps: batches trained with the pixel loss only (the discriminator
        still trains); then the weight ramps linearly over ``adversarial_ramp_steps``.
    feature_matching_weight: weight of an L1 distance between the discriminator's hidden
        features of the generated and the true image (pix2pixHD), scaled with the adversarial
        weight's warm-up and ramp; 0: off. Needs a discriminator with ``features``.
    gan_loss: vanilla | lsgan | hinge.
    discriminator_input: what the discriminator sees of a colour image beside the grey
        condition: ``rgb`` (the normalised image) or ``chroma`` (its chroma in the generator's
        colour space, YCbCr for an RGB generator, times ``chroma_gain``). A chroma-only
        generator keeps the luminance, so real and generated pairs differ in chroma alone.
    chroma_gain: scale of the chroma the discriminator sees (``chroma`` input only).
    gradient_clip: max gradient norm of each network (None = no clipping).
    Others: see :class:`RestorationModule`.
    """

    # The generator step runs the discriminator with its gradients off: under DDP those
    # parameters get no gradient in that step, which DDP must be told to expect.
    find_unused_parameters = True

    def __init__(
        self,
        net: nn.Module,
        discriminator: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        discriminator_optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        discriminator_scheduler: Callable[..., Any] | None = None,
        reconstruction_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        adversarial_warmup_steps: int = 0,
        adversarial_ramp_steps: int = 0,
        feature_matching_weight: float = 0.0,
        gan_loss: str = "vanilla",
        gradient_clip: float | None = 1.0,
        discriminator_input: str = "rgb",
        chroma_gain: float = 1.0,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if gan_loss not in GAN_LOSSES:
            raise UserError(
                f"model.gan_loss={gan_loss!r} is invalid: use one of {', '.join(GAN_LOSSES)}"
            )
        if discriminator_input not in DISCRIMINATOR_INPUTS:
            raise UserError(
                f"model.discriminator_input={discriminator_input!r} is invalid: use one of "
                f"{', '.join(DISCRIMINATOR_INPUTS)}"
            )
        seen = 1 + (3 if discriminator_input == "rgb" else 2)  # grey condition + image view
        if getattr(discriminator, "in_channels", seen) != seen:
            raise UserError(
                f"model.discriminator.in_channels={discriminator.in_channels} does not fit "
                f"model.discriminator_input={discriminator_input}: use {seen}"
            )
        for key, value in (
            ("reconstruction_weight", reconstruction_weight),
            ("adversarial_weight", adversarial_weight),
            ("feature_matching_weight", feature_matching_weight),
        ):
            if not value >= 0:
                raise UserError(f"model.{key}={value!r} is invalid: use a value >= 0")
        for key, value in (
            ("adversarial_warmup_steps", adversarial_warmup_steps),
            ("adversarial_ramp_steps", adversarial_ramp_steps),
        ):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise UserError(f"model.{key}={value!r} is invalid: use an integer >= 0")
        if feature_matching_weight > 0 and not hasattr(discriminator, "features"):
            raise UserError(
                "model.feature_matching_weight > 0 needs a discriminator with hidden features "
                "(PatchDiscriminator); set it to 0"
            )
        if not chroma_gain > 0:
            raise UserError(f"model.chroma_gain={chroma_gain!r} is invalid: use a value > 0")
        if gradient_clip is not None and not gradient_clip > 0:
            raise UserError(
                f"model.gradient_clip={gradient_clip!r} is invalid: use a value > 0 or null"
            )
        self.save_hyperparameters(
            ignore=[
                "net",
                "discriminator",
                "loss",
                "optimizer",
                "discriminator_optimizer",
                "scheduler",
                "discriminator_scheduler",
                "postprocess",
            ],
            logger=False,
        )
        self.automatic_optimization = False
        self.net = net
        self.average_weights(net)  # the generator's; the discriminator sees the raw one
        self.discriminator = discriminator
        self.loss = loss
        self.factories = {
            "optimizer": optimizer,
            "discriminator_optimizer": discriminator_optimizer,
            "scheduler": scheduler,
            "discriminator_scheduler": discriminator_scheduler,
        }
        self._last_restored: torch.Tensor | None = None
        space = getattr(net, "color_space", "rgb")
        self._chroma_space = "ycbcr" if space == "rgb" else space

    def judged(self, image: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of a (normalised RGB) image: itself, or its chroma."""
        if self.hparams.discriminator_input == "rgb":
            return image
        view = chroma(to_unit(image.float()), self._chroma_space)
        return (self.hparams.chroma_gain * view).to(image.dtype)

    def judge(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The discriminator's patch logits for the pair (condition, image)."""
        return self.discriminator(condition, self.judged(image))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def restore(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.inference_net(x)

    def restorer_spec(self) -> dict[str, Any]:
        return {
            "_target_": "astrorestore.inference.restorer.NetForward",
            "weights": self.exported_weights,
            "net_config": "net",
        }

    # ------------------------------------------------------------------ training
    def batches_trained(self) -> int:
        # Under manual optimisation global_step counts optimiser steps: two per GAN batch.
        return self.global_step // 2 if self.hparams.adversarial_weight > 0 else self.global_step

    def adversarial_weight_at(self, batches: int) -> float:
        """The GAN loss weight after ``batches`` training batches: 0 during the warm-up, then
        a linear ramp to ``adversarial_weight``."""
        hp = self.hparams
        done = batches - hp.adversarial_warmup_steps
        if done < 0:
            return 0.0
        if hp.adversarial_ramp_steps == 0:
            return float(hp.adversarial_weight)
        return float(hp.adversarial_weight) * min(1.0, (done + 1) / hp.adversarial_ramp_steps)

    def _clip(self, optimizer: torch.optim.Optimizer) -> None:
        if self.hparams.gradient_clip is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.hparams.gradient_clip,
                gradient_clip_algorithm="norm",
            )

    def feature_matching(
        self, fake_features: list[torch.Tensor], condition: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """Mean L1 distance between the discriminator's hidden features of the generated image
        (``fake_features``, from ``discriminator.features``; the logits last) and those of
        ``real``, a fixed target."""
        with torch.no_grad():
            target = self.discriminator.features(condition, self.judged(real))[:-1]
        distances = [(a - b).abs().mean() for a, b in zip(fake_features[:-1], target, strict=True)]
        return torch.stack(distances).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        condition, real = batch["input"], batch["target"]
        mask = batch.get("loss_mask")
        fake = self.net(condition)
        size = condition.shape[0]
        kind = self.hparams.gan_loss
        use_gan = self.hparams.adversarial_weight > 0
        weight = self.adversarial_weight_at(self.batches_trained()) if use_gan else 0.0

        if use_gan:
            self.toggle_optimizer(opt_d)
            d_loss = discriminator_loss(
                self.judge(condition, real),
                self.judge(condition, fake.detach()),
                kind,
            )
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self._clip(opt_d)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            self.log("train/d_loss", d_loss, batch_size=size)

        self.toggle_optimizer(opt_g)
        pixel, _ = self.loss(fake, real, mask)
        g_loss = self.hparams.reconstruction_weight * pixel
        if weight > 0:
            matching_on = self.hparams.feature_matching_weight > 0
            # One discriminator pass on the generated image serves both terms: its logits are
            # the last of its features.
            if matching_on:
                fake_features = self.discriminator.features(condition, self.judged(fake))
                logits = fake_features[-1]
            else:
                logits = self.judge(condition, fake)
            adversarial = generator_gan_loss(logits, kind)
            g_loss = g_loss + weight * adversarial
            self.log("train/g_adversarial", adversarial, batch_size=size)
            if matching_on:
                matching = self.feature_matching(fake_features, condition, real)
                ramp = weight / self.hparams.adversarial_weight
                g_loss = g_loss + ramp * self.hparams.feature_matching_weight * matching
                self.log("train/g_feature_matching", matching, batch_size=size)
        if use_gan:
            self.log("train/adversarial_weight", weight, batch_size=size)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self._clip(opt_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.log("train/pixel", pixel, batch_size=size)
        self.log("train/g_loss", g_loss, prog_bar=True, batch_size=size)

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        if not isinstance(schedulers, list):
            schedulers = [schedulers]
        value = self.trainer.callback_metrics.get(self.monitor)
        for scheduler in schedulers:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if value is not None:  # the monitor exists only after a validation epoch
                    scheduler.step(value)
            else:
                scheduler.step()

    def configure_optimizers(self) -> Any:
        opt_g = self.factories["optimizer"](params=self.net.parameters())
        opt_d = self.factories["discriminator_optimizer"](params=self.discriminator.parameters())
        schedulers = [
            self.factories[key](optimizer=opt)
            for key, opt in (("scheduler", opt_g), ("discriminator_scheduler", opt_d))
            if self.factories[key] is not None
        ]
        return [opt_g, opt_d], schedulers

    # ------------------------------------------------------------------ evaluation
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        restored = self.inference_net(batch["input"])
        loss, _ = self.loss(restored, batch["target"], batch.get("loss_mask"))
        self._last_restored = restored
        return loss, restored

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        super()._evaluate(batch, stage)
        truth, restored = batch.get("truth"), self._last_restored
        if truth is None or restored is None or restored.shape[1] != 3:
            return
        normalizer = self.trainer.datamodule.normalizer
        offset, scale = batch["offset"], batch["scale"]
        rgb = normalizer.inverse(restored.float(), offset, scale)
        reference = normalizer.inverse(truth.float(), offset, scale)
        for name, value in colour_measures(rgb, reference).items():
            self.log(f"{stage}/{name}", value, batch_size=rgb.shape[0])
