"""Checkpointing that remembers the best score when a run is resumed into a new run folder.

``python train.py ckpt_path=<run>/checkpoints/last.ckpt`` writes into a new run folder.
Lightning's ``ModelCheckpoint`` forgets the best score when its folder changes, so the first
resumed epoch became "best" even when it was worse than the best epoch before the interruption,
and the best checkpoint, the test and the run summary then used the worse weights (early
stopping, whose state has no folder, still knew the old best). This callback keeps the score
and the path of the best checkpoint, which stays in the earlier run folder until a better epoch
is saved in the new one (Lightning never deletes checkpoints outside its own folder).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class RunCheckpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so checkpoints of either class resume into the other.
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        with warnings.catch_warnings():  # "... won't be reloaded": they are, below
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        self.best_model_score = state_dict["best_model_score"]
        self.best_k_models = dict(state_dict.get("best_k_models") or {})
        self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        if self.monitor and self.best_model_path:
            log.info(
                "resumed: best %s so far %.5g in %s",
                self.monitor,
                float(self.best_model_score),
                self.best_model_path,
            )
