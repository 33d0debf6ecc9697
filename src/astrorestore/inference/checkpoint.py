"""Rebuild a restorer (network + normalisation) from an astrorestore checkpoint.

Training stores the resolved run config in the checkpoint (``checkpoint['astrorestore']``),
so inference needs no config files: the network and the normaliser are rebuilt exactly as
they were trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from astrorestore.errors import UserError

SUPPORTED_TASKS = ("denoise",)


@dataclass
class Restorer:
    net: torch.nn.Module
    normalizer: object
    size_multiple: int
    device: torch.device
    name: str
    ckpt_path: str


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


def load_restorer(ckpt_path: str | Path, device: str | torch.device = "cpu") -> Restorer:
    checkpoint = read_checkpoint(ckpt_path)
    meta = checkpoint["astrorestore"]
    if meta.get("task") not in SUPPORTED_TASKS:
        raise UserError(
            f"{ckpt_path} holds a '{meta.get('method')}' model for task '{meta.get('task')}'; "
            f"infer.py restores with: {', '.join(SUPPORTED_TASKS)}"
        )
    config = OmegaConf.create(meta["config"])
    net = instantiate(config.model.net)
    state = {
        key[len("net.") :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"weights in {ckpt_path} do not fit the network in its stored config: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    device = torch.device(device)
    net = net.to(device).eval()
    return Restorer(
        net=net,
        normalizer=instantiate(config.data.normalizer),
        size_multiple=int(getattr(net, "size_multiple", 1)),
        device=device,
        name=str(meta.get("method")),
        ckpt_path=str(Path(ckpt_path).expanduser().resolve()),
    )
