"""Writes into every checkpoint what inference needs to rebuild the restorer, and nothing else.

``checkpoint["astrorestore"]`` holds:

- ``format``: layout version of this record (``CHECKPOINT_FORMAT``);
- ``version``: the astrorestore version that trained the model; ``model``: its name;
- ``restorer``: a Hydra spec of the callable that restores (``_target_`` plus arguments) and
  ``weights``, the state-dict prefix of the network it wraps (``net``, ``generator``, ``ema``...);
- ``net``: that network's config; ``normalizer``: the normaliser's config;
- ``io``: input/output channels, scale factor and size multiple;
- ``config``: the whole resolved run config (for the record).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from astrorestore import __version__

CHECKPOINT_FORMAT = 2


class Provenance(L.Callback):
    """Args: config: the resolved run config (a plain dict); name: the model's name."""

    def __init__(self, config: dict, name: str) -> None:
        self.config = config
        self.name = name

    def record(self, pl_module: L.LightningModule, datamodule: Any) -> dict[str, Any]:
        spec = dict(pl_module.restorer_spec())
        weights = spec.pop("weights")
        net_key = spec.pop("net_config", weights)
        net_config = self.config["model"][net_key]
        net = getattr(pl_module, weights)
        channels = datamodule.channels if datamodule is not None else 1
        pairing = getattr(datamodule, "pairing", None)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "model": self.name,
            "restorer": spec,
            "weights": weights,
            "net": net_config,
            "normalizer": self.config["data"]["normalizer"],
            "io": {
                "in_channels": pairing.input_channels(channels) if pairing else channels,
                "out_channels": pairing.output_channels(channels) if pairing else channels,
                "scale": int(getattr(pairing, "scale", 1)),
                "size_multiple": int(getattr(net, "size_multiple", 1)),
            },
            "config": self.config,
        }

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["astrorestore"] = self.record(pl_module, trainer.datamodule)
