"""Training pipeline: compose -> instantiate data, model, callbacks, loggers, trainer -> fit."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from astrorestore.callbacks.provenance import Provenance
from astrorestore.callbacks.run_tags import RunTags, apply_to_logger_config, describe_run, git_state
from astrorestore.callbacks.summary import RunSummary
from astrorestore.checkpoint import (
    export_weights,
    load_network_weights,
    network_weights,
    read_checkpoint,
)
from astrorestore.checks import check_multiple
from astrorestore.errors import EXIT_INTERRUPTED, UserError, find_user_error
from astrorestore.postprocess import Postprocess, build_postprocess, check_postprocess, noise_of
from astrorestore.postprocess.stages import TILE_STAGES

log = logging.getLogger(__name__)

# Metrics where lower is better; everything else named here is higher-is-better.
_LOWER_IS_BETTER = ("loss", "lpips", "error", "bias", "delta_e")
_HIGHER_IS_BETTER = ("psnr", "ssim", "f1", "precision", "recall", "colourfulness")


def resolve_monitor(metric: str, mode: str, has_truth: bool) -> tuple[str, str]:
    """The run's one monitor and mode. ``auto``: ``val/psnr`` (max) when the validation data
    have a clean truth, else ``val/loss`` (min); an explicit metric's mode follows its name."""
    if metric == "auto":
        metric = "val/psnr" if has_truth else "val/loss"
    if mode == "auto":
        name = metric.rsplit("/", 1)[-1]
        if any(word in name for word in _LOWER_IS_BETTER):
            mode = "min"
        elif any(word in name for word in _HIGHER_IS_BETTER):
            mode = "max"
        else:
            raise UserError(
                f"monitor.metric={metric}: cannot tell whether higher or lower is better; "
                "pass monitor.mode=max or monitor.mode=min"
            )
    if mode not in ("max", "min"):
        raise UserError(f"monitor.mode={mode} is invalid: use max, min or auto")
    if metric.rsplit("/", 1)[-1] in ("psnr", "ssim", "lpips") and not has_truth:
        raise UserError(
            f"monitor.metric={metric} needs a clean truth, which these data do not have; "
            "use monitor.metric=val/loss (or auto)"
        )
    return metric, mode


def sweep_direction(metric: str, mode: str) -> str:
    """Optuna's direction for a run judged by ``monitor.metric``/``monitor.mode`` (the config
    resolver ``${sweep_direction:${monitor.metric},${monitor.mode}}``)."""
    if metric == "auto":
        raise UserError(
            "an Optuna sweep needs an explicit monitor.metric (auto depends on the data); "
            "set e.g. monitor.metric=val/psnr in the sweep"
        )
    # has_truth=True: whether the data have a truth is checked when each job builds its data.
    _, mode = resolve_monitor(metric, mode, has_truth=True)
    return "maximize" if mode == "max" else "minimize"


OmegaConf.register_new_resolver("sweep_direction", sweep_direction, replace=True)


def _choice(group: str) -> str | None:
    try:
        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:  # not running under Hydra (tests composing by hand)
        return None


def check_config(cfg: DictConfig) -> None:
    """Checks on the config alone, before anything is built."""
    stages = check_postprocess(cfg.get("postprocess"))
    frame_stages = [
        stage for stage, values in stages.items() if values is not None and stage not in TILE_STAGES
    ]
    if frame_stages:
        raise UserError(
            f"postprocess.{frame_stages[0]} works on whole frames in their own units, which "
            "training does not validate on: select it at restoration time (python infer.py "
            f"postprocess={frame_stages[0]} ...); in training use postprocess=none or give_back"
        )
    model, pairing = _choice("model"), _choice("pairing")
    allowed = list(cfg.get("model_pairings") or [])
    if allowed and pairing is not None and pairing not in allowed:
        raise UserError(
            f"model={model} is trained with pairing={' or '.join(allowed)}, but pairing={pairing} "
            "was given (a sweep over pairing= overrides the model's own): drop pairing=, or "
            f"train pairing={pairing} with model=supervised, which takes any"
        )
    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} resumes a run and init_from={cfg.init_from} starts a new "
            "one from a checkpoint's weights: pass one of them"
        )
    if cfg.get("init_net", "config") not in ("config", "checkpoint"):
        raise UserError(
            f"init_net={cfg.init_net} is invalid: use config (this run's model.net) or "
            "checkpoint (the network stored in init_from's checkpoint)"
        )
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist; pass a .ckpt to resume")
    if cfg.get("ckpt_path"):
        check_resume(cfg)


