"""What every method's LightningModule shares: evaluation against the truth, panels, LPIPS.

A method subclasses :class:`RestorationModule` and implements

- ``training_step`` (its kind of training: regression, adversarial, diffusion);
- ``evaluate_batch(batch) -> (loss, restored)``: the validation loss and the restoration of
  ``batch["observed"]`` (or ``batch["input"]``), in the normalised space;
- ``restore(x)``: normalised input -> normalised output (what ``infer.py`` runs on tiles);
- ``restorer_spec()``: how inference rebuilds the thing that restores (see
  :mod:`astrorestore.inference.restorer`).

Weight averaging is shared: a subclass calls :meth:`RestorationModule.average_weights` with the
network inference runs; with ``ema_decay`` set, an exponential moving average of its weights is
kept after every training batch, and validation, test and the exported checkpoint use the
average (:attr:`RestorationModule.inference_net`, :attr:`RestorationModule.exported_weights`).

Metrics are computed only against ``batch["truth"]`` and only where it exists. The noisy
input, brought to the output's shape, is scored the same way as the baseline to beat
(``val/input/*``). Where there is no truth (real frames), the measures that can be known are
logged instead: empty-sky noise and bright-source flux, output relative to input.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from astrorestore.data.normalization.asinh import frame_noise
from astrorestore.errors import UserError
from astrorestore.metrics.image_quality import RestorationMetrics
from astrorestore.metrics.lpips_metric import build_lpips, lpips_distance
from astrorestore.metrics.no_truth import no_truth_measures
from astrorestore.postprocess import Postprocess


def match_shape(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``image`` brought to ``like``'s channels and size: the naive baseline of any method
    (grey copied to every colour channel, bicubic up-sampling for super-resolution)."""
    if image.shape[1] != like.shape[1]:
        image = image.mean(1, keepdim=True).expand(-1, like.shape[1], -1, -1)
    if image.shape[-2:] != like.shape[-2:]:
        image = F.interpolate(image, size=like.shape[-2:], mode="bicubic", align_corners=False)
    return image


