"""Keep a restoration within a few noise sigma of what was observed, outside the network.

Why: self-supervised networks cannot be trusted at star cores. A blind-spot network (Noise2Void)
never sees the pixel it predicts, so it flattens every core sharper than its neighbourhood; a
Noise2Noise network, like a supervised one, learns the training PSF and reshapes other PSFs
towards it. At high signal-to-noise a correct restoration differs from the input by a few noise
sigma at most, so bounding the change by ``k`` sigma keeps the cores as observed while the sky,
where the noise is the whole signal, is free to be denoised.

:class:`NoiseBound` holds the bound and applies it in two ways, both built on the sigma of
:mod:`astrorestore.nets.bounded_residual` (read its docstring for ``sigma_z(z)``):

- :meth:`NoiseBound.limit_noise`: the network predicts the NOISE in sigma units and the output
  is ``z - sigma * k * tanh(r / k)`` (Noise2Noise, supervised). Needs the network to see the
  pixel it corrects, which a top-skip U-Net does.
- :meth:`NoiseBound.clamp`: the network predicts the IMAGE and the output is that prediction
  pulled to within ``k`` sigma of the input, ``z - sigma * k * tanh((z - p) / (sigma k))``.
  This is the form for blind-spot training: the network needs no pixel-level view of its input
  (N2V2 has no top skip and blur-pools, so it cannot cancel per-pixel noise relative to ``z``),
  and the blind spot survives: at a hidden pixel ``z`` is the replacement, so neither the
  prediction nor the clamp sees the true value the loss compares with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.nets.bounded_residual import asinh_noise_sigma, bounded_residual


class NoiseBound:
    """A soft bound of ``k`` noise sigma on how far an output pixel may move from the input.

    Args:
        softening: the normaliser's softening (``${data.normalizer.softening}``).
        bound_sigmas: ``k``; with ``photons_per_unit=None`` the change is at most ~``k`` SKY
            sigmas in electrons at any brightness.
        photons_per_unit: ``gain * normaliser scale`` to add shot noise to sigma (cores may then
            be denoised by up to ``k`` of their own sigma), or ``None``.
    """

    def __init__(
        self, softening: float, bound_sigmas: float, photons_per_unit: float | None = None
    ) -> None:
        if not (math.isfinite(softening) and softening > 0):
            raise UserError(
                f"model.net.softening={softening!r} is invalid: use the normaliser's softening "
                "(> 0), i.e. ${data.normalizer.softening}"
            )
        if not (math.isfinite(bound_sigmas) and bound_sigmas > 0):
            raise UserError(
                f"model.net.bound_sigmas={bound_sigmas!r} is invalid: use a value > 0 (3-5), "
                "or null for no bound"
            )
        if photons_per_unit is not None and not (
            math.isfinite(photons_per_unit) and photons_per_unit > 0
        ):
            raise UserError(
                f"model.net.photons_per_unit={photons_per_unit!r} is invalid: use a value > 0 "
                "(gain x normaliser scale in electrons) or null to bound by the sky noise"
            )
        self.softening = float(softening)
        self.bound_sigmas = float(bound_sigmas)
        self.photons_per_unit = None if photons_per_unit is None else float(photons_per_unit)

    def sigma(self, z: Tensor) -> Tensor:
        """Noise sigma of each pixel of the normalised input ``z``."""
        return asinh_noise_sigma(z, self.softening, self.photons_per_unit)

    def limit_noise(self, z: Tensor, noise_in_sigmas: Tensor) -> Tensor:
        """``z`` minus the predicted noise (in sigma units), bounded at ``k`` sigma."""
        return bounded_residual(z, noise_in_sigmas, self.sigma(z), self.bound_sigmas)

    def clamp(self, z: Tensor, prediction: Tensor) -> Tensor:
        """The predicted image, softly clamped to within ``k`` sigma of ``z``."""
        sigma = self.sigma(z)
        # Saturates (zero gradient) far outside the bound: cores the net cannot predict cost
        # nothing and teach it nothing.
        return bounded_residual(z, (z - prediction) / sigma, sigma, self.bound_sigmas)

    def __repr__(self) -> str:
        return (
            f"NoiseBound(softening={self.softening}, bound_sigmas={self.bound_sigmas}, "
            f"photons_per_unit={self.photons_per_unit})"
        )


def linear_correction(z: Tensor, correction: Tensor, bound: float) -> Tensor:
    """``asinh(sinh(z) + bound * tanh(correction))``: the first bounded Noise2Void output, a
    correction relative to the centre pixel capped at ``bound`` normaliser scales (kept for
    ``model.net.output=bounded_residual``; it cannot work without a top skip)."""
    return torch.asinh(torch.sinh(z.clamp(-20.0, 20.0)) + bound * torch.tanh(correction))
