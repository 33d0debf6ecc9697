"""What every method's LightningModule shares: evaluation against the truth, panels, LPIPS.

A method subclasses :class:`RestorationModule` and implements

- ``training_step`` (its kind of training: regression, adversarial, diffusion);
- ``evaluate_batch(batch) -> (loss, restored)``: the validation loss and the restoration of
  ``batch["observed"]`` (or ``batch["input"]``), in the normalised space;
- ``restore(x)``: normalised input -> normalised output (what ``infer.py`` runs on tiles);
- ``restorer_spec()``: how inference rebuilds the thing that restores (see
  :mod:`astrorestore.inference.restorer`).

Metrics are computed only against ``batch["truth"]`` and only where it exists. The noisy
input, brought to the output's shape, is scored the same way as the baseline to beat
(``val/input/*``). Where there is no truth (real frames), the measures that can be known are
logged instead: empty-sky noise and bright-source flux, output relative to input.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from astrorestore.metrics.image_quality import RestorationMetrics
from astrorestore.metrics.lpips_metric import build_lpips, lpips_distance
from astrorestore.metrics.no_truth import bright_flux_ratio, sky_noise_ratio


def match_shape(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``image`` brought to ``like``'s channels and size: the naive baseline of any method
    (grey copied to every colour channel, bicubic up-sampling for super-resolution)."""
    if image.shape[1] != like.shape[1]:
        image = image.mean(1, keepdim=True).expand(-1, like.shape[1], -1, -1)
    if image.shape[-2:] != like.shape[-2:]:
        image = F.interpolate(image, size=like.shape[-2:], mode="bicubic", align_corners=False)
    return image


class RestorationModule(L.LightningModule):
    """Shared base. Args (plain values; kept as attributes, whatever the subclass saves):

    monitor: the metric the run is judged by (set once, in the top-level ``monitor`` config;
        the scheduler watches it).
    lpips_weights: path to AlexNet weights for LPIPS; None = torch hub cache, else skipped.
    compute_lpips: False skips LPIPS even if weights exist.
    n_panel_images: validation images kept for the image-panel callback.
    """

    #: Set by modules whose steps leave some parameters without gradients (DDP must know).
    find_unused_parameters = False

    def __init__(
        self,
        monitor: str = "val/psnr",
        lpips_weights: str | None = None,
        compute_lpips: bool = True,
        n_panel_images: int = 4,
    ) -> None:
        super().__init__()
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

    # ------------------------------------------------------------------ shared evaluation
    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str) -> None:
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
            for name, measure in (
                ("sky_noise_ratio", sky_noise_ratio),
                ("bright_flux_ratio", bright_flux_ratio),
            ):
                value = measure(before, after)
                if torch.isfinite(value):  # a batch without sky or bright sources says nothing
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
