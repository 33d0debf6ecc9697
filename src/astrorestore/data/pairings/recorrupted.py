"""Recorrupted-to-Recorrupted pairing: self-supervision from single noisy frames and their noise model.

Astronomical noise is known: the frame's gain and read noise, or its ERR/VAR maps. Given the
per-pixel variance ``v`` of a noisy frame ``y``, one fresh Gaussian draw ``w ~ N(0, v)`` makes
two frames whose noises are independent (Pang et al. 2021, "Recorrupted-to-Recorrupted"):
the network sees ``y + a w`` and is trained towards ``y - w / a`` (``a = sqrt(alpha / (1 - alpha))``),
so the L2 loss estimates the supervised error without bias, as Noise2Noise does with real pairs.
For pure photon counts the split is exact by binomial thinning (GR2R, Monroy, Bacca & Tachella
2024). The draws are :mod:`astrorestore.data.corruption.recorruption`'s, whose losses
(:mod:`astrorestore.losses.noise_model`) are unit-tested for unbiasedness.

Where the variance comes from, per batch: see :mod:`.frame_noise` (the base class).

``observed`` is the plain noisy frame: validation restores it, and inference applies the network
to the frame as it is (measured against averaging over recorruptions in
docs/methods/self-supervised.md).
"""

from __future__ import annotations

import torch

from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.data.corruption.recorruption import (
    recorrupt_gaussian,
    recorrupt_poisson,
    recorrupt_poisson_gaussian,
)
from astrorestore.data.pairings.base import Batch
from astrorestore.data.pairings.frame_noise import (  # noqa: F401 (re-exported)
    FRAME_NOISE_KEYS,
    FrameNoisePairing,
)
from astrorestore.errors import UserError

KINDS = ("pg_r2r", "gr2r")


class RecorruptedPairing(FrameNoisePairing):
    """Noisy frame -> recorrupted input and target with independent noises (R2R / GR2R).

    Args:
        noise: the noise model clean (simulated) batches are drawn with; real frames bring
            their own (an ERR/VAR map, or the frame's gain and read noise).
        kind: ``pg_r2r`` (Gaussian recorruption with the Poisson-Gaussian or per-pixel
            variance; any frame) or ``gr2r`` (binomial thinning of the photon counts: exact for
            Poisson noise alone, biased by read noise).
        alpha: the split, in (0, 1): the input's noise variance is ``v / (1 - alpha)``, the
            target's ``v / alpha``.
    """

    method = "recorruption"

    def __init__(
        self, noise: NoiseModel | None = None, kind: str = "pg_r2r", alpha: float = 0.5
    ) -> None:
        super().__init__(noise)
        if kind not in KINDS:
            raise UserError(f"data.pairing.kind={kind!r} is invalid: use {' or '.join(KINDS)}")
        if not 0.0 < float(alpha) < 1.0:
            raise UserError(
                f"data.pairing.alpha={alpha!r} is invalid: use a value in (0, 1) (0.5 splits "
                "the noise evenly between input and target)"
            )
        self.kind = kind
        self.alpha = float(alpha)

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        noisy, truth = self.observe(batch, rng)
        variance, gain, read_variance = self._noise_terms(batch, noisy, truth)
        if self.kind == "gr2r":
            if gain is None or not bool(torch.isfinite(torch.as_tensor(gain)).all()):
                raise UserError(
                    "data.pairing.kind=gr2r thins photon counts and needs the frame's gain; "
                    "this data has only a per-pixel sigma (no gain in the header, none fitted): "
                    "use data.pairing.kind=pg_r2r"
                )
            net_input, target, _ = recorrupt_poisson(noisy, gain, self.alpha, rng)
        elif variance is not None:
            net_input, target, _ = recorrupt_gaussian(noisy, variance, self.alpha, rng)
        else:
            net_input, target, _ = recorrupt_poisson_gaussian(
                noisy, gain, read_variance, self.alpha, rng
            )
        out: Batch = {"input": net_input, "target": target, "observed": noisy}
        if truth is not None:
            out["truth"] = truth
        return self._finish(out, batch)

    def __repr__(self) -> str:
        return f"RecorruptedPairing(kind={self.kind!r}, alpha={self.alpha}, noise={self.noise!r})"
