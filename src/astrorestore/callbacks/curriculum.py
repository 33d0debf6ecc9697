"""Curriculum: train on easy data first, then hard data, then fine-tune on source-rich patches.

Each stage covers a fraction of ``trainer.max_epochs`` and hands its ``settings`` to the data
module (``datamodule.apply_stage``), which says which it supports: e.g. ``exposure_range`` of
the pairing's noise model (longer exposure = higher signal-to-noise = easier) and
``source_patch_fraction`` (the share of training patches forced to contain a source). Unknown
settings fail when training starts, not at the stage that needs them.

``lr_scale`` is relative to the first stage: entering a stage multiplies the *current* rate by
the ratio of the new and old scales, so a reduction the LR scheduler made is kept.

Early stopping (any ``EarlyStopping`` callback, patience >= 2) only counts epochs of the last
stage: its patience restarts at every epoch before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

from astrorestore.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    fraction: float
    lr_scale: float = 1.0
    settings: dict[str, Any] = field(default_factory=dict)


class Curriculum(L.Callback):
    def __init__(self, stages: list[dict]) -> None:
        if not stages:
            raise UserError("curriculum.stages is empty; use curriculum=none to train without one")
        self.stages = []
        for raw in stages:
            raw = dict(raw)
            try:
                name, fraction = raw.pop("name"), float(raw.pop("fraction"))
            except KeyError as exc:
                raise UserError(f"curriculum stage {raw} has no '{exc.args[0]}'") from None
            lr_scale = float(raw.pop("lr_scale", 1.0))
            if lr_scale <= 0:
                raise UserError(f"curriculum stage '{name}': lr_scale={lr_scale} must be > 0")
            settings = {key: value for key, value in raw.items() if value is not None}
            self.stages.append(Stage(name, fraction, lr_scale, settings))
        total = sum(stage.fraction for stage in self.stages)
        if any(stage.fraction <= 0 for stage in self.stages) or abs(total - 1.0) > 1e-6:
            raise UserError(
                f"curriculum stage fractions must be > 0 and sum to 1, got "
                f"{[s.fraction for s in self.stages]}"
            )
        self.current: int | None = None
        self._applied_lr_scale = 1.0

    def stage_index(self, epoch: int, max_epochs: int) -> int:
        """Stage for ``epoch``: boundaries at cumulative fractions of max_epochs."""
        boundary = 0.0
        for index, stage in enumerate(self.stages):
            boundary += stage.fraction * max_epochs
            if epoch < round(boundary):
                return index
        return len(self.stages) - 1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every stage's settings checked against the data before the first epoch.
        supported = trainer.datamodule.stage_settings()
        for stage in self.stages:
            unknown = sorted(set(stage.settings) - set(supported))
            if unknown:
                trainer.datamodule.apply_stage(**{unknown[0]: stage.settings[unknown[0]]})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        index = self.stage_index(trainer.current_epoch, max_epochs)
        pl_module.log("curriculum/stage", float(index), on_epoch=True, on_step=False)
        if index < len(self.stages) - 1:
            # Early stopping counts only in the last stage: a plateau of the easy stage says
            # nothing about the harder data still to come (measured: patience 5 stopped a
            # 96-epoch run at epoch 27, before its 'hard' and 'filter' stages had begun).
            for callback in getattr(trainer, "callbacks", []):
                if isinstance(callback, EarlyStopping):
                    callback.wait_count = 0
        if index == self.current:
            return
        self.current = index
        stage = self.stages[index]
        trainer.datamodule.apply_stage(**stage.settings)
        ratio = stage.lr_scale / self._applied_lr_scale
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= ratio
        self._applied_lr_scale = stage.lr_scale
        log.info(
            "curriculum stage %d/%d '%s' from epoch %d: %s, lr x%g",
            index + 1,
            len(self.stages),
            stage.name,
            trainer.current_epoch,
            stage.settings,
            stage.lr_scale,
        )

    def state_dict(self) -> dict:
        return {"current": self.current, "applied_lr_scale": self._applied_lr_scale}

    def load_state_dict(self, state_dict: dict) -> None:
        # The data settings are not in the checkpoint: the stage of the resumed epoch is applied
        # again at the next epoch start. The restored optimizer already has the stage's rate,
        # which the remembered scale keeps from being applied twice.
        self._applied_lr_scale = float(state_dict.get("applied_lr_scale", 1.0))
        self.current = None
