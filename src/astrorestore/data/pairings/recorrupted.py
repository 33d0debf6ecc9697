"""Recorrupted-to-Recorrupted pairing: self-supervision from single noisy frames and their noise model.

Astronomical noise is known: the frame's gain and read noise, or its ERR/VAR maps. Given the
per-pixel variance ``v`` of a noisy frame ``y``, one fresh Gaussian draw ``w ~ N(0, v)`` makes
two frames whose noises are independent (Pang et al. 2021, "Recorrupted-to-Recorrupted"):
the network sees ``y + a w`` and is trained towards ``y - w / a`` (``a = sqrt(alpha / (1 - alpha))``),
so the L2 loss estimates the supervised error without bias, as Noise2Noise does with real pairs.
For pure photon counts the split is exact by binomial thinning (GR2R, Monroy, Bacca & Tachella
2024). The draws are :mod:`astrorestore.data.corruption.recorruption`'s, whose losses
(:mod:`astrorestore.losses.noise_model`) are unit-tested for unbiasedness.

Where the variance comes from, per batch:

- ``sigma`` (a frame's ERR map, or sqrt of its VAR_* maps): ``v = sigma^2`` pixel by pixel;
- ``noise_gain``/``noise_read`` (per item, from the frame's :class:`FrameNoise`: header keys or
  a mean-variance fit, see ``data.datamodules.fits_folder``): ``v = y / gain + read^2``;
- a clean batch (simulated fields): the pairing's own noise model draws ``y`` and is the model:
  its gain and read noise of that draw give ``v = y / gain + read^2`` (estimated from ``y``, as on
  real frames), other noise models their ``noise_sigma``.

``observed`` is the plain noisy frame: validation restores it, and inference applies the network
to the frame as it is (measured against averaging over recorruptions in
docs/methods/self-supervised.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.data.corruption.noise import NoiseModel, PoissonGaussianNoise
from astrorestore.data.corruption.recorruption import (
    recorrupt_gaussian,
    recorrupt_poisson,
    recorrupt_poisson_gaussian,
)
from astrorestore.data.pairings.base import Batch, Pairing
from astrorestore.errors import UserError

KINDS = ("pg_r2r", "gr2r")
#: Per-item noise model of real frames (``(1, 1, 1)`` each, the frame's units): gain in
#: electrons per unit and the read-noise sigma in units. A data module adds them when the
#: pairing asks (``needs_frame_noise``) and has no per-pixel ``sigma`` map.
FRAME_NOISE_KEYS = ("noise_gain", "noise_read")


class RecorruptedPairing(Pairing):
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

    needs_frame_noise = True

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

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "noisy2" in provides:
            raise UserError(
                f"data={data_name} gives exposure pairs (data.pairs=true); recorruption makes "
                "its pairs from single frames: drop data.pairs=true, or use model=n2n"
            )
        if "clean" in provides:
            if self.noise is None:
                raise UserError(
                    f"data={data_name} provides clean images and the recorrupting pairing has "
                    "no noise model to draw them with: choose one with noise=<poisson_gaussian|...>"
                )
            return
        if "noisy" not in provides:
            raise UserError(
                f"recorruption needs noisy frames (or clean ones to add noise to); "
                f"data={data_name} provides neither"
            )
        if not {"sigma", "frame_noise"} & provides:
            raise UserError(
                f"data={data_name} has no noise model for its frames (an ERR/VAR map, or gain "
                "and read noise): use data=fits or data=jwst, which read it from each frame"
            )

    def _noise_terms(
        self, batch: Batch, noisy: Tensor, truth: Tensor | None
    ) -> tuple[Tensor | None, Tensor | float | None, Tensor | float | None]:
        """``(variance map or None, gain, read variance)`` of ``noisy`` (see the module doc)."""
        if truth is not None and "noisy" not in batch:
            noise = self._require_noise()
            if isinstance(noise, PoissonGaussianNoise):
                gain, read = noise.drawn_gain_read(truth)
                return None, gain, torch.as_tensor(read, device=noisy.device) ** 2
            sigma = noise.noise_sigma(truth)
            if sigma is None:
                raise UserError(
                    f"the noise model {type(noise).__name__} has no per-pixel sigma to "
                    "recorrupt with: use noise=poisson_gaussian or noise=gaussian"
                )
            return sigma.square(), None, None
        if "sigma" in batch:
            return batch["sigma"].float().square(), None, None
        if "noise_gain" in batch:
            return None, batch["noise_gain"].float(), batch["noise_read"].float().square()
        raise ValueError("a noisy batch needs 'sigma' or 'noise_gain'/'noise_read'")

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
