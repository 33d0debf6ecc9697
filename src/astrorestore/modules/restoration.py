"""LightningModule for image-to-image restoration from (input, target) batches.

The data module decides what ``target`` is (the clean truth for supervised training; a second
noisy realisation for Noise2Noise), so one module serves every method whose only difference
is the pairing. Quality metrics are always computed against the clean truth (``clean``
batches from validation/test), never against a noisy target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from astrorestore import __version__
from astrorestore.metrics.image_quality import RestorationMetrics
from astrorestore.metrics.lpips_metric import build_lpips, lpips_distance


class RestorationModule(L.LightningModule):
    """Trains ``net`` to map ``batch['input']`` to ``batch['target']`` with ``loss``.

    Args:
        net: the network (an ``nn.Module``), already built from its config.
        loss: module returning ``(total, terms)``.
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: optional factory ``optimizer -> scheduler``; ReduceLROnPlateau watches
            ``monitor``.
        method: name stored in checkpoints (``infer.py`` reports it in FITS headers).
        monitor: validation metric for the scheduler (checkpoints/early stopping say theirs).
        lpips_weights: optional path to AlexNet weights for LPIPS (else the torch hub cache).
        compute_lpips: set False to skip LPIPS even if weights exist.
        n_panel_images: how many validation images to keep for the image-panel callback.
    """

    task = "denoise"

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        method: str = "supervised",
        monitor: str = "val/psnr",
        lpips_weights: str | None = None,
        compute_lpips: bool = True,
        n_panel_images: int = 4,
    ) -> None:
        super().__init__()
        # Only plain values go into hparams, so checkpoints load with torch's weights_only.
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_metrics = RestorationMetrics()
        self.val_input_metrics = RestorationMetrics()
        self.test_metrics = RestorationMetrics()
        self.test_input_metrics = RestorationMetrics()
        # Kept outside the module tree: LPIPS weights must not enter checkpoints.
        self.__dict__["lpips"] = build_lpips(lpips_weights) if compute_lpips else None
        self.panel: dict[str, torch.Tensor] | None = None
        # The resolved run config; train.py sets it so checkpoints can rebuild the network.
        self.run_config: dict | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self(batch["input"])
        total, terms = self.loss(pred, batch["target"], batch.get("loss_mask"))
        batch_size = pred.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return total

    def _evaluate(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self(batch["input"])
        truth = batch["clean"] if "clean" in batch else batch["target"]
        total, _ = self.loss(pred, batch["target"], batch.get("loss_mask"))
        self.log(f"{stage}/loss", total, batch_size=pred.shape[0], sync_dist=True)
        getattr(self, f"{stage}_metrics").update(pred, truth)
        # The noisy input scored the same way: the baseline the restoration must beat.
        getattr(self, f"{stage}_input_metrics").update(batch["input"], truth)
        if self.lpips is not None:
            self.lpips.to(pred.device)
            self.log(
                f"{stage}/lpips",
                lpips_distance(self.lpips, pred, truth).mean(),
                batch_size=pred.shape[0],
                sync_dist=True,
            )
        return pred, truth

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred, truth = self._evaluate(batch, "val")
        if batch_idx == 0:
            n = self.hparams.n_panel_images
            self.panel = {
                "input": batch["input"][:n].detach().float().cpu(),
                "restored": pred[:n].detach().float().cpu(),
                "truth": truth[:n].detach().float().cpu(),
            }

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        for prefix, metrics in (
            (stage, getattr(self, f"{stage}_metrics")),
            (f"{stage}/input", getattr(self, f"{stage}_input_metrics")),
        ):
            values = metrics.compute()
            self.log(f"{prefix}/psnr", values["psnr"], prog_bar=prefix == stage, sync_dist=False)
            self.log(f"{prefix}/ssim", values["ssim"], prog_bar=prefix == stage, sync_dist=False)
            metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["astrorestore"] = {
            "version": __version__,
            "method": self.hparams.method,
            "task": self.task,
            "config": self.run_config,
        }
