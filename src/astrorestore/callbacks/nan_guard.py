"""Stop a run at the first non-finite loss, before it can reach the weights or a checkpoint.

A NaN or Inf loss poisons every weight after one optimiser step, and a step-based checkpoint
written afterwards would overwrite the last good ``last.ckpt`` with garbage. The guard checks the
loss in ``on_before_backward`` (before gradients exist, automatic and manual optimisation alike)
and, optionally, the gradients in ``on_before_optimizer_step`` (a finite loss can still give
non-finite gradients, e.g. through a sqrt at 0). It then raises a one-line
:class:`~astrorestore.errors.UserError` naming the step and the last checkpoint, which the
checkpoint callbacks never got to replace.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from astrorestore.errors import UserError


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint the run wrote (``last.ckpt`` if any, else the best), or None."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        paths += [
            getattr(callback, "last_model_path", ""),
            getattr(callback, "best_model_path", ""),
        ]
    return next((path for path in paths if path), None)


class NanGuard(L.Callback):
    """Raise ``UserError`` at the first NaN/Inf loss (and gradient, if ``check_gradients``).

    Under DDP every rank takes part in the decision (one all-reduce of a flag), so all ranks stop
    together instead of one rank leaving the others waiting in a collective.
    """

    def __init__(self, check_gradients: bool = True) -> None:
        self.check_gradients = check_gradients

    def _stop_if(self, trainer: L.Trainer, bad: bool, what: str) -> None:
        if trainer.world_size > 1:
            bad = bool(trainer.strategy.reduce_boolean_decision(bad, all=False))
        if not bad:
            return
        checkpoint = last_good_checkpoint(trainer)
        kept = f"last good checkpoint kept: {checkpoint}" if checkpoint else "no checkpoint yet"
        raise UserError(
            f"non-finite {what} at step {trainer.global_step} (epoch {trainer.current_epoch}), "
            f"run stopped; {kept}; lower model.optimizer.lr or check the data for NaN/Inf"
        )

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        value = float(loss.detach().float().sum())
        self._stop_if(trainer, not math.isfinite(value), f"loss ({value})")

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.check_gradients:
            return
        grads = [
            p.grad.detach()
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        # One host sync for all gradients rather than one per tensor.
        bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        self._stop_if(trainer, bad, "gradient")
