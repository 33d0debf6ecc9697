"""Curriculum: train on easy data first, then hard data, then fine-tune on source-rich patches.

Each stage covers a fraction of ``trainer.max_epochs`` and sets, on the data module:
``noise.exposure_range`` (longer exposure = higher signal-to-noise = easier) and
``source_patch_fraction`` (the share of training patches forced to contain a source; the
"filter" stage keeps patches with stars/galaxies so the last epochs polish what matters for
photometry). ``lr_scale`` multiplies the optimizer's initial learning rate for that stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning as L

from astrorestore.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    fraction: float
    exposure_range: tuple[float, float] | None = None
    source_patch_fraction: float | None = None
    lr_scale: float = 1.0


class Curriculum(L.Callback):
    def __init__(self, stages: list[dict]) -> None:
        if not stages:
            raise UserError("curriculum.stages is empty; use curriculum=none to train without one")
        self.stages = [Stage(**dict(stage)) for stage in stages]
        total = sum(stage.fraction for stage in self.stages)
        if any(stage.fraction <= 0 for stage in self.stages) or abs(total - 1.0) > 1e-6:
            raise UserError(
                f"curriculum stage fractions must be > 0 and sum to 1, got "
                f"{[s.fraction for s in self.stages]}"
            )
        self.current: int | None = None
        self._base_lrs: list[float] | None = None

    def stage_index(self, epoch: int, max_epochs: int) -> int:
        """Stage for ``epoch``: boundaries at cumulative fractions of max_epochs."""
        boundary = 0.0
        for index, stage in enumerate(self.stages):
            boundary += stage.fraction * max_epochs
            if epoch < round(boundary):
                return index
        return len(self.stages) - 1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        index = self.stage_index(trainer.current_epoch, max_epochs)
        pl_module.log("curriculum/stage", float(index), on_epoch=True, on_step=False)
        if index == self.current:
            return
        self.current = index
        stage = self.stages[index]
        datamodule = trainer.datamodule
        if stage.exposure_range is not None:
            datamodule.noise.exposure_range = tuple(stage.exposure_range)
        if stage.source_patch_fraction is not None:
            datamodule.source_patch_fraction = stage.source_patch_fraction
        optimizers = trainer.optimizers
        if self._base_lrs is None:
            self._base_lrs = [group["lr"] for opt in optimizers for group in opt.param_groups]
        groups = [group for opt in optimizers for group in opt.param_groups]
        for group, base_lr in zip(groups, self._base_lrs, strict=False):
            group["lr"] = base_lr * stage.lr_scale
        log.info(
            "curriculum stage %d/%d '%s' from epoch %d: exposure %s, source patches %s, lr x%g",
            index + 1,
            len(self.stages),
            stage.name,
            trainer.current_epoch,
            stage.exposure_range,
            stage.source_patch_fraction,
            stage.lr_scale,
        )

    def state_dict(self) -> dict:
        return {"current": self.current, "base_lrs": self._base_lrs}

    def load_state_dict(self, state_dict: dict) -> None:
        # Resuming re-applies the stage of the resumed epoch at the next epoch start.
        self._base_lrs = state_dict.get("base_lrs")
        self.current = None
