"""What a run is, recorded where runs are compared: config, tags, git commit, sweep grouping.

Hundreds of runs are only reviewable if each one says what it was: the resolved config, the
chosen model/data/noise as tags, the exact code (git commit and whether the tree was dirty),
and, for a sweep, the sweep it belongs to (the WandB group) and the overrides that set this job
apart. ``describe_run`` gathers these from Hydra once; ``apply_to_logger_config`` puts the tags
and group into the logger config before the logger exists (WandB fixes both at ``init``);
:class:`RunTags` logs the rest as hyper-parameters (WandB config, CSV/TensorBoard hparams) and
adds the best validation scores to the WandB run summary at the end.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, open_dict

# The config groups whose choice says what a run is.
TAG_GROUPS = ("model", "data", "pairing", "noise", "loss", "curriculum", "trainer")


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the code being run."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown", "dirty": None}
    if commit.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def describe_run() -> dict[str, Any]:
    """Choices, overrides and sweep membership of the running Hydra job (empty outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return {"choices": {}, "overrides": [], "sweep": None, "job": None}
    choices = {
        group: str(hydra_cfg.runtime.choices.get(group))
        for group in TAG_GROUPS
        if hydra_cfg.runtime.choices.get(group) is not None
    }
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return {
        "choices": choices,
        "overrides": list(hydra_cfg.overrides.task),
        "sweep": Path(hydra_cfg.sweep.dir).name if multirun else None,
        "job": int(hydra_cfg.job.num) if multirun else None,
    }


def run_tags(description: dict[str, Any]) -> list[str]:
    """Tags such as ``model:supervised``, ``data:simulated``, ``noise:poisson_gaussian``."""
    return [f"{group}:{choice}" for group, choice in description["choices"].items()]


def apply_to_logger_config(logger_cfg: DictConfig | None, description: dict[str, Any]) -> None:
    """Add the tags to every logger config that takes tags, and put a sweep's jobs in one group
    named after the sweep folder (WandB), before the loggers are built."""
    if not logger_cfg:
        return
    with open_dict(logger_cfg):
        for entry in logger_cfg.values():
            if not entry or "_target_" not in entry:
                continue
            if "tags" in entry:
                entry.tags = sorted(set(entry.tags or []) | set(run_tags(description)))
            if description["sweep"] and "group" in entry:
                entry.group = f"sweep-{description['sweep']}"


class RunTags(L.Callback):
    """Logs config, tags, git state and overrides once; best scores into the WandB summary.

    Args:
        config: the resolved run config (a plain dict).
        description: :func:`describe_run` output.
        git: :func:`git_state` output.
    """

    def __init__(self, config: dict, description: dict[str, Any], git: dict[str, Any]) -> None:
        self.config = config
        self.description = description
        self.git = git

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **self.config,
            "git": self.git,
            "tags": run_tags(self.description),
            "overrides": " ".join(self.description["overrides"]),
            "sweep": self.description["sweep"],
            "sweep_job": self.description["job"],
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for logger in trainer.loggers:  # loggers write from rank 0 only
            logger.log_hyperparams(self.hyperparameters())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = next((c.summary for c in trainer.callbacks if getattr(c, "summary", None)), None)
        if not summary or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            run = getattr(logger, "experiment", None)
            if type(logger).__name__ == "WandbLogger" and hasattr(run, "summary"):
                best = {f"best/{key}": value for key, value in summary["best"].items()}
                run.summary.update(
                    {**best, "best/epoch": summary["best_epoch"], "monitor": summary["monitor"]}
                )
