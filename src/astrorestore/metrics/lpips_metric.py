"""LPIPS, only ever with real pretrained backbone weights.

The ``lpips`` package ships its linear heads but takes the AlexNet backbone from the
torchvision model zoo, which needs a download. We look for the backbone file in the torch hub
cache (or a path from the config) and load it ourselves. If it is not there we warn once and
return ``None``: an LPIPS number computed with a random backbone would be meaningless.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from astrorestore.errors import UserError

log = logging.getLogger(__name__)

ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
_warned = False


def find_backbone_weights(weights_path: str | None = None) -> Path | None:
    """Path of the AlexNet ImageNet weights, or None if they are not on this machine."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(
                f"model.lpips_weights={weights_path} does not exist; point it at "
                f"{ALEXNET_WEIGHTS_FILE} or set model.lpips_weights=null"
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE
    return cached if cached.is_file() else None


def _load_backbone(model: torch.nn.Module, path: Path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into lpips' ``slice<k>.<i>.*`` layout."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    index_to_key = {}
    for key in model.net.state_dict():
        match = re.fullmatch(r"slice\d+\.(\d+)\.(weight|bias)", key)
        if match:
            index_to_key[(match.group(1), match.group(2))] = key
    remapped = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
        if match and (match.group(1), match.group(2)) in index_to_key:
            remapped[index_to_key[(match.group(1), match.group(2))]] = tensor
    if len(remapped) != len(index_to_key):
        raise UserError(f"{path} does not hold AlexNet weights usable by LPIPS")
    model.net.load_state_dict(remapped, strict=True)


def build_lpips(
    weights_path: str | None = None, *, random_backbone: bool = False
) -> torch.nn.Module | None:
    """LPIPS(AlexNet) in eval mode, or None (with one warning) if no backbone weights exist.

    ``random_backbone=True`` is for tests of the plumbing only; never report its numbers.
    """
    global _warned
    import lpips

    path = None if random_backbone else find_backbone_weights(weights_path)
    if path is None and not random_backbone:
        if not _warned:
            log.warning(
                "LPIPS skipped: AlexNet weights (%s) not found in %s and model.lpips_weights "
                "is unset; no LPIPS will be logged",
                ALEXNET_WEIGHTS_FILE,
                Path(torch.hub.get_dir()) / "checkpoints",
            )
            _warned = True
        return None
    model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_backbone(model, path)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def lpips_distance(model: torch.nn.Module, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS; both images scaled to [-1, 1] by the truth's own range."""
    flat = truth.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1)
    span = (flat.amax(1).view(-1, 1, 1, 1) - low).clamp_min(1e-6)

    def to_rgb(x: torch.Tensor) -> torch.Tensor:
        x = 2.0 * (x.float() - low) / span - 1.0
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    with torch.no_grad():
        return model(to_rgb(pred), to_rgb(truth)).flatten()
