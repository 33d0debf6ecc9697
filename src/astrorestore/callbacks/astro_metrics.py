"""Cheap astronomy measures of the validation panel, logged every validation epoch.

The module keeps a few validation images (the panel, in the normalised space, with their
``offset``/``scale``); this callback brings them back to physical units and logs
``val/astro/f1`` (detections vs the truth's), ``val/astro/flux_bias`` (median relative aperture
flux error) and ``val/astro/peak_ratio`` (bright-star peaks, restored over truth) from
:func:`astrorestore.evaluation.panel.panel_astro_metrics`. They can select checkpoints or sweeps, e.g.
``monitor.metric=val/astro/f1``. Nothing is logged where there is no truth.
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
        if restored.shape != observed.shape or restored.shape[1] != 1:
            return  # grey frames of the input's size only (photometry is pixel by pixel)
        normalizer = trainer.datamodule.normalizer
        offset, scale = panel["offset"], panel["scale"]
        physical = [
            normalizer.inverse(x, offset, scale).numpy() for x in (restored, truth, observed)
        ]
        measures = panel_astro_metrics(*physical, fwhm=self.fwhm, threshold=self.threshold)
        for key, value in measures.items():
            pl_module.log(f"val/astro/{key}", torch.tensor(value))
