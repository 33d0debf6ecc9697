"""Geometric self-ensemble: restore flipped and rotated copies of each tile and average.

Sky images have no preferred orientation, and the training crops are flipped and rotated, so a
network's output for a rotated tile, rotated back, is another estimate of the same restoration
whose errors are partly independent of the first. Averaging ``n`` of them (1, 2, 4 or 8 of the
eight flips and quarter turns of the square) lowers the network's own error at ``n`` times the
cost; the image is not changed in any other way. ``n = 4`` uses only the flips and the half turn
(the transforms that keep a tile's axes), ``n = 8`` all eight.

A bounded denoiser stays bounded: each estimate is within ``k`` noise sigma of the same input
pixel, and so is their mean. Stochastic restorers (diffusion samplers) are refused: a mean of
samples is not a sample.
"""

from __future__ import annotations

import dataclasses

import torch

from astrorestore.errors import UserError
from astrorestore.inference.restorer import Restorer

SIZES = (1, 2, 4, 8)
# (quarter turns, flip of the last axis after turning), in the order the first n are taken:
# identity, the two flips, the half turn, then the four that swap the axes.
TRANSFORMS = (
    (0, False),
    (0, True),
    (2, True),
    (2, False),
    (1, False),
    (3, False),
    (1, True),
    (3, True),
)


def transform(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(x, turns, dims=(-2, -1)) if turns else x
    return torch.flip(y, dims=(-1,)) if flip else y


def untransform(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    y = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(y, -turns, dims=(-2, -1)) if turns else y


class SelfEnsemble(torch.nn.Module):
    """Wraps a restorer callable ``fn(tiles, generator)``: the mean of ``n`` transformed passes."""

    def __init__(self, fn: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.fn = fn
        self.n = int(n)

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.fn, "stochastic", False))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        total = None
        for turns, flip in TRANSFORMS[: self.n]:
            out = untransform(self.fn(transform(x, turns, flip), generator), turns, flip)
            total = out.float() if total is None else total + out.float()
        return total / self.n


def check_self_ensemble(n: object) -> int:
    """The number of passes ``self_ensemble=`` asks for, or a one-line error."""
    if isinstance(n, bool) or not isinstance(n, int | str) or str(n).strip() not in map(str, SIZES):
        raise UserError(
            f"self_ensemble={n!r} is invalid: use 1 (off), 2, 4 or 8 (passes of flipped and "
            "rotated copies averaged; the restoration costs that many times more)"
        )
    return int(n)


def self_ensemble(restorer: Restorer, n: int) -> Restorer:
    """A copy of ``restorer`` that averages ``n`` flipped/rotated passes (1: unchanged)."""
    n = check_self_ensemble(n)
    if n == 1:
        return restorer
    if restorer.stochastic:
        raise UserError(
            f"self_ensemble={n}: model {restorer.name} samples (a diffusion model), and a mean of "
            "samples is not a sample; drop self_ensemble, or lower sample_steps for a smoother "
            "result"
        )
    return dataclasses.replace(restorer, fn=SelfEnsemble(restorer.fn, n).eval())
