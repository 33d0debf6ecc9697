"""Faults injected into real training runs by the integration tests (via `+callbacks.x=...`)."""

import os
import signal

import lightning as L
import torch


class KillAt(L.Callback):
    """SIGKILL this process when batch ``step`` (global step) is about to train: no clean-up,
    no final checkpoint, as when a node dies."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NanWeightsAt(L.Callback):
    """Poison the first parameter with NaN before batch ``step`` trains."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class InterruptAt(L.Callback):
    """Raise KeyboardInterrupt (what Ctrl-C does) when batch ``step`` is about to train."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
