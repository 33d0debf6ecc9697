"""Input | restored | truth | error | residual panels at the end of each validation epoch.

Saved as PNG under ``<output_dir>/panels/`` (whatever the logger) and sent to Weights &
Biases when a WandbLogger is active. The residual (input − restored) is the panel to look at:
it should be noise, with nothing left at the sources.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.loggers import WandbLogger  # noqa: E402


def _display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> what imshow takes: (H, W) grey or (H, W, 3) colour."""
    return image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)


def _upsample(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour enlargement of a low-resolution input, for display beside the output."""
    factor = shape[-1] // image.shape[-1]
    if factor > 1:
        image = image.repeat(factor, axis=-2).repeat(factor, axis=-1)
    return image


def render_panels(
    panel: dict,
    title: str = "",
    *,
    limit: float | None = None,
    units: str = "normalised units",
    row_labels: list[str] | None = None,
    size: float = 2.5,
) -> plt.Figure:
    """One row per image: input | restored | truth | restored − truth | input − restored.

    Columns that cannot exist are left out: no truth on real frames, no residual where the
    output has another shape than the input (colorization). The panels of a row, grey and
    colour, share one display range (the truth's, else the input's, 0.5–99.8 percentiles over
    all channels), so a photograph normalised to [−1, 1] is not shown half black.

    ``limit``: the differences' symmetric colour range (default: twice the row's noise, as
    measured against the truth); ``row_labels`` name the rows; ``size``: inches per panel.
    """
    truth_all = panel.get("truth")
    rows = panel["restored"].shape[0]
    columns: list[str] = ["input", "restored"]
    if truth_all is not None:
        columns += ["truth", "restored − truth"]
    same_shape = panel["input"].shape == panel["restored"].shape
    if same_shape:
        columns.append("input − restored")
    figure, axes = plt.subplots(
        rows, len(columns), figsize=(size * len(columns), (size + 0.1) * rows), squeeze=False
    )
    for row in range(rows):
        restored = panel["restored"][row].numpy()
        source = _upsample(panel["input"][row].numpy(), restored.shape)
        truth = None if truth_all is None else truth_all[row].numpy()
        reference = truth if truth is not None else source
        low, high = np.percentile(reference, [0.5, 99.8])
        images = {"input": source, "restored": restored}
        if truth is not None:
            images["truth"] = truth
            images["restored − truth"] = restored - truth
        if same_shape:
            images["input − restored"] = source - restored
        if source.shape == reference.shape:
            noise = float(np.abs(source - reference).std())
        else:  # colorization: no noise to measure, so errors are shown against the contrast
            noise = float(reference.std())
        shown = limit or max(noise, float(np.abs(reference).std()) * 0.05, 1e-6) * 2
        for column, name in enumerate(columns):
            axis = axes[row, column]
            image = _display(images[name])
            if "−" in name and image.ndim == 3:
                # A colour difference shown in colour (mid-grey = none): a colorizer keeps the
                # luminance, so a mean over the channels would hide every chroma error.
                axis.imshow(np.clip(0.5 + image / (2 * shown), 0.0, 1.0))
            elif "−" in name:
                axis.imshow(image, cmap="RdBu_r", vmin=-shown, vmax=shown)
            elif image.ndim == 3:
                axis.imshow(np.clip((image - low) / max(high - low, 1e-12), 0.0, 1.0))
            else:
                # Grey beside colour outputs (colorization) in grey, not a false-colour map.
                cmap = "gray" if restored.shape[0] == 3 else "magma"
                axis.imshow(image, cmap=cmap, vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=9)
            if column == 0 and row_labels is not None:
                axis.set_ylabel(row_labels[row], fontsize=9)
    figure.suptitle(f"{title}  ({units})", fontsize=10)
    # Room for the title above the column names (a third of an inch).
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.33 / figure.get_figheight()))
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
