"""The restorer contract: what inference needs from a trained model, rebuilt from a checkpoint.

A :class:`Restorer` maps normalised tiles ``(B, in_channels, T, T)`` to normalised outputs
``(B, out_channels, scale·T, scale·T)`` and carries the normaliser that takes images to and from
that space, and the post-processing stages to apply after the network (tile stages inside its
callable, frame stages through :meth:`Restorer.finish_frame`). ``infer.py`` knows nothing else
about a model: not whether it is a GAN, a sampler or a plain network. The checkpoint says how to
rebuild it (see :mod:`astrorestore.checkpoint`): a Hydra ``_target_`` called with the loaded
network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from astrorestore.checkpoint import (
    PRETRAINED,
    checkpoint_path,
    load_network_weights,
    network_weights,
    pretrained_path,
    read_checkpoint,
)
from astrorestore.errors import UserError, find_user_error
from astrorestore.postprocess import Postprocess, build_postprocess, merge_postprocess, noise_of


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
    postprocess: Postprocess = field(default_factory=Postprocess)
    #: the training pairing's config (``data.pairing`` of the checkpoint's run): how its inputs
    #: were made from the truth, for the consistency check of ``report=``; None if unknown
    pairing: dict | None = None
    #: whether the network is bounded by each frame's own noise (``photons_per_unit=frame``):
    #: every restoration then gives it the frame's gain (``restore_tensor``'s ``gain``)
    frame_gain: bool = False

    @property
    def stochastic(self) -> bool:
        """True when outputs depend on random draws (tiles then share one seeded generator):
        ``infer.py num_samples=N`` then draws N samples; any restorer callable says so with a
        ``stochastic`` attribute, so infer.py never asks which model it is."""
        return bool(getattr(self.fn, "stochastic", False))

    def forward_model(self) -> Any:
        """The noiseless forward model that made this model's training inputs from their truth
        (blur + down-sampling for super-resolution, luminance for colorization), or None."""
        from astrorestore.evaluation.generative import forward_model_of

        if not self.pairing or "_target_" not in self.pairing:
            return None
        try:
            return forward_model_of(instantiate(OmegaConf.create(self.pairing), noise=None))
        except Exception:  # a pairing this astrorestore cannot rebuild: no consistency check
            return None

    def __call__(
        self, tiles: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.fn(tiles, generator)

    def finish_frame(
        self, observed: np.ndarray, restored: np.ndarray
    ) -> tuple[np.ndarray, list[str]]:
        """The frame post-processing stages (whole frames in their own units, after the tiles
        are stitched) applied to ``restored``; returns it and one line per stage applied."""
        return self.postprocess.frame(observed, restored)

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


class PostprocessedForward(torch.nn.Module):
    """A restorer callable ``fn(tiles, generator)`` followed by the tile post-processing stages
    (:meth:`astrorestore.postprocess.Postprocess.tiles`). Speed switches and the self-ensemble
    wrap it whole, so every pass is post-processed, as validation does."""

    def __init__(self, fn: torch.nn.Module, postprocess: Postprocess) -> None:
        super().__init__()
        self.fn = fn
        self.postprocess = postprocess

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.fn, "stochastic", False))

    @property
    def net(self) -> torch.nn.Module:
        """The network (what ``compile`` compiles)."""
        return getattr(self.fn, "net", self.fn)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.postprocess.tiles(x, self.fn(x, generator))


def load_restorer(
    ckpt_path: str | Path | None,
    device: str | torch.device = "cpu",
    postprocess: dict | None = None,
    gain: float = 1.0,
) -> Restorer:
    """The restorer a checkpoint exports, on ``device``, with the post-processing stages the
    checkpoint stores; ``postprocess`` (the ``postprocess`` config of ``infer.py``) is laid over
    them (:func:`astrorestore.postprocess.merge_postprocess`); ``gain``: e- per data unit for
    frame stages whose own gain is null. ``ckpt_path`` None or ``pretrained``: the shipped
    default denoiser (:func:`astrorestore.checkpoint.pretrained_path`)."""
    path = checkpoint_path(ckpt_path)
    checkpoint = read_checkpoint(path)
    meta = checkpoint["astrorestore"]
    settings = merge_postprocess(meta.get("postprocess"), postprocess)
    try:
        net = instantiate(OmegaConf.create(meta["net"]))
    except Exception as exc:  # Hydra wraps the network's own error
        user = find_user_error(exc)
        if user is not None:
            raise user from None
        cause = exc.__cause__ or exc
        raise UserError(
            f"{path}: its stored network config does not fit this astrorestore's network "
            f"({str(cause).splitlines()[0]}): the checkpoint predates a change to that network; "
            "retrain it, or restore with the astrorestore that wrote it"
        ) from None
    load_network_weights(net, network_weights(checkpoint), f"{path}'s weights (stored config)")
    fn = instantiate(OmegaConf.create(meta["restorer"]), net=net)
    normalizer = instantiate(OmegaConf.create(meta["normalizer"]))
    io = meta["io"]
    noise = noise_of(net, normalizer)
    stages = build_postprocess(settings, noise, gain)
    if (stages.on_tiles or stages.on_frames) and (
        int(io["scale"]) != 1 or int(io["in_channels"]) != int(io["out_channels"])
    ):
        raise UserError(
            f"postprocess: model {meta.get('model')} outputs {io['out_channels']} channel(s) at "
            f"x{io['scale']}; post-processing works on denoised frames of the input's shape: "
            "use postprocess=none"
        )
    if stages.on_tiles:
        fn = PostprocessedForward(fn, stages)
    shipped = path.resolve() == pretrained_path().resolve()
    print(
        f"weights: {path}"
        + (
            f" (the shipped {PRETRAINED} default denoiser; ckpt_path=<file> for your own)"
            if shipped
            else ""
        )
        + f", model {meta.get('model')}"
    )
    device = torch.device(device)
    return Restorer(
        fn=fn.to(device).eval(),
        normalizer=normalizer,
        in_channels=int(io["in_channels"]),
        out_channels=int(io["out_channels"]),
        scale=int(io["scale"]),
        size_multiple=int(io["size_multiple"] or getattr(net, "size_multiple", 1)),
        device=device,
        name=str(meta.get("model")),
        ckpt_path=str(path.resolve()),
        postprocess=stages,
        pairing=(meta.get("config") or {}).get("data", {}).get("pairing"),
        frame_gain=bool(getattr(noise, "per_frame", False)),
    )
