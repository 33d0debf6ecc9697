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

A bound per pixel cannot protect a faint star: ten pixels each a few sigma low is most of its
flux, and a blind-spot network, which never sees a pixel's own value, shrinks faint stars towards
the sky (measured: the clamped Noise2Void output lost 3-23 % of the aperture flux of S/N > 10
stars), or spreads their light into the wings. :func:`give_back_removed_sources` returns it: the
residual ``input - output`` of a good denoiser is white noise, so where its local mean is a
significant detection of either sign the residual is given back, and on each source's footprint
the residual's low-pass is given back too, so that the restoration may reshape a source only on
the finest scales and never change its flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from astrorestore.errors import UserError
from astrorestore.nets.bounded_residual import (
    asinh_noise_sigma,
    bounded_residual,
    check_noise_model,
)

# Stacked give-back (step 3 of give_back_removed_sources): stamp radius (px), the fewest peaks a
# tile must have, and the significance (standard errors) a pixel of the mean stamp needs.
_STACK_RADIUS = 3
_STACK_MIN = 8
_STACK_SIGNIFICANCE = 2.0


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
        check_noise_model(softening, photons_per_unit)
        if not (math.isfinite(bound_sigmas) and bound_sigmas > 0):
            raise UserError(
                f"model.net.bound_sigmas={bound_sigmas!r} is invalid: use a value > 0 (3-5), "
                "or null for no bound"
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


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a ``(B, C, H, W)`` tensor, reflecting at the edges."""
    radius = max(1, math.ceil(4.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    channels = image.shape[1]
    out = image
    for kernel in (taps.view(1, 1, -1, 1), taps.view(1, 1, 1, -1)):
        vertical = kernel.shape[2] > 1
        pad = (0, 0, radius, radius) if vertical else (radius, radius, 0, 0)
        size = image.shape[2] if vertical else image.shape[3]
        mode = "reflect" if size > radius else "replicate"
        out = F.conv2d(
            F.pad(out, pad, mode=mode),
            kernel.expand(channels, 1, *kernel.shape[2:]),
            groups=channels,
        )
    return out


def check_give_back(
    sigma_px: float | None,
    threshold: float,
    ramp_from: float,
    footprint_px: float | None,
    chi2_from: float | None = None,
    stack_snr: float | None = None,
) -> None:
    """Raise UserError unless the settings of :func:`give_back_removed_sources` are usable
    (named as the ``model.net.flux_*`` keys that set them)."""
    if sigma_px is not None and not (math.isfinite(sigma_px) and sigma_px > 0):
        raise UserError(
            f"model.net.flux_sigma={sigma_px!r} is invalid: use a width in pixels > 0 (1-2) or null"
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise UserError(f"model.net.flux_threshold={threshold!r} is invalid: use a value > 0 (3-5)")
    if not (math.isfinite(ramp_from) and 0 <= ramp_from < threshold):
        raise UserError(
            f"model.net.flux_ramp_from={ramp_from!r} is invalid: use 0 <= value < "
            f"flux_threshold ({threshold})"
        )
    if footprint_px is not None and not (math.isfinite(footprint_px) and footprint_px > 0):
        raise UserError(
            f"model.net.flux_footprint={footprint_px!r} is invalid: use a scale in pixels > 0 "
            "(about 1) or null"
        )
    if chi2_from is not None and not (math.isfinite(chi2_from) and chi2_from > 1):
        raise UserError(
            f"model.net.flux_chi2={chi2_from!r} is invalid: use a reduced chi-square > 1 "
            "(about 1.5; white noise reads 1) or null"
        )
    if stack_snr is not None and not (math.isfinite(stack_snr) and stack_snr > 0):
        raise UserError(
            f"model.net.flux_stack_snr={stack_snr!r} is invalid: use a signal-to-noise > 0 "
            "(about 20) or null"
        )


def stacked_correction(residual: Tensor, snr: Tensor, min_snr: float) -> Tensor:
    """The mean of ``residual`` (noise units) around the bright peaks of each image, placed
    back at every one of those peaks: what a restoration did to all its bright sources alike.

    Peaks: local maxima (3x3) of ``snr`` (the restored image in noise units) above ``min_snr``
    and ``_STACK_RADIUS`` px inside the image. Images with fewer than ``_STACK_MIN`` peaks get
    no correction; pixels of the mean stamp within ``_STACK_SIGNIFICANCE`` standard errors
    (from the spread between peaks) of zero are set to zero.
    """
    r = _STACK_RADIUS
    size = 2 * r + 1
    peaks = (snr == F.max_pool2d(snr, 3, stride=1, padding=1)) & (snr > min_snr)
    peaks[..., :r, :] = False
    peaks[..., -r:, :] = False
    peaks[..., :, :r] = False
    peaks[..., :, -r:] = False
    correction = torch.zeros_like(residual)
    for i in range(residual.shape[0]):
        for c in range(residual.shape[1]):
            where = peaks[i, c].flatten().nonzero().squeeze(1)
            if where.numel() < _STACK_MIN:
                continue
            # (size^2, H*W) columns of every stamp; keep the peaks' columns.
            stamps = F.unfold(residual[i : i + 1, c : c + 1], size, padding=r)[0][:, where]
            mean = stamps.mean(dim=1)
            error = stamps.std(dim=1) / math.sqrt(where.numel())
            mean = torch.where(mean.abs() > _STACK_SIGNIFICANCE * error, mean, 0.0)
            # The mean stamp placed at each peak (a transposed convolution of the peak map).
            delta = peaks[i : i + 1, c : c + 1].to(residual.dtype)
            kernel = mean.view(1, 1, size, size)
            correction[i, c] = F.conv_transpose2d(delta, kernel, padding=r)[0, 0]
    return correction


def give_back_removed_sources(
    z: Tensor,
    restored: Tensor,
    softening: float,
    sigma_px: float = 1.5,
    threshold: float = 5.0,
    ramp_from: float = 3.0,
    footprint_px: float | None = 1.0,
    photons_per_unit: float | None = None,
    chi2_from: float | None = None,
    stack_snr: float | None = None,
) -> Tensor:
    """Return to ``restored`` the light a restoration took from, or added to, the sources.

    Works in the linear units of the asinh normalisation (sky noise ``1 / softening``; with
    ``photons_per_unit`` the noise of each pixel adds its shot noise, ``observed / G``, as in
    :func:`~astrorestore.nets.bounded_residual.asinh_noise_sigma`), in two steps:

    1. **Significant residual.** ``w * (input - restored)`` is added back, with
       ``w = clip((|L| / sigma_L - ramp_from) / (threshold - ramp_from), 0, 1)``: ``L`` the
       Gaussian (``sigma_px``) mean of the residual, ``sigma_L`` its value for white noise.
       Both signs: light the network took away (``L > 0``, faint stars shrunk towards the sky)
       and light it added (``L < 0``: an image-predicting network overshoots bright stars, and
       the per-pixel clamp lets each wing pixel rise by up to ``k`` sigma). Below ``ramp_from``
       sigma nothing is given back, so the sky's own noise (``|L|`` of a few ``sigma_L``) stays
       removed: a ramp from 0 gave back a fifth of the sky noise at 1 ``sigma_L`` (empty-sky
       noise 0.21-0.27 of the input's on the PSF-robustness cells; 0.06-0.10 with the ramp from
       3 sigma).
       With ``chi2_from`` (None: off) the residual is also given back where it is not noise
       in another way: its local reduced chi-square, the Gaussian (``sigma_px``) mean of
       ``residual^2 / sigma^2``, is about 1 (or less) where a restoration removed only noise,
       and larger where it reshaped a source by more than the noise, even when the change has
       no net flux (a ring raised, the next one lowered). The weight ramps from 0 at
       ``chi2_from`` to 1 at twice it; the larger of the two weights is used. Measured: a
       shot-noise-bounded network that imposed a Moffat-like profile on an undersampled Airy
       PSF (rings filled by +2.5 sigma, first neighbours lowered by 1.7 sigma) went from 2.1 dB
       below the noisy input to 3.1 dB above it with ``chi2_from=1.5``; other PSFs moved by
       -0.01...+0.27 dB.
       With ``stack_snr`` (None: off) what the restoration did to all bright sources alike is
       given back too: the remaining residual in noise units is stacked on the image's peaks
       above that S/N (:func:`stacked_correction`) and its significant mean is added back at
       each of them. A network that broadens undersampled cores by a fraction of a sigma does
       so to every star, which no test of one star can see but the mean over a dozen does
       (PSF-robustness cells, a 24- and a 12-epoch training: +0.1...+1.7 dB at FWHM 1.2-1.6
       px, -0.2...+1.6 dB at 2.5-5 px, the JWST-like cell unchanged).
    2. **Flux on source footprints** (``footprint_px``, None: off). A blind-spot network also
       moves light from a faint source's core into its wings, a change no pixel of which is
       significant, but which added 6-12 % to the aperture flux of faint sources on the JWST-like
       demo frames. On the footprint of every source (where the restoration, smoothed by 1 px, is
       at least one sky sigma above the sky, grown by 3 px), the Gaussian (``footprint_px``)
       low-pass of the remaining residual is added back: the restoration may reshape a source
       only below that scale and cannot change its flux (demo frames: +0.2 % against the noisy
       input). The sky outside footprints is untouched.
    """
    check_give_back(sigma_px, threshold, ramp_from, footprint_px, chi2_from, stack_snr)
    observed = torch.sinh(z.clamp(-20.0, 20.0))
    linear_out = torch.sinh(restored.clamp(-20.0, 20.0))
    residual = observed - linear_out
    # Each pixel's noise variance: the sky's, plus shot noise when photons_per_unit is given.
    variance = torch.full_like(observed, 1.0 / softening**2)
    if photons_per_unit is not None:
        variance = variance + observed.clamp_min(0.0) / photons_per_unit
    # A Gaussian mean of white noise of variance v has variance v / (4 pi sigma_px^2); with a
    # varying v, the squared-kernel (a Gaussian of sigma_px / sqrt 2) average of v.
    spread = gaussian_blur(variance, sigma_px / math.sqrt(2.0)).sqrt()
    sigma_mean = spread / (2.0 * math.sqrt(math.pi) * sigma_px)
    significance = gaussian_blur(residual, sigma_px).abs() / sigma_mean
    weight = ((significance - ramp_from) / (threshold - ramp_from)).clamp(0.0, 1.0)
    if chi2_from is not None:
        chi2 = gaussian_blur(residual**2 / variance, sigma_px)
        weight = torch.maximum(weight, ((chi2 - chi2_from) / chi2_from).clamp(0.0, 1.0))
    linear_out = linear_out + weight * residual
    if stack_snr is not None:
        sigma = variance.sqrt()
        correction = stacked_correction(
            (observed - linear_out) / sigma, linear_out / sigma, stack_snr
        )
        linear_out = linear_out + sigma * correction
    if footprint_px is not None:
        sources = (gaussian_blur(linear_out, 1.0) > 1.0 / softening).to(linear_out.dtype)
        sources = F.max_pool2d(sources, 7, stride=1, padding=3)
        low_pass = gaussian_blur(observed - linear_out, footprint_px)
        linear_out = linear_out + gaussian_blur(sources, 1.0) * low_pass
    return torch.asinh(linear_out)


@dataclass(frozen=True)
class GiveBack:
    """:func:`give_back_removed_sources` with its settings (its keyword arguments, by name),
    checked once: what a network holds when its ``model.net.flux_*`` keys turn the
    evaluation-time give-back on. Networks build it with :meth:`from_keys`.
    """

    softening: float
    sigma_px: float
    threshold: float = 5.0
    ramp_from: float = 3.0
    footprint_px: float | None = 1.0
    photons_per_unit: float | None = None
    chi2_from: float | None = None
    stack_snr: float | None = None

    def __post_init__(self) -> None:
        check_give_back(
            self.sigma_px,
            self.threshold,
            self.ramp_from,
            self.footprint_px,
            self.chi2_from,
            self.stack_snr,
        )
        check_noise_model(self.softening, self.photons_per_unit)

    @classmethod
    def from_keys(
        cls,
        softening: float,
        flux_sigma: float | None,
        flux_threshold: float,
        flux_ramp_from: float,
        flux_footprint: float | None,
        photons_per_unit: float | None = None,
        flux_chi2: float | None = None,
        flux_stack_snr: float | None = None,
    ) -> GiveBack | None:
        """The give-back the ``model.net.flux_*`` keys ask for, or None with ``flux_sigma``
        null (off; the other keys are checked all the same)."""
        if flux_sigma is None:
            check_give_back(
                None, flux_threshold, flux_ramp_from, flux_footprint, flux_chi2, flux_stack_snr
            )
            return None
        return cls(
            softening,
            flux_sigma,
            flux_threshold,
            flux_ramp_from,
            flux_footprint,
            photons_per_unit,
            flux_chi2,
            flux_stack_snr,
        )

    def __call__(self, z: Tensor, restored: Tensor) -> Tensor:
        return give_back_removed_sources(z, restored, **vars(self))
