"""Cheap astronomy measures of the validation panel, logged every validation epoch.

The module keeps a few validation images (the panel, in the normalised space, with their
``offset``/``scale``); this callback brings them back to physical units and logs
``val/astro/f1`` (detections vs the truth's), ``val/astro/flux_bias`` (median relative aperture
flux error) and ``val/astro/peak_ratio`` (bright-star peaks, restored over truth) from
:func:`astrorestore.evaluation.panel.panel_astro_metrics`. They can select checkpoints or sweeps, e.g.
``monitor.metric=val/astro/f1``. Nothing is logged where there is no truth.

A generative method's panel (an output of another size or channels than its input: SR3, the
cGAN) is scored instead on the realism and consistency axes of
:func:`astrorestore.evaluation.generative.generative_axes` (cheap measures only; PSNR/SSIM are
the module's own): ``val/realism/power_<band>``, ``val/realism/patch_swd``, for colour
``val/realism/colourfulness_ratio`` and ``val/realism/chroma_swd``, and
``val/consistency/error_sigma`` (the output degraded by the pairing's forward model against
the input, in units of the input's noise; ~1 = consistent with its data).
"""

from __future__ import annotations

import lightning as L
import torch


class AstroMetrics(L.Callback):
    def __init__(self, fwhm: float = 2.5, threshold: float = 5.0) -> None:
        self.fwhm = float(fwhm)
        self.threshold = float(threshold)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Imported here: photutils is slow to import and most runs never reach this callback.
        from astrorestore.evaluation.panel import panel_astro_metrics

        panel = getattr(pl_module, "panel", None)
        if not panel or panel.get("truth") is None or trainer.sanity_checking:
            return
        restored, truth, observed = panel["restored"], panel["truth"], panel["input"]
        normalizer = trainer.datamodule.normalizer
        offset, scale = panel["offset"], panel["scale"]
        physical = [normalizer.inverse(x, offset, scale) for x in (restored, truth, observed)]
        if restored.shape != observed.shape:
            self._log_generative(trainer, pl_module, *physical)
            return
        if restored.shape[1] != 1:
            return  # grey frames of the input's size only (photometry is pixel by pixel)
        measures = panel_astro_metrics(
            *(x.numpy() for x in physical), fwhm=self.fwhm, threshold=self.threshold
        )
        for key, value in measures.items():
            pl_module.log(f"val/astro/{key}", torch.tensor(value))

    @staticmethod
    def _log_generative(
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        restored: torch.Tensor,
        truth: torch.Tensor,
        observed: torch.Tensor,
    ) -> None:
        from astrorestore.evaluation.generative import (
            flat_measures,
            forward_model_of,
            generative_axes,
        )

        forward = forward_model_of(getattr(trainer.datamodule, "pairing", None))
        if restored.shape[1] == 3:
            # Photographs: the colour measures take RGB in [0, 1].
            restored, truth = restored.clamp(0.0, 1.0), truth.clamp(0.0, 1.0)
        axes = generative_axes(restored, truth, observed, forward, cheap=True)
        for key, value in flat_measures(axes).items():
            pl_module.log(f"val/{key}", torch.tensor(value))