def _first_difference(saved: Any, current: Any, key: str) -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for name in list(saved) + [k for k in current if k not in saved]:
            found = _first_difference(saved.get(name), current.get(name), f"{key}.{name}")
            if found:
                return found
        return None
    return None if saved == current else (key, saved, current)


def check_resume(cfg: DictConfig) -> None:
    """The checkpoint to resume must have been trained with this run's module and networks
    (otherwise Lightning fails with a wall of state-dict mismatches, or silently loads weights
    of the same shapes into another network)."""
    record = read_checkpoint(cfg.ckpt_path)["astrorestore"]
    saved = (record.get("config") or {}).get("model")
    # A format-1 record (version 0.1.0) has no comparable model config.
    if record.get("upgraded_from") == 1 or not isinstance(saved, dict):
        return
    current = OmegaConf.to_container(cfg.model, resolve=True)
    keys = ["_target_"] + [
        key
        for key, sub in current.items()
        if isinstance(sub, dict) and str(sub.get("_target_", "")).startswith("astrorestore.nets.")
    ]
    # Weight averaging on in one and off in the other: the state dicts differ by the average.
    if (saved.get("ema_decay") is None) != (current.get("ema_decay") is None):
        keys.insert(0, "ema_decay")
    for key in keys:
        found = _first_difference(saved.get(key), current.get(key), f"model.{key}")
        if found:
            name, was, now = ("null" if value is None else value for value in found)
            raise UserError(
                f"ckpt_path={cfg.ckpt_path} was trained with {name}={was} (model="
                f"{record.get('model')}), this run has {now}; resume with the checkpoint's "
                "model settings (its run's .hydra/config.yaml) or start a new run without ckpt_path"
            )


def read_init(cfg: DictConfig) -> dict[str, Any] | None:
    """The checkpoint ``init_from`` names (``pretrained``: the shipped default denoiser), read
    before anything is built; with ``init_net=checkpoint`` its stored network config replaces
    ``model.net`` in ``cfg``, so the run trains (and its checkpoints record) that network."""
    if not cfg.get("init_from"):
        return None
    checkpoint = read_checkpoint(cfg.init_from)
    if cfg.get("init_net", "config") == "checkpoint":
        with open_dict(cfg):
            cfg.model.net = OmegaConf.create(checkpoint["astrorestore"]["net"])
    return checkpoint


def init_weights(model: Any, checkpoint: dict[str, Any], source: str) -> None:
    """Start ``model.net`` (and its weight average, if the run keeps one) from the inference
    network of ``checkpoint`` (its weight average where it has one). Weights only: the
    optimizer, scheduler, epoch and seed are this run's own (``ckpt_path`` resumes instead)."""
    net = getattr(model, "net", None)
    if not isinstance(net, torch.nn.Module):
        raise UserError(
            f"init_from={source}: model {type(model).__name__} has no network `net` to start "
            "from a checkpoint's weights; drop init_from"
        )
    record = checkpoint["astrorestore"]
    state = network_weights(checkpoint)
    load_network_weights(
        net,
        state,
        f"init_from={source} (model {record.get('model')})",
        "; give this run the checkpoint's model.net settings, or init_net=checkpoint to train "
        "the checkpoint's own network",
    )
    ema = getattr(model, "ema", None)
    if isinstance(ema, torch.nn.Module):
        ema.load_state_dict(state, strict=True)
    log.info(
        "network initialised from %s (model %s, its '%s' weights); optimizer, scheduler and "
        "epoch start fresh",
        source,
        record.get("model"),
        record["weights"],
    )


def check_parts(datamodule: Any, parts: dict[str, Any]) -> None:
    """Cross-checks between the built data module and the model's network and loss (each
    fact checked once, here, where both sides exist)."""
    patch = getattr(datamodule, "patch_size", None)
    net = parts.get("net")
    if patch is not None and net is not None:
        # A super-resolver's size multiple is that of its low-resolution input, and
        # data.patch_size is the high-resolution size: it must be a multiple of both.
        scale = int(datamodule.pairing.upscale_factor)
        check_multiple("data.patch_size", patch, getattr(net, "size_multiple", 1) * scale)
    if net is not None:
        datamodule.pairing.check_net(net)
    if patch is not None:
        datamodule.pairing.check_patch(int(patch))
    masks = datamodule.pairing.makes_loss_mask or "valid" in datamodule.provides
    loss = parts.get("loss")
    if masks and loss is not None and hasattr(loss, "check_mask_support"):
        loss.check_mask_support()


