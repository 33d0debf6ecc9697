"""Networks whose output cannot move a pixel by more than a few noise sigma: the noise bound.

Why: a network trained on one PSF learns it as a prior and reshapes every bright star towards
it (a 7 090 e- peak came out at 3 427 e-, its light moved into the wings), and a blind-spot
network (Noise2Void), which never sees the pixel it predicts, flattens every core sharper than
its neighbourhood. At high signal-to-noise a correct restoration differs from the input by a few
noise sigma at most, so bounding the change by ``k`` sigma keeps the cores as observed while the
sky, where the noise is the whole signal, is free to be denoised. This makes it a property of the
architecture rather than something training must learn.

The bound is one function, :func:`noise_bound`: ``z - sigma * k * tanh(change / k)``, smooth
(gradients flow everywhere), linear for small changes (the network is unconstrained inside the
noise) and saturating at ``k`` sigma. :class:`NoiseBound` applies it in the two ways networks
use it:

- :meth:`NoiseBound.limit_noise`: the network predicts the NOISE in sigma units (the bounded
  residual U-Net of ``model=supervised``/``bounded`` below, and ``model=n2n``'s ResUNet-SE).
  Needs the network to see the pixel it corrects, which a top-skip U-Net does.
- :meth:`NoiseBound.clamp`: the network predicts the IMAGE, which is pulled to within ``k``
  sigma of the input (Noise2Void's ``output=clamped``). The blind spot survives: at a hidden
  pixel ``z`` is the replacement, so neither the prediction nor the clamp sees the true value.

``sigma`` is the per-pixel noise of the normalised input, a fact of the normaliser: the network
is handed a noise model (``model.net.noise``, built from config as
:class:`astrorestore.data.normalization.asinh.AsinhNoise`, whose docstring derives it), a
callable ``z -> sigma`` with the normaliser's ``softening``. With ``photons_per_unit`` null
that sigma is the sky's alone, a lower bound on the true noise of any detector, so no pixel moves
by more than ``k`` times the SKY noise in electrons, whatever the gain.

What is done to a restored frame after the network (giving back flux a bound cannot protect,
refitting star cores) is not a network's business: see :mod:`astrorestore.postprocess`.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.nets.res_unet import ResidualUNet

# Keeps sinh finite in float32 for garbage input; normalised frames stay far below (the same
# value as the noise model's clamp, astrorestore.data.normalization.asinh.Z_LIMIT).
_Z_LIMIT = 40.0


class NoiseSigma(Protocol):
    """What a bounded network needs of the noise: sigma per pixel of the normalised input, and
    the normaliser's softening (the sky's sigma is ``1 / softening``)."""

    softening: float

    def __call__(self, z: Tensor) -> Tensor: ...


def noise_bound(z: Tensor, change_in_sigmas: Tensor, sigma: Tensor, bound_sigmas: float) -> Tensor:
    """``z - sigma * k * tanh(change / k)``: ``z`` moved by ``change`` (in sigma units), at most
    ``k`` sigma. The one bound every bounded network uses."""
    k = bound_sigmas
    return z - sigma * (k * torch.tanh(change_in_sigmas / k))


def check_bound(bound_sigmas: float | None, noise: NoiseSigma | None, unbounded: str) -> None:
    """One-line errors for ``model.net.bound_sigmas`` and ``model.net.noise`` (``unbounded``
    says what null gives)."""
    if bound_sigmas is None:
        return
    if not (math.isfinite(bound_sigmas) and bound_sigmas > 0):
        raise UserError(
            f"model.net.bound_sigmas={bound_sigmas!r} is invalid: use a value > 0 (3-5), "
            f"or null for {unbounded}"
        )
    if noise is None:
        raise UserError(
            f"model.net.bound_sigmas={bound_sigmas} needs model.net.noise (the normaliser's "
            "noise model, _target_: astrorestore.data.normalization.asinh.AsinhNoise)"
        )


class NoiseBound:
    """A soft bound of ``k`` noise sigma on how far an output pixel may move from the input.

    Args:
        noise: the noise model (``z -> sigma``, with ``softening``).
        bound_sigmas: ``k``.
    """

    def __init__(self, noise: NoiseSigma, bound_sigmas: float) -> None:
        check_bound(bound_sigmas, noise, "no bound")
        self.noise = noise
        self.bound_sigmas = float(bound_sigmas)

    @property
    def softening(self) -> float:
        return self.noise.softening

    def limit_noise(self, z: Tensor, noise_in_sigmas: Tensor) -> Tensor:
        """``z`` minus the predicted noise (in sigma units), bounded at ``k`` sigma."""
        return noise_bound(z, noise_in_sigmas, self.noise(z), self.bound_sigmas)

    def clamp(self, z: Tensor, prediction: Tensor) -> Tensor:
        """The predicted image, softly clamped to within ``k`` sigma of ``z``."""
        sigma = self.noise(z)
        # Saturates (zero gradient) far outside the bound: cores the net cannot predict cost
        # nothing and teach it nothing.
        return noise_bound(z, (z - prediction) / sigma, sigma, self.bound_sigmas)

    def __repr__(self) -> str:
        return f"NoiseBound({self.noise!r}, bound_sigmas={self.bound_sigmas})"


def capped_correction(z: Tensor, correction: Tensor, cap: float) -> Tensor:
    """``asinh(sinh(z) + cap * tanh(correction))``: a correction relative to the centre pixel,
    capped at ``cap`` normaliser scales in linear units (Noise2Void's ``output=capped_residual``;
    it cannot work without a top skip)."""
    return torch.asinh(torch.sinh(z.clamp(-_Z_LIMIT, _Z_LIMIT)) + cap * torch.tanh(correction))


class BoundedResidualUNet(ResidualUNet):
    """:class:`ResidualUNet` whose predicted noise is in units of sigma and bounded by ``k`` sigma
    (the network of ``model=supervised``, alias ``model=bounded``).

    Same layers and state-dict keys as :class:`ResidualUNet` (only ``forward`` differs), and the
    identity at initialisation (zero noise head). ``bound_sigmas=None`` makes it exactly the
    plain :class:`ResidualUNet` (``z - r``), which is how ``model=supervised_unbounded`` keeps the
    old unbounded default without a second network config to keep in step.

    Args:
        noise: the normaliser's noise model (``model.net.noise``); needed with a bound.
        bound_sigmas: ``k``, the largest change of a pixel in noise sigma (3-5 is sensible);
            ``None`` for the plain, unbounded :class:`ResidualUNet`.
        Others: see :class:`ResidualUNet`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
        noise: NoiseSigma | None = None,
        bound_sigmas: float | None = 4.0,
    ) -> None:
        check_bound(bound_sigmas, noise, "the unbounded residual U-Net")
        super().__init__(in_channels, base_channels, depth, dilations)
        self.noise = noise
        self.bound = None if bound_sigmas is None else NoiseBound(noise, bound_sigmas)

    def forward(self, x: Tensor) -> Tensor:
        if self.bound is None:
            return super().forward(x)
        return self.bound.limit_noise(x, self.predict_noise(x))

    def extra_repr(self) -> str:
        return f"bound={self.bound!r}"
