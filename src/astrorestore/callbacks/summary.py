"""Prints the best validation scores and the best checkpoint at the end of training."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console
from rich.table import Table

from astrorestore.callbacks.nan_guard import last_good_checkpoint

# Logged without a truth (modules/base.py), with what each says.
NO_TRUTH_ROWS = (
    ("val/loss", "training loss on the validation crops"),
    ("val/sky_noise_ratio", "empty-sky noise, output / input"),
    ("val/bright_flux_ratio", "bright-source flux, output / input"),
)


def data_range_note(trainer: L.Trainer) -> str:
    """What the logged PSNR/SSIM were measured against, in the data module's own space."""
    from astrorestore.data.normalization.photo import PhotoNormalizer

    normalizer = getattr(getattr(trainer, "datamodule", None), "normalizer", None)
    space = (
        "photograph units ([-1, 1] = black to full scale)"
        if isinstance(normalizer, PhotoNormalizer)
        else "asinh-normalised units"
    )
    return (
        f"PSNR/SSIM data range: per image, the clean truth's max - min in {space}; input "
        "baseline: the noisy input (bicubic-upsampled for super-resolution, grey in every "
        "channel for colorization)."
    )


class RunSummary(L.Callback):
    """Records validation metrics per epoch; on fit end (or Ctrl-C, then with ``"interrupted":
    true`` and the checkpoint to resume from) prints and saves ``summary.json``.

    "Best" is the epoch the checkpoint callback chose (its ``monitor`` and ``mode``), so the
    printed PSNR/SSIM belong to the same weights as the printed checkpoint path; without a
    checkpoint callback, ``monitor``/``mode`` given here decide.
    """

    def __init__(self, monitor: str, mode: str, filename: str = "summary.json") -> None:
        self.monitor = monitor
        self.mode = mode
        self.filename = filename
        self.history: list[dict[str, float]] = []
        self.summary: dict = {}

    # The epochs before a resume belong to the run: "best" is chosen over all of them, as the
    # checkpoint callback's best score is (callbacks/checkpoint.py).
    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))

    # on_validation_end runs after the module's on_validation_epoch_end has logged the epoch's
    # metrics; a callback's on_validation_epoch_end would still see the previous epoch's.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                row[key] = float(value)
        self.history.append(row)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # Ctrl-C: Lightning stops the run (exit status 1) without on_fit_end; the finished
        # epochs still get their summary, and the user the checkpoint to resume from.
        if not isinstance(exception, KeyboardInterrupt):
            return
        self._finish(trainer, interrupted=True)
        if trainer.is_global_zero and not trainer.fast_dev_run:
            last = last_good_checkpoint(trainer)
            resume = f"resume with ckpt_path={last}" if last else "no checkpoint was written yet"
            Console(stderr=True).print(
                f"interrupted at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                f"{len(self.history)} finished epoch(s) in summary.json; {resume}",
                soft_wrap=True,
                markup=False,
            )

    def _finish(self, trainer: L.Trainer, interrupted: bool = False) -> None:
        if trainer.fast_dev_run:
            return
        checkpoint = trainer.checkpoint_callback
        monitor, mode, best_path = self.monitor, self.mode, None
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor:
            # The checkpoint callback's choice is the one whose weights we can point at.
            monitor, mode = checkpoint.monitor, checkpoint.mode
            best_path = checkpoint.best_model_path or checkpoint.last_model_path or None
        scored = [row for row in self.history if monitor in row]
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda row: row[monitor]) if scored else {}
        self.summary = {
            "monitor": monitor,
            "mode": mode,
            "best_epoch": best.get("epoch"),
            "best": {k: v for k, v in best.items() if k != "epoch"},
            "best_checkpoint": best_path,
            "epochs_run": len(self.history),
            "history": self.history,
        }
        if interrupted:
            self.summary["interrupted"] = True
        against_truth = any(f"val/{metric}" in best for metric in ("psnr", "ssim", "lpips"))
        if against_truth:
            self.summary["data_range"] = data_range_note(trainer)
        if not trainer.is_global_zero:
            return
        Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(trainer.default_root_dir) / self.filename, "w") as handle:
            json.dump(self.summary, handle, indent=2)
        console = Console()
        if against_truth:
            table = Table(title="best validation epoch (metrics vs clean truth)")
            table.add_column("metric")
            table.add_column("restored", justify="right")
            # The naive baseline: the noisy input, bicubic for super-resolution, grey for colour.
            table.add_column("input baseline", justify="right")
            for metric in ("psnr", "ssim", "lpips"):
                key = f"val/{metric}"
                if key in best:
                    baseline = best.get(f"val/input/{metric}")
                    table.add_row(
                        metric.upper() + (" (dB)" if metric == "psnr" else ""),  # [dB]: markup
                        f"{best[key]:.3f}",
                        f"{baseline:.3f}" if baseline is not None else "-",
                    )
            console.print(table)
            console.print(self.summary["data_range"])
        else:
            # Self-supervised runs on real frames: what can be known without a truth (an empty
            # "metrics vs clean truth" table was printed here).
            table = Table(title="best validation epoch (no clean truth: output vs noisy input)")
            table.add_column("metric")
            table.add_column("value", justify="right")
            for key, label in NO_TRUTH_ROWS:
                if key in best:
                    table.add_row(f"{key} ({label})", f"{best[key]:.4g}")
            if table.row_count:
                console.print(table)
            console.print(
                f"no clean truth: PSNR/SSIM cannot be measured; selected by {monitor} ({mode})"
            )
        console.print(
            f"best epoch: {best.get('epoch')} by {monitor} ({mode})  best checkpoint: {best_path}"
        )