def _instantiate_dict(section: DictConfig | None) -> list[Any]:
    if not section:
        return []
    return [instantiate(item) for item in section.values() if item and "_target_" in item]


def _model_name(cfg: DictConfig) -> str:
    try:
        return str(HydraConfig.get().runtime.choices.get("model") or cfg.model._target_)
    except ValueError:  # not running under Hydra (tests composing by hand)
        return str(cfg.model._target_).rsplit(".", 1)[-1]


def _unexpected_setting(exc: BaseException) -> str | None:
    """The keyword a constructor refused (``TypeError: ... unexpected keyword argument 'x'``),
    found anywhere in the chain of errors Hydra wraps around it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TypeError):
            match = re.search(r"unexpected keyword argument '(\w+)'", str(seen))
            if match:
                return match.group(1)
        seen = seen.__cause__ or seen.__context__
    return None


def _instantiate(node: Any, where: str, **kwargs: Any) -> Any:
    """Hydra's instantiate, re-raising a constructor's UserError as itself (Hydra wraps it),
    and a setting the constructor does not take (``where``.key) as one line."""
    try:
        return instantiate(node, **kwargs)
    except Exception as exc:
        error = find_user_error(exc)
        if error is not None and error is not exc:
            raise error from None
        key = _unexpected_setting(exc)
        if error is None and key is not None:
            target = str(node.get("_target_", "")).rsplit(".", 1)[-1] or where
            group = where.split(".")[0]
            choice = _choice(group)
            hint = (
                "; debug=tiny sizes simulated fields: use debug=tiny_photos for data=hubble or "
                "galaxy10, or debug=fast_dev_run for any data"
                if _choice("debug") == "tiny"
                else ""
            )
            raise UserError(
                f"{where}.{key} is not a setting of {target}"
                + (f" ({group}={choice})" if choice else "")
                + f": drop {where}.{key} (`python train.py --cfg job` lists the settings){hint}"
            ) from None
        raise


def build(cfg: DictConfig) -> tuple[Any, Any]:
    """The data module and the model of a composed config, with the monitor resolved in ``cfg``.

    The network and loss are built first and checked against the data, so that a bad
    combination fails before anything else is built or logged.
    """
    datamodule = _instantiate(cfg.data, "data", _convert_="all")
    metric, mode = resolve_monitor(cfg.monitor.metric, cfg.monitor.mode, datamodule.has_truth)
    with open_dict(cfg):
        cfg.monitor.metric, cfg.monitor.mode = metric, mode
    parts = {
        key: _instantiate(cfg.model[key], f"model.{key}")
        for key in ("net", "loss")
        if key in cfg.model
    }
    check_parts(datamodule, parts)
    if getattr(getattr(parts.get("net"), "noise", None), "per_frame", False) and hasattr(
        datamodule, "need_frame_noise"
    ):
        datamodule.need_frame_noise()  # a network bounded by each frame's own noise
    extra: dict[str, Any] = {}
    stages = build_stages(cfg, datamodule, parts.get("net"))
    if stages.on_tiles:
        extra["postprocess"] = stages
    if "net" in parts:
        speed_up(parts["net"], cfg.get("speed") or {})
    if not datamodule.has_truth and cfg.model.get("compute_lpips"):
        # LPIPS compares with the clean truth: without one it is never computed, so neither its
        # network nor the warning about missing AlexNet weights is needed.
        extra["compute_lpips"] = False
    return datamodule, _instantiate(cfg.model, "model", **parts, **extra, _convert_="all")


def build_stages(cfg: DictConfig, datamodule: Any, net: Any) -> Postprocess:
    """The ``postprocess`` stages validation and test apply after the network (those of the
    exported checkpoint too); refused where the output is not a denoised copy of the input."""
    stages = build_postprocess(cfg.get("postprocess"), noise_of(net, datamodule.normalizer))
    if stages.on_tiles:
        pairing = datamodule.pairing
        channels = datamodule.channels
        if pairing.upscale_factor != 1 or pairing.input_channels(
            channels
        ) != pairing.output_channels(channels):
            raise UserError(
                f"postprocess={_choice('postprocess') or 'give_back'} works on denoised frames "
                f"of the input's shape, and pairing={_choice('pairing')} changes the shape: use "
                "postprocess=none"
            )
        for line in stages.describe():
            log.info("%s (validation, test and the checkpoint's restorer)", line)
    return stages


def speed_up(net: Any, speed: Any) -> None:
    """Apply the measured-not-assumed speed switches (``speed.channels_last``,
    ``speed.compile``; see ``bench/bench_speed.py``) to the network in place. ``nn.Module.compile``
    keeps the state-dict keys, so checkpoints load with or without it."""
    unknown = set(speed) - {"channels_last", "compile"}
    if unknown:
        raise UserError(
            f"speed.{sorted(unknown)[0]} is not a speed switch; use speed.channels_last or "
            "speed.compile (precision is trainer.precision, e.g. bf16-mixed)"
        )
    if speed.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    if speed.get("compile"):
        net.compile()


def export_best(trainer: L.Trainer, out: str) -> None:
    """``export_weights``: the best checkpoint's record and inference weights, nothing else."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
    if not best:
        raise UserError(
            f"export_weights={out}: this run saved no checkpoint to export; keep the checkpoint "
            "callback (callbacks=default)"
        )
    target = export_weights(best, out)
    log.info(
        "exported the weights of %s to %s (%.2f MB)", best, target, target.stat().st_size / 1e6
    )


