"""A residual denoiser that cannot move more light than the noise allows.

Why: a plain residual network trained on one PSF learns it as a prior and reshapes every bright
star towards it (a 7 090 e- peak came out at 3 427 e-, its light moved into the wings). At high
signal-to-noise the noise is a small fraction of the signal, so a correct restoration differs
from the input by at most a few noise sigma there. This network makes that a property of the
architecture rather than something training must learn: it predicts the residual in units of the
local noise sigma and bounds it softly, ``z_out = z - sigma_z(z) * k * tanh(r / k)``.

The network sees only normalised tiles ``z = asinh(u)``, ``u = (x - offset) / scale``, with
``offset`` the sky and ``scale = softening * sigma_sky`` (see
:class:`~astrorestore.data.normalization.asinh.AsinhNormalizer`), so sigma must be computable from
``z`` alone. In electrons the noise of a pixel is ``sigma_e^2 = sigma_sky^2 + (x - offset) / g``
(read and sky noise, plus the shot noise of the source above the sky, gain ``g`` in photons per
electron). Dividing by ``scale`` and propagating through ``dz/du = 1 / sqrt(1 + u^2) = 1/cosh z``:

    sigma_z(z) = sqrt(1 / softening^2 + max(u, 0) / G) / cosh(z),   u = sinh(z),

where ``G = g * scale`` is the number of detected photons per unit of ``u`` ("photons per
unit"). ``softening`` is a fact of the normaliser (the model config takes it from
``data.normalizer.softening``). ``G`` depends on the gain and on the frame's own sky noise in
electrons, which the normalised tile no longer carries, so it is a model setting:

- ``photons_per_unit=None`` (default) drops the shot-noise term. That sigma is a lower bound on
  the true noise of any detector, so the guarantee holds without knowing the gain: no pixel moves
  by more than ``k`` times the SKY noise (in electrons, ``|x_out - x_in| <~ k * sigma_sky``). Star
  cores then keep their own shot noise, which costs little PSNR (most pixels are sky) and is
  exactly what photometry and PSF fitting want.
- a number ``G`` adds the shot-noise term, letting cores be denoised too; choose the smallest
  ``gain * softening * sigma_sky`` expected (a too-large ``G`` tightens the bound, a too-small one
  loosens it by ``sqrt(G_true / G)`` at most).

The bound ``k * tanh(r / k)`` is smooth (gradients flow everywhere), linear for small ``r`` (the
network is unconstrained inside the noise) and saturates at ``k`` sigma.

``bound_sigmas=None`` turns the bound (and the sigma units) off: the network is then exactly the
plain :class:`ResidualUNet` (``z - r``), which is how the configs keep the old unbounded default
(``model=supervised_unbounded``) without a second network config to keep in step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.nets.res_unet import ResidualUNet

# asinh-normalised frames stay well below this (z = 12 is 8e4 normaliser scales above the sky);
# the clamp only keeps cosh/sinh finite in float32 for garbage input.
_Z_LIMIT = 40.0


def asinh_noise_sigma(z: Tensor, softening: float, photons_per_unit: float | None = None) -> Tensor:
    """Per-pixel noise sigma in asinh-normalised space (see the module docstring).

    Args:
        z: normalised image ``asinh((x - offset) / scale)``.
        softening: the normaliser's softening (``scale = softening * sigma_sky``).
        photons_per_unit: ``gain * scale``; ``None`` ignores shot noise (a lower bound).
    """
    z = z.clamp(-_Z_LIMIT, _Z_LIMIT)
    variance = torch.full_like(z, 1.0 / softening**2)
    if photons_per_unit is not None:
        variance = variance + torch.sinh(z).clamp_min(0.0) / photons_per_unit
    return torch.sqrt(variance) / torch.cosh(z)


def check_noise_model(
    softening: float, photons_per_unit: float | None, group: str = "model.net"
) -> None:
    """Raise UserError unless ``softening > 0`` and ``photons_per_unit`` is None or > 0 (the
    two facts :func:`asinh_noise_sigma` needs; every bounded network, and the noise-weighted
    loss with ``group="model.loss"``, checks them here)."""
    if not (math.isfinite(softening) and softening > 0):
        raise UserError(
            f"{group}.softening={softening!r} is invalid: use the normaliser's softening "
            "(> 0), i.e. ${data.normalizer.softening}"
        )
    if photons_per_unit is not None and not (
        math.isfinite(photons_per_unit) and photons_per_unit > 0
    ):
        raise UserError(
            f"{group}.photons_per_unit={photons_per_unit!r} is invalid: use a value > 0 "
            "(gain x normaliser scale in electrons) or null to bound by the sky noise"
        )


def bounded_residual(z: Tensor, residual: Tensor, sigma: Tensor, bound_sigmas: float) -> Tensor:
    """``z - sigma * k * tanh(residual / k)``: ``residual`` in sigma units, |change| < k sigma."""
    k = bound_sigmas
    return z - sigma * (k * torch.tanh(residual / k))


class BoundedResidualUNet(ResidualUNet):
    """:class:`ResidualUNet` whose predicted noise is in units of sigma and bounded by ``k`` sigma.

    Same layers and state-dict keys as :class:`ResidualUNet` (only ``forward`` differs), and the
    identity at initialisation (zero noise head).

    Args:
        softening: the normaliser's softening (set from ``data.normalizer.softening``).
        bound_sigmas: ``k``, the largest change of a pixel in noise sigma (3-5 is sensible);
            ``None`` for the plain, unbounded :class:`ResidualUNet` (``z - r``).
        photons_per_unit: ``gain * normaliser scale`` to include shot noise in sigma, or
            ``None`` for the gain-free bound by the sky noise (see the module docstring).
        Others: see :class:`ResidualUNet`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 16,
        depth: int = 3,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4),
        softening: float = 3.0,
        bound_sigmas: float | None = 4.0,
        photons_per_unit: float | None = None,
        flux_sigma: float | None = None,
        flux_threshold: float = 5.0,
        flux_ramp_from: float = 3.0,
        flux_footprint: float | None = 1.0,
        flux_chi2: float | None = None,
        flux_stack_snr: float | None = None,
    ) -> None:
        # nets.bounded builds on this module's sigma, so its give-back is imported here.
        from astrorestore.nets.bounded import GiveBack

        check_noise_model(softening, photons_per_unit)
        if bound_sigmas is not None and not (math.isfinite(bound_sigmas) and bound_sigmas > 0):
            raise UserError(
                f"model.net.bound_sigmas={bound_sigmas!r} is invalid: use a value > 0 (3-5), "
                "or null for the unbounded residual U-Net"
            )
        give_back = GiveBack.from_keys(
            softening,
            flux_sigma,
            flux_threshold,
            flux_ramp_from,
            flux_footprint,
            photons_per_unit=photons_per_unit,
            flux_chi2=flux_chi2,
            flux_stack_snr=flux_stack_snr,
        )
        super().__init__(in_channels, base_channels, depth, dilations)
        self.softening = float(softening)
        self.bound_sigmas = None if bound_sigmas is None else float(bound_sigmas)
        self.photons_per_unit = None if photons_per_unit is None else float(photons_per_unit)
        # Evaluation only (training sees the bounded output); None when flux_sigma is null.
        self.give_back = give_back

    def noise_sigma(self, z: Tensor) -> Tensor:
        """Noise sigma of each pixel of the normalised input ``z``."""
        return asinh_noise_sigma(z, self.softening, self.photons_per_unit)

    def forward(self, x: Tensor) -> Tensor:
        if self.bound_sigmas is None:
            out = super().forward(x)
        else:
            out = bounded_residual(x, self.predict_noise(x), self.noise_sigma(x), self.bound_sigmas)
        if self.give_back is not None and not self.training:
            return self.give_back(x, out)
        return out

    def extra_repr(self) -> str:
        return (
            f"softening={self.softening}, bound_sigmas={self.bound_sigmas}, "
            f"photons_per_unit={self.photons_per_unit}, give_back={self.give_back!r}"
        )
