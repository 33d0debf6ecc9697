"""Regression training: ``net(input)`` is fitted to ``target`` with a (masked) pixel loss.

One module serves every method whose difference lies in the data: supervised denoising
(noisy -> clean), Noise2Noise (noisy -> independent noisy) and Noise2Void (blind-spot masked
noisy -> noisy, loss only at the masked pixels). The pairing decides; this module does not
know which of them it is training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from astrorestore.data.normalization.asinh import frame_noise
from astrorestore.modules.base import RestorationModule
from astrorestore.nets.recorrupted_mean import RecorruptedMean


class RegressionModule(RestorationModule):
    """Args:
    net: the network (an ``nn.Module``), already built from its config.
    loss: module ``(pred, target, mask) -> (total, terms)``.
    optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``).
    scheduler: optional factory ``optimizer -> scheduler``; it watches the run's monitor.
    Other arguments: see :class:`RestorationModule`.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        recorrupted_mean: dict[str, Any] | None = None,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        # Only plain values go into hparams, so checkpoints load with torch's weights_only.
        self.save_hyperparameters(
            ignore=["net", "loss", "optimizer", "scheduler", "postprocess"], logger=False
        )
        self.net = net
        self.average_weights(net)
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # model=r2r: restore with the mean over recorruptions (nets/recorrupted_mean.py);
        # None: one pass of the network. Checked here, at start.
        self.recorrupted_mean = None if recorrupted_mean is None else dict(recorrupted_mean)
        if self.recorrupted_mean is not None:
            RecorruptedMean(net, **self.recorrupted_mean)

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.net, "size_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def restoring_fn(self) -> nn.Module:
        """What restores a normalised input: the inference network, or the mean of its passes
        over recorruptions (``recorrupted_mean``)."""
        if self.recorrupted_mean is None:
            return self.inference_net
        return RecorruptedMean(self.inference_net, **self.recorrupted_mean)

    def restore(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.postprocess.tiles(x, self.restoring_fn()(x))

    def restorer_spec(self) -> dict[str, Any]:
        spec = {"weights": self.exported_weights, "net_config": "net"}
        if self.recorrupted_mean is None:
            return {"_target_": "astrorestore.inference.restorer.NetForward", **spec}
        target = "astrorestore.nets.recorrupted_mean.RecorruptedMean"
        return {"_target_": target, **spec, **self.recorrupted_mean}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # A network (or loss) using each frame's noise is given the batch's (None: not known).
        with frame_noise(batch.get("photons_per_unit")):
            pred = self.net(batch["input"])
            total, terms = self.loss(pred, batch["target"], batch.get("loss_mask"))
        size = pred.shape[0]
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=size)
        return total

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # Validation scores what users get: the network's output post-processed.
        pred = self.restore(batch["input"])
        loss, _ = self.loss(pred, batch["target"], batch.get("loss_mask"))
        # A blind-spot input has pixels replaced; the restoration is judged on the whole frame.
        restored = self.restore(batch["observed"]) if "observed" in batch else pred
        return loss, restored

    def configure_optimizers(self) -> dict[str, Any]:
        return self.optimizer_config(self.net.parameters())
