"""Writes into every checkpoint what inference needs to rebuild the restorer, and nothing else
(the record's layout: :mod:`astrorestore.checkpoint`)."""

from __future__ import annotations

from typing import Any

import lightning as L

from astrorestore.checkpoint import make_record


class Provenance(L.Callback):
    """Args: config: the resolved run config (a plain dict); name: the model's name."""

    def __init__(self, config: dict, name: str) -> None:
        self.config = config
        self.name = name

    def record(self, pl_module: L.LightningModule, datamodule: Any) -> dict[str, Any]:
        return make_record(pl_module, datamodule, self.config, self.name)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["astrorestore"] = self.record(pl_module, trainer.datamodule)
