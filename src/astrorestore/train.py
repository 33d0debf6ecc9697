"""Training pipeline: compose -> instantiate data, model, callbacks, loggers, trainer -> fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from astrorestore.callbacks.summary import RunSummary
from astrorestore.errors import UserError

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """Cross-field checks that would otherwise fail deep inside training."""
    multiple = 2 ** int(OmegaConf.select(cfg, "model.net.depth", default=0))
    patch = int(cfg.data.patch_size)
    if patch % multiple:
        raise UserError(
            f"data.patch_size={patch} must be a multiple of {multiple} "
            f"(2**model.net.depth); e.g. data.patch_size={max(multiple, patch // multiple * multiple)}"
        )
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist; pass a .ckpt to resume")


def _instantiate_dict(section: DictConfig | None) -> list[Any]:
    if not section:
        return []
    return [instantiate(item) for item in section.values() if item and "_target_" in item]


def train(cfg: DictConfig) -> float | None:
    """Train (and test) from a composed config; returns the optimised metric for sweeps."""
    check_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if cfg.get("curriculum"):
        callbacks.append(instantiate(cfg.curriculum))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test") and not trainer.fast_dev_run:
            best = (
                trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            )
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    finally:
        # One crashed job must not leave a wandb run open and break the rest of a multirun.
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:
            pass

    summary = next((c.summary for c in callbacks if isinstance(c, RunSummary)), {})
    optimized = cfg.get("optimized_metric")
    if optimized:
        value = summary.get("best", {}).get(optimized, metrics.get(optimized))
        return float(value) if value is not None else None
    return None