class ExponentialMovingAverage:
    """``ema <- decay * ema + (1 - decay) * weights`` after each training batch, with the usual
    warm-up ``decay_t = min(decay, (1 + t) / (10 + t))`` so early averages are not stuck at the
    random initialisation. Buffers (GroupNorm has none, but others may) are copied."""

    def __init__(self, decay: float) -> None:
        if isinstance(decay, bool) or not 0.0 <= decay < 1.0:
            raise UserError(
                f"model.ema_decay={decay!r} is invalid: use a value in [0, 1) (0.999 is "
                "usual), or null for no weight averaging"
            )
        self.decay = float(decay)

    @torch.no_grad()
    def update(self, ema: nn.Module, net: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for average, current in zip(ema.parameters(), net.parameters(), strict=True):
            average.lerp_(current.detach().to(average.dtype), 1.0 - decay)
        for average, current in zip(ema.buffers(), net.buffers(), strict=True):
            average.copy_(current)


class RestorationModule(L.LightningModule):
    """Shared base. Args (plain values; kept as attributes, whatever the subclass saves):

    monitor: the metric the run is judged by (set once, in the top-level ``monitor`` config;
        the scheduler watches it).
    lpips_weights: path to AlexNet weights for LPIPS; None = torch hub cache, else skipped.
    compute_lpips: False skips LPIPS even if weights exist.
    n_panel_images: validation images kept for the image-panel callback.
    ema_decay: None, or the decay of an exponential moving average of the restoring network's
        weights, which validation, test and the exported checkpoint then use.
    postprocess: the post-processing stages (built from the ``postprocess`` config by
        ``train.py``) that validation and test apply after the network, as inference does;
        None: none. Modules whose outputs they fit apply them in ``evaluate_batch``.
    """

    #: Set by modules whose steps leave some parameters without gradients (DDP must know).
    find_unused_parameters = False

    def __init__(
        self,
        monitor: str = "val/psnr",
        lpips_weights: str | None = None,
        compute_lpips: bool = True,
        n_panel_images: int = 4,
        ema_decay: float | None = None,
        postprocess: Postprocess | None = None,
    ) -> None:
        super().__init__()
        self.postprocess = postprocess if postprocess is not None else Postprocess()
        self.averager = None if ema_decay is None else ExponentialMovingAverage(ema_decay)
        self.monitor = monitor
        self.n_panel_images = int(n_panel_images)
        self.metrics = torch.nn.ModuleDict(
            {name: RestorationMetrics() for name in ("val", "val_input", "test", "test_input")}
        )
        # Kept outside the module tree: LPIPS weights must not enter checkpoints.
        self.__dict__["lpips"] = build_lpips(lpips_weights) if compute_lpips else None
        self.panel: dict[str, torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ for subclasses
    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def restore(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def restorer_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ weight averaging
    def average_weights(self, net: nn.Module) -> None:
        """Keep an average of ``net``'s weights (``self.ema``) when ``ema_decay`` is set.
        Subclasses call this once, with the network inference runs, after assigning it."""
        if self.averager is not None:
            self.ema = copy.deepcopy(net).requires_grad_(False).eval()

    @property
    def inference_net(self) -> nn.Module:
        """The network validation, test and inference run: the weight average if kept."""
        return self.ema if self.averager is not None else self.net

    @property
    def exported_weights(self) -> str:
        """The state-dict prefix of :attr:`inference_net` (``restorer_spec``'s ``weights``)."""
        return "ema" if self.averager is not None else "net"

    def batches_trained(self) -> int:
        """Training batches so far (``global_step`` counts optimiser steps; a module that
        steps several optimisers per batch says how to convert)."""
        return self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.averager is not None:
            self.averager.update(self.ema, self.net, self.batches_trained())

    # ------------------------------------------------------------------ shared evaluation
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        # A network bounded by each frame's noise is given the batch's (None: not known).
        with frame_noise(batch.get("photons_per_unit")):
            loss, restored = self.evaluate_batch(batch)
        observed = batch.get("observed", batch["input"])
        size = observed.shape[0]
        self.log(f"{stage}/loss", loss, batch_size=size, sync_dist=True, prog_bar=stage == "val")
        truth = batch.get("truth")
        if truth is not None:
            baseline = match_shape(observed, truth)
            self.metrics[stage].update(restored, truth)
            self.metrics[f"{stage}_input"].update(baseline, truth)
            if self.lpips is not None:
                self.lpips.to(restored.device)
                distance = lpips_distance(self.lpips, restored, truth).mean()
                self.log(f"{stage}/lpips", distance, batch_size=size, sync_dist=True)
        elif restored.shape == observed.shape:
            # No truth: what can be known (output vs input, in physical units).
            normalizer = self.trainer.datamodule.normalizer
            offset, scale = batch["offset"], batch["scale"]
            before = normalizer.inverse(observed.float(), offset, scale)
            after = normalizer.inverse(restored.float(), offset, scale)
            for name, value in no_truth_measures(before, after).items():
                self.log(f"{stage}/{name}", value, batch_size=size, sync_dist=True)
        if stage == "val" and self._panel_batch:
            n = self.n_panel_images
            self.panel = {
                "input": observed[:n].detach().float().cpu(),
                "restored": restored[:n].detach().float().cpu(),
                "truth": None if truth is None else truth[:n].detach().float().cpu(),
                "offset": batch["offset"][:n].detach().float().cpu(),
                "scale": batch["scale"][:n].detach().float().cpu(),
            }

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._panel_batch = batch_idx == 0
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._panel_batch = False
        self._evaluate(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        for prefix, key in ((stage, stage), (f"{stage}/input", f"{stage}_input")):
            metrics = self.metrics[key]
            if not metrics.update_called:
                continue
            values = metrics.compute()
            self.log(f"{prefix}/psnr", values["psnr"], prog_bar=prefix == stage)
            self.log(f"{prefix}/ssim", values["ssim"], prog_bar=prefix == stage)
            metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def optimizer_config(self, params: Any) -> dict[str, Any]:
        """One optimizer (``self.optimizer_factory``) and its optional scheduler
        (``self.scheduler_factory``), the scheduler watching the run's monitor."""
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": self.scheduler_config(self.scheduler_factory(optimizer=optimizer)),
        }

    def scheduler_config(self, scheduler: Any) -> dict[str, Any]:
        """Lightning's scheduler dict, watching the run's one monitor."""
        return {
            "scheduler": scheduler,
            "monitor": self.monitor,
            "interval": "epoch",
            "frequency": 1,
        }
