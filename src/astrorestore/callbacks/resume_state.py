"""Random state in the checkpoint, so that ``ckpt_path=last`` continues the very same run.

Lightning already restores weights, optimiser, scheduler, loop counters and callback states
(the curriculum stage among them). What it does not restore is randomness: the torch, numpy
and Python generators, the data module's device generator (noise draws, blind-spot masks,
augmentation) and the training set's crop generator. Without them a resumed run trains on
other patches and other noise than the uninterrupted run would have, and ends elsewhere.

Lightning fetches one training batch ahead, so when a checkpoint is written after batch ``k``
the crop generator has already produced batch ``k + 1``, which the resumed run will draw again.
The callback therefore records the crop generator's state before each item it draws and stores
the state from before the first item not yet trained on. This needs the items drawn in the
training process (``data.num_workers=0``, the default); with workers, resuming at an epoch
boundary continues the workers' seeds, and a mid-epoch resume draws new crops.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)

KEY = "astrorestore_random_state"


def _crop_state(dataset: Any) -> dict | None:
    """The training set's own random state: ``state_dict()`` if it has one, else the numpy
    generator it keeps in ``_rng`` (:class:`~astrorestore.data.datamodules.simulated.RandomPatchDataset`)."""
    if dataset is None:
        return None
    if hasattr(dataset, "state_dict") and callable(dataset.state_dict):
        return {"state_dict": dataset.state_dict()}
    rng = getattr(dataset, "_rng", None)
    if isinstance(rng, np.random.Generator):
        return {"bit_generator": rng.bit_generator.state}
    return None


def _load_crop_state(dataset: Any, state: dict | None) -> None:
    if dataset is None or state is None:
        return
    if "state_dict" in state and hasattr(dataset, "load_state_dict"):
        dataset.load_state_dict(state["state_dict"])
        return
    if "bit_generator" in state and hasattr(dataset, "_rng"):
        rng = np.random.default_rng()
        rng.bit_generator.state = state["bit_generator"]
        dataset._rng = rng
        # The dataset re-creates its generator when this key changes (new process, new torch
        # seed); the key of this process makes it keep the restored one.
        dataset._rng_key = (os.getpid(), torch.initial_seed(), getattr(dataset, "rank", 0))


def _plain_numpy_state() -> tuple:
    # Plain Python values, so the checkpoint still loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), int(pos), int(has_gauss), float(cached)


class ResumeRandomState(L.Callback):
    """Saves and restores every random stream a training step draws from (see module doc)."""

    def __init__(self) -> None:
        # Crop-generator states before each item drawn, by item count, while the items are
        # still fetched ahead of training (num_workers=0: the items are drawn in this process).
        self._states_before_item: dict[int, dict] = {}
        self._items_drawn = 0
        self._items_trained = 0
        self._pending_device_state: torch.Tensor | None = None

    @staticmethod
    def _train_set(trainer: L.Trainer) -> Any:
        datamodule = getattr(trainer, "datamodule", None)
        return getattr(datamodule, "train_set", None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dataset = self._train_set(trainer)
        workers = getattr(getattr(trainer, "datamodule", None), "num_workers", 0)
        draw = getattr(dataset, "_generator", None)
        if stage != "fit" or workers or not callable(draw) or hasattr(dataset, "state_dict"):
            return
        if getattr(draw, "_records_for", None) is self:
            return

        def recording_draw() -> np.random.Generator:
            rng = draw()
            self._states_before_item[self._items_drawn] = rng.bit_generator.state
            self._items_drawn += 1
            return rng

        recording_draw._records_for = self  # type: ignore[attr-defined]
        dataset._generator = recording_draw

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        self._items_trained += int(first.shape[0])
        for item in [i for i in self._states_before_item if i < self._items_trained]:
            del self._states_before_item[item]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The device generator lives on the module's device, known only once training starts
        # (and before the first batch is paired).
        datamodule = getattr(trainer, "datamodule", None)
        if self._pending_device_state is not None and hasattr(datamodule, "device_generator"):
            datamodule.device_generator(pl_module.device).set_state(self._pending_device_state)
        self._pending_device_state = None

    def _crops_to_save(self, trainer: L.Trainer) -> dict | None:
        crop = _crop_state(self._train_set(trainer))
        # Items fetched ahead of the batches trained so far are drawn again after a resume: save
        # the state from before the first of them.
        ahead = self._states_before_item.get(self._items_trained)
        if crop is not None and "bit_generator" in crop and ahead is not None:
            crop = {"bit_generator": ahead}
        return crop

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        generator = getattr(datamodule, "_generator", None)
        checkpoint[KEY] = {
            "rank": trainer.global_rank,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": _plain_numpy_state(),
            "python": random.getstate(),
            "device_generator": generator.get_state() if generator is not None else None,
            "crops": self._crops_to_save(trainer),
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(KEY)
        if state is None:
            log.warning("checkpoint has no random state: the resumed run draws new noise/crops")
            return
        if state.get("rank", 0) != trainer.global_rank:
            # Checkpoints are written by rank 0; other ranks keep their own (per-rank) streams.
            return
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate(state["python"])
        self._pending_device_state = state.get("device_generator")
        # Restored now: the first training batch is fetched before any training hook runs.
        _load_crop_state(self._train_set(trainer), state.get("crops"))
        self._apply_curriculum_stage(trainer, checkpoint)

    @staticmethod
    def _apply_curriculum_stage(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
        """Set the data to the resumed epoch's curriculum stage before the first batch is
        fetched (the curriculum itself applies it at the epoch start, one batch too late)."""
        progress = checkpoint.get("loops", {}).get("fit_loop", {})
        finished = progress.get("epoch_loop.batch_progress", {}).get("is_last_batch", False)
        epoch = int(checkpoint.get("epoch", 0)) + (1 if finished else 0)
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        for callback in trainer.callbacks:
            if hasattr(callback, "stage_index") and hasattr(callback, "stages"):
                stage = callback.stages[callback.stage_index(epoch, max_epochs)]
                trainer.datamodule.apply_stage(**stage.settings)
