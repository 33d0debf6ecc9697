"""Faster inference without touching the model: bf16, channels-last and torch.compile.

On this project's default network most of the inference time is spent in 3x3 convolutions with
16-128 channels, which run well below a CPU's peak in float32 and NCHW layout. Three switches
trade nothing or very little for speed, and each is measured by ``bench/bench_speed.py`` rather
than assumed (channels-last, for one, is slower on some CPUs):

- ``precision="bf16"``: convolutions run in bfloat16 under autocast (CPUs with AVX512-BF16/AMX
  and recent GPUs do these natively); the tiles and the returned values stay float32, so a
  residual network's ``input - noise`` keeps the input exact. The network does see its input
  rounded to bf16's 8-bit mantissa, though, and in asinh space a star core's rounding is
  several electrons: on the default model 99 % of pixels move by < 0.03 of their own noise
  sigma but a bright core can move by ~0.7 sigma. Hence fp32 is the default, and
  ``bench_speed.py`` reports that change next to the speed-up.
- ``channels_last=True``: weights and tiles in NHWC layout (oneDNN's native one).
- ``compile=True``: ``torch.compile`` of the network. The first batch pays for compilation
  (about a minute on a 2-core CPU), so it only pays off on large frames or many files; every
  batch is padded to the same size so the last one does not compile again.

The switches wrap the restorer's callable, so samplers, GANs and plain networks all get them.
"""

from __future__ import annotations

import dataclasses

import torch

from astrorestore.errors import UserError
from astrorestore.inference.restorer import Restorer

PRECISIONS = ("fp32", "bf16")


class AcceleratedForward(torch.nn.Module):
    """Wraps a restorer callable ``fn(tiles, generator)`` with autocast, layout and padding."""

    def __init__(
        self, fn: torch.nn.Module, precision: str, channels_last: bool, pad_batch: int | None
    ) -> None:
        super().__init__()
        self.fn = fn
        self.precision = precision
        self.channels_last = channels_last
        self.pad_batch = pad_batch

    @property
    def stochastic(self) -> bool:
        return bool(getattr(self.fn, "stochastic", False))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]
        if self.pad_batch is not None and n < self.pad_batch:
            # A compiled graph is specialised to the batch size: pad rather than recompile.
            pad = x[-1:].expand(self.pad_batch - n, *x.shape[1:])
            x = torch.cat([x, pad])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.fn(x, generator)
        return out[:n].float().contiguous()


def check_precision(precision: str) -> str:
    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise UserError(
            f"precision={precision!r} is not supported; pass precision=fp32 (exact) or bf16 "
            "(faster where the CPU/GPU has bfloat16 units)"
        )
    return value


def accelerate(
    restorer: Restorer,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    batch_size: int | None = None,
) -> Restorer:
    """A copy of ``restorer`` running with the given switches (the original is untouched
    except that its modules move to channels-last memory when asked)."""
    precision = check_precision(precision)
    if precision == "fp32" and not channels_last and not compile:
        return restorer
    fn = restorer.fn
    if channels_last:
        fn = fn.to(memory_format=torch.channels_last)
    if compile:
        # Compile the network, not the sampler loop around it: samplers call it many times.
        target = getattr(fn, "net", fn)
        target.compile(dynamic=False)
    wrapped = AcceleratedForward(
        fn, precision, bool(channels_last), batch_size if compile else None
    )
    return dataclasses.replace(restorer, fn=wrapped.eval())
