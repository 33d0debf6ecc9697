"""Input | restored | truth | residual panels at the end of each validation epoch.

Saved as PNG under ``<output_dir>/panels/`` (whatever the logger) and sent to Weights &
Biases when a WandbLogger is active. All panels of a row share one display range (the
truth's 0.5-99.8 percentiles in the normalised space) so they can be compared by eye.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402


def render_panels(panel: dict, title: str = "") -> plt.Figure:
    """Figure with one row per image: input, restored, truth, restored - truth."""
    rows = panel["truth"].shape[0]
    columns = ("input", "restored", "truth", "restored - truth")
    figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
    for row in range(rows):
        truth = panel["truth"][row, 0].numpy()
        low, high = np.percentile(truth, [0.5, 99.8])
        images = (
            panel["input"][row, 0].numpy(),
            panel["restored"][row, 0].numpy(),
            truth,
            panel["restored"][row, 0].numpy() - truth,
        )
        for column, (name, image) in enumerate(zip(columns, images, strict=False)):
            axis = axes[row, column]
            if name == "restored - truth":
                limit = max(float(np.abs(images[0] - truth).std()), 1e-6) * 2
                axis.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit)
            else:
                axis.imshow(image, cmap="magma", vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
    figure.suptitle(title + "  (asinh-normalised units)", fontsize=10)
    figure.tight_layout()
    return figure


class ImagePanels(L.Callback):
    def __init__(self, every_n_epochs: int = 1, dirname: str = "panels") -> None:
        self.every_n_epochs = max(1, every_n_epochs)
        self.dirname = dirname

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        panel = getattr(pl_module, "panel", None)
        if panel is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs:
            return
        figure = render_panels(panel, title=f"epoch {trainer.current_epoch}")
        folder = Path(trainer.default_root_dir) / self.dirname
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"epoch_{trainer.current_epoch:03d}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/panels", [str(path)], step=trainer.global_step)
