"""The restorer contract: what inference needs from a trained model, rebuilt from a checkpoint.

A :class:`Restorer` maps normalised tiles ``(B, in_channels, T, T)`` to normalised outputs
``(B, out_channels, scale·T, scale·T)`` and carries the normaliser that takes images to and from
that space. ``infer.py`` knows nothing else about a model: not whether it is a GAN, a sampler or
a plain network. The checkpoint says how to rebuild it (see
:mod:`astrorestore.callbacks.provenance`): a Hydra ``_target_`` called with the loaded network.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from astrorestore.callbacks.provenance import CHECKPOINT_FORMAT
from astrorestore.errors import UserError, find_user_error


class NetForward(torch.nn.Module):
    """The plainest restorer: one forward pass of the network."""

    stochastic = False

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.net(x)


@dataclass
class Restorer:
    """A loaded model, ready for :func:`astrorestore.inference.restore.restore_image`."""

    fn: torch.nn.Module
    normalizer: Any
    in_channels: int
    out_channels: int
    scale: int
    size_multiple: int
    device: torch.device
    name: str
    ckpt_path: str

    @property
    def stochastic(self) -> bool:
        """True when outputs depend on random draws (tiles then share one seeded generator)."""
        return bool(getattr(self.fn, "stochastic", False))

    def __call__(
        self, tiles: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.fn(tiles, generator)

    def set_sampling(self, steps: int | None = None, sampler: str | None = None) -> None:
        """Override the sampler and step count the checkpoint exported (None keeps them);
        only restorers that sample (``fn.set_sampling``) have them."""
        if steps is None and sampler is None:
            return
        if not hasattr(self.fn, "set_sampling"):
            raise UserError(
                f"model {self.name} restores in one deterministic pass: sample_steps and "
                "sampler apply only to diffusion checkpoints; drop them"
            )
        self.fn.set_sampling(steps, sampler)


def read_checkpoint(ckpt_path: str | Path) -> dict:
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(
            f"checkpoint not found: {path}; pass ckpt_path=<file.ckpt> (training prints the "
            "path of its best checkpoint)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "astrorestore" not in checkpoint:
        raise UserError(
            f"{path} is not an astrorestore checkpoint (no 'astrorestore' metadata); "
            "use a .ckpt written by `python train.py`"
        )
    return checkpoint


def _upgrade_record(meta: dict, path: Path) -> dict:
    """Records of format 1 (version 0.1.0 denoisers) rewritten in today's layout."""
    config = meta.get("config") or {}
    if meta.get("task") != "denoise" or "model" not in config or "data" not in config:
        raise UserError(
            f"{path} was made by an older astrorestore version ({meta.get('version', '?')}) in a "
            "layout this version cannot read; retrain it with `python train.py`"
        )
    return {
        "format": CHECKPOINT_FORMAT,
        "version": meta.get("version"),
        "model": meta.get("method", "supervised"),
        "restorer": {"_target_": f"{__name__}.NetForward"},
        "weights": "net",
        "net": config["model"]["net"],
        "normalizer": config["data"]["normalizer"],
        "io": {"in_channels": 1, "out_channels": 1, "scale": 1, "size_multiple": None},
        "config": config,
    }


# Network settings that act at evaluation only (the give-back of the bounded denoiser and of
# Noise2Void), so a checkpoint can be restored with other values than it was trained with.
GIVE_BACK_KEYS = (
    "flux_sigma",
    "flux_threshold",
    "flux_ramp_from",
    "flux_footprint",
    "flux_chi2",
    "flux_stack_snr",
)


def with_give_back(net: dict, settings: dict, path: Path) -> dict:
    """The stored network config ``net`` with the give-back ``settings`` (``flux_*`` keys)
    changed; the network's own constructor then checks their values."""
    try:
        accepted = inspect.signature(get_class(net["_target_"])).parameters
    except Exception:  # an unknown target fails with its own error when instantiated
        accepted = {}
    unknown = [key for key in settings if key not in GIVE_BACK_KEYS]
    if unknown:
        raise UserError(
            f"give_back.{unknown[0]} is not a give-back setting; use {', '.join(GIVE_BACK_KEYS)}"
        )
    if any(key not in net and key not in accepted for key in settings):
        raise UserError(
            f"give_back.{next(iter(settings))}: the network of {path} ({net.get('_target_')}) "
            "has no evaluation give-back (the bounded denoiser and Noise2Void have one); drop "
            "the give_back settings"
        )
    return {**net, **settings}


def load_restorer(
    ckpt_path: str | Path, device: str | torch.device = "cpu", give_back: dict | None = None
) -> Restorer:
    """The restorer a checkpoint exports, on ``device``. ``give_back``: ``flux_*`` network
    settings that replace the checkpoint's (evaluation-only, see :data:`GIVE_BACK_KEYS`)."""
    path = Path(ckpt_path).expanduser()
    checkpoint = read_checkpoint(path)
    meta = checkpoint["astrorestore"]
    if meta.get("format") is None:
        meta = _upgrade_record(meta, path)
    elif meta["format"] > CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} was written by a newer astrorestore ({meta.get('version')}); upgrade "
            "astrorestore to restore with it"
        )
    net_config = with_give_back(meta["net"], give_back, path) if give_back else meta["net"]
    try:
        net = instantiate(OmegaConf.create(net_config))
    except Exception as exc:  # Hydra wraps the network's own error
        user = find_user_error(exc)
        if user is not None and give_back:  # name the setting the user typed
            message = str(user)
            for key in give_back:
                message = message.replace(f"model.net.{key}=", f"give_back.{key}=")
            raise UserError(message) from None
        if user is not None:
            raise user from None
        cause = exc.__cause__ or exc
        raise UserError(
            f"{path}: its stored network config does not fit this astrorestore's network "
            f"({str(cause).splitlines()[0]}): the checkpoint predates a change to that network; "
            "retrain it, or restore with the astrorestore that wrote it"
        ) from None
    prefix = meta["weights"] + "."
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(prefix)
    }
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"weights in {path} do not fit the network in its stored config: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    fn = instantiate(OmegaConf.create(meta["restorer"]), net=net)
    device = torch.device(device)
    io = meta["io"]
    return Restorer(
        fn=fn.to(device).eval(),
        normalizer=instantiate(OmegaConf.create(meta["normalizer"])),
        in_channels=int(io["in_channels"]),
        out_channels=int(io["out_channels"]),
        scale=int(io["scale"]),
        size_multiple=int(io["size_multiple"] or getattr(net, "size_multiple", 1)),
        device=device,
        name=str(meta.get("model")),
        ckpt_path=str(path.resolve()),
    )