#: Jobs of a multirun that failed in this process (``report_failed_jobs``).
FAILED_JOBS: list[str] = []


def train(cfg: DictConfig) -> float | None:
    """Train (and test) from a composed config; returns the optimised metric for sweeps.

    In a multirun, a job that fails logs one line, writes ``failed.txt`` into its folder and
    returns NaN (a failed trial for Optuna), so one crashed job does not stop the sweep."""
    description = describe_run()
    if description["sweep"] is None:
        return _train(cfg, description)
    try:
        return _train(cfg, description)
    except Exception as exc:  # any failure of one job: reported, not raised
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.error("job %s failed, the sweep goes on: %s", description["job"], message)
        output_dir = Path(cfg.paths.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "failed.txt").write_text(f"{type(exc).__name__}: {message}\n")
        FAILED_JOBS.append(f"{description['job']} ({output_dir})")
        return float("nan")


def report_failed_jobs() -> None:
    """After a multirun in this process: exit 1 naming the jobs that failed (0 if none), so a
    script or scheduler that launched the sweep sees it. (Jobs of a remote launcher, e.g.
    SLURM, fail in their own processes: ``python -m astrorestore.sweep_report`` lists them.)"""
    if not FAILED_JOBS:
        return
    print(
        f"error: {len(FAILED_JOBS)} job(s) of the sweep failed, the others finished: "
        f"{', '.join(FAILED_JOBS)}; each folder's failed.txt says why "
        "(python -m astrorestore.sweep_report <sweep folder> ranks every job)",
        file=sys.stderr,
    )
    sys.exit(1)


def _train(cfg: DictConfig, description: dict[str, Any]) -> float | None:
    check_config(cfg)
    init = read_init(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = build(cfg)
    if init is not None:
        init_weights(model, init, str(cfg.init_from))
    metric = cfg.monitor.metric
    if cfg.get("seed") is not None:
        log.info("seed %d", cfg.seed)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if cfg.get("curriculum"):
        callbacks.append(instantiate(cfg.curriculum))
    callbacks.append(Provenance(run_config, _model_name(cfg)))
    callbacks.append(RunTags(run_config, description, git_state()))
    apply_to_logger_config(cfg.get("logger"), description)
    loggers = _instantiate_dict(cfg.get("logger"))
    extra: dict[str, Any] = {}
    strategy = cfg.trainer.get("strategy")
    if getattr(model, "find_unused_parameters", False) and strategy in ("ddp", "ddp_spawn"):
        extra["strategy"] = f"{strategy}_find_unused_parameters_true"
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra
    )

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        has_test = getattr(datamodule, "test_set", True) is not None
        if cfg.get("test") and not trainer.fast_dev_run and not has_test:
            log.info("no test split in this data: the test after training is skipped")
        if cfg.get("test") and not trainer.fast_dev_run and has_test:
            best = (
                trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            )
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if cfg.get("export_weights"):
            export_best(trainer, cfg.export_weights)
    except SystemExit as exc:
        # Lightning answers Ctrl-C with exit(1) once it has cleaned up; a shell (and a job
        # scheduler) expects 130 (128 + SIGINT) for a run the user interrupted.
        if exc.code == 1 and trainer.interrupted:
            raise SystemExit(EXIT_INTERRUPTED) from exc
        raise
    finally:
        # One crashed job must not leave a wandb run open and break the rest of a multirun.
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:
            pass

    summary = next((c.summary for c in callbacks if isinstance(c, RunSummary)), {})
    value = summary.get("best", {}).get(metric, metrics.get(metric))
    return float(value) if value is not None else None
