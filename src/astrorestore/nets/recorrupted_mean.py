"""Restoring with a network trained on recorrupted frames (``model=r2r``): the mean of its
outputs over a few fresh recorruptions of the input, not one pass on the input as it is.

A Recorrupted-to-Recorrupted network is trained on inputs ``y + a w``, noisier than the frame
(variance ``v / (1 - alpha)``). Applied to the frame as it is, it is outside what it learned:
on the held-out fields of ``bench/bench_self_supervised.py`` (200 steps, alpha 0.5) one pass on
the plain frame left 0.32 of the sky noise and gave 75.4 dB at FWHM 2.5 px; one pass on one
recorruption 0.19 and 77.1 dB; the mean over 8 recorruptions 0.11 and 79.4 dB (as Pang et al.
2021 restore). So validation, ``infer.py`` and the checkpoint restore with this mean.

The recorruption uses the noise the normalised space knows: the sky's (``sigma_u = 1 /
softening`` in the linear units ``u = sinh(z)``, :mod:`astrorestore.data.normalization.asinh`),
exact on the sky and an under-estimate on bright sources, which carry more shot noise; or, for a
network bounded by each frame's noise (``photons_per_unit=frame``), that noise, shot noise
included, as at training (the network's ``noise.linear_variance``). The passes share the caller's generator, so a seeded restoration repeats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from astrorestore.errors import UserError

# asinh-space clamp shared with nets/bounded.py (sinh of it is still finite in float32).
_Z_LIMIT = 40.0


class RecorruptedMean(nn.Module):
    """``asinh(mean_k sinh(net(asinh(sinh(z) + a * eps_k / softening))))`` over ``passes`` draws.

    Args:
        net: the trained network (normalised in, normalised out).
        alpha: the split it was trained with (``data.pairing.alpha``): ``a = sqrt(alpha / (1 - alpha))``.
        passes: recorruptions averaged (8: see the module docstring).
        softening: the normaliser's softening (the sky sigma is ``1 / softening`` in ``u``).
    """

    stochastic = True

    def __init__(
        self, net: nn.Module, alpha: float = 0.5, passes: int = 8, softening: float = 3.0
    ) -> None:
        super().__init__()
        if not 0.0 < float(alpha) < 1.0:
            raise UserError(f"model.recorrupted_mean.alpha={alpha!r} is invalid: use (0, 1)")
        if int(passes) != passes or passes < 1:
            raise UserError(
                f"model.recorrupted_mean.passes={passes!r} is invalid: use an integer >= 1"
            )
        if not float(softening) > 0:
            raise UserError(f"model.recorrupted_mean.softening={softening!r} is invalid: use > 0")
        self.net = net
        self.alpha, self.passes, self.softening = float(alpha), int(passes), float(softening)

    @property
    def size_multiple(self) -> int:
        return int(getattr(self.net, "size_multiple", 1))

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        u = torch.sinh(z.clamp(-_Z_LIMIT, _Z_LIMIT))
        step = math.sqrt(self.alpha / (1.0 - self.alpha)) / self.softening
        noise = getattr(self.net, "noise", None)
        if getattr(noise, "per_frame", False):
            step = math.sqrt(self.alpha / (1.0 - self.alpha)) * noise.linear_variance(u).sqrt()
        total = torch.zeros_like(u)
        for _ in range(self.passes):
            draw = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            out = self.net(torch.asinh(u + step * draw))
            total = total + torch.sinh(out.clamp(-_Z_LIMIT, _Z_LIMIT))
        return torch.asinh(total / self.passes)
