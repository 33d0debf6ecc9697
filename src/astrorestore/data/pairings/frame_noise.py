"""Single noisy frames with their noise model: the base of the noise-model pairings.

Astronomical noise is known: the frame's gain and read noise, or its ERR/VAR maps. The pairings
of the losses that use it (Recorrupted-to-Recorrupted, :mod:`.recorrupted`; SURE,
``model=sure``) need the same thing from a batch: the observed frame and, per pixel, the
Poisson and Gaussian parts of its noise. Where they come from, per batch:

- ``sigma`` (a frame's ERR map, or sqrt of its VAR_* maps): variance ``sigma^2`` pixel by pixel,
  no Poisson part (the map already holds the shot noise);
- ``noise_gain``/``noise_read`` (per item, from the frame's :class:`FrameNoise`: header keys or
  a mean-variance fit, see ``data.datamodules.fits_folder``): Poisson counts ``gain * y`` plus
  read noise, variance ``y / gain + read^2``;
- a clean batch (simulated fields): the pairing's own noise model draws ``y`` and is the model:
  its gain and read noise of that draw (estimated from ``y``, as on real frames), other noise
  models their ``noise_sigma``.

:class:`FrameNoisePairing` itself passes the frame through as it is: ``input``, ``target`` and
``observed`` are the noisy frame, and ``poisson_scale`` (frame units per electron, ``1 / gain``;
0 where only a variance map is known) and ``read_variance`` (frame units squared) carry its
noise model, each ``(B, C, H, W)`` or broadcastable to it, unnormalised: a module whose loss
needs the network's derivatives (``model=sure``) computes it in the training step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.corruption.recorruption import _as_map
from astrorestore.data.pairings.base import Batch, Pairing
from astrorestore.errors import UserError

#: Per-item noise model of real frames (``(1, 1, 1)`` each, the frame's units): gain in
#: electrons per unit and the read-noise sigma in units. A data module adds them when the
#: pairing asks (``needs_frame_noise``) and has no per-pixel ``sigma`` map.
FRAME_NOISE_KEYS = ("noise_gain", "noise_read")
#: What :class:`FrameNoisePairing` adds to a batch: the frame's noise model per pixel.
NOISE_MODEL_KEYS = ("poisson_scale", "read_variance")


class FrameNoisePairing(Pairing):
    """Noisy frame -> itself, with its noise model per pixel (see the module doc).

    Args:
        noise: the noise model clean (simulated) batches are drawn with; real frames bring
            their own (an ERR/VAR map, or the frame's gain and read noise).
    """

    needs_frame_noise = True
    #: What the method is called in messages.
    method = "a noise-model loss"

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "noisy2" in provides:
            raise UserError(
                f"data={data_name} gives exposure pairs (data.pairs=true); {self.method} uses "
                "single frames: drop data.pairs=true, or use model=n2n"
            )
        if "clean" in provides:
            if self.noise is None:
                raise UserError(
                    f"data={data_name} provides clean images and {self.method} has no noise "
                    "model to draw them with: choose one with noise=<poisson_gaussian|...>"
                )
            return
        if "noisy" not in provides:
            raise UserError(
                f"{self.method} needs noisy frames (or clean ones to add noise to); "
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
                    f"the noise model {type(noise).__name__} has no per-pixel sigma for "
                    f"{self.method}: use noise=poisson_gaussian or noise=gaussian"
                )
            return sigma.square(), None, None
        if "sigma" in batch:
            return batch["sigma"].float().square(), None, None
        if "noise_gain" in batch:
            return None, batch["noise_gain"].float(), batch["noise_read"].float().square()
        raise ValueError("a noisy batch needs 'sigma' or 'noise_gain'/'noise_read'")

    def noise_model(self, batch: Batch, noisy: Tensor, truth: Tensor | None) -> Batch:
        """``poisson_scale`` and ``read_variance`` of ``noisy``, broadcast to its shape (a map
        of another shape is a one-line UserError)."""
        variance, gain, read_variance = self._noise_terms(batch, noisy, truth)
        if variance is not None:
            return {
                "poisson_scale": torch.zeros_like(noisy),
                "read_variance": _as_map(variance, noisy, "noise variance").contiguous(),
            }
        return {
            "poisson_scale": (1.0 / _as_map(gain, noisy, "gain")).contiguous(),
            "read_variance": _as_map(read_variance, noisy, "read variance").contiguous(),
        }

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        noisy, truth = self.observe(batch, rng)
        out: Batch = {"input": noisy, "target": noisy, "observed": noisy}
        out |= self.noise_model(batch, noisy, truth)
        if truth is not None:
            out["truth"] = truth
        return self._finish(out, batch)
