"""Give back what a restoration took from, or added to, the sources: the ``give_back`` stage.

A bound per pixel (:mod:`astrorestore.nets.bounded`) cannot protect a faint star: ten pixels
each a few sigma low is most of its flux, and a blind-spot network, which never sees a pixel's
own value, shrinks faint stars towards the sky (measured: the clamped Noise2Void output lost
3-23 % of the aperture flux of S/N > 10 stars), or spreads their light into the wings. The
residual ``input - output`` of a good denoiser is white noise, so where its local mean is a
significant detection of either sign the residual is given back, and on each source's footprint
the residual's low-pass is given back too, so that the restoration may reshape a source only on
the finest scales and never change its flux.

A stage in the normalised space, applied to each restored tile after the network (by the
:class:`~astrorestore.inference.restorer.Restorer` and by validation alike; training sees the
network's own output): ``stage(observed, restored, noise)`` with ``noise`` the normaliser's
:class:`~astrorestore.data.normalization.asinh.AsinhNoise`. Its settings are the
``postprocess.give_back.*`` keys (:class:`GiveBack`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from astrorestore.data.normalization.asinh import Z_LIMIT, AsinhNoise
from astrorestore.errors import UserError

# Stacked give-back (step 3 of give_back_removed_sources): stamp radius (px), the fewest peaks a
# tile must have, and the significance (standard errors) a pixel of the mean stamp needs.
_STACK_RADIUS = 3
_STACK_MIN = 8
_STACK_SIGNIFICANCE = 2.0


def _blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a ``(B, C, H, W)`` tensor, reflecting at the edges.

    Not :func:`astrorestore.filters.gaussian_blur`: this one reaches 4 sigma (the noise levels
    ``sigma_mean`` below assume the whole kernel) and replicates the edge of a tile narrower
    than the kernel; the stage's measured figures were made with it."""
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


@dataclass(frozen=True)
class GiveBack:
    """The give-back stage and its settings (the ``postprocess.give_back.*`` keys), checked
    once, here.

    Args:
        detect_scale: width (px) of the Gaussian mean that tests the residual (1-2).
        threshold: significance (noise sigmas of that mean) from which all of the residual is
            given back.
        ramp_from: significance below which none of it is (the sky's own noise stays removed).
        footprint_scale: scale (px) below which the restoration may reshape a source; the
            residual's low-pass above it is given back on source footprints (None: off).
        chi2_from: local reduced chi-square of the residual from which it is given back too
            (about 1.5; white noise reads 1; None: off).
        stack_snr: the residual stacked on the tile's peaks above this S/N (at least 8) is
            given back at each of them (None: off).
    """

    detect_scale: float = 1.5
    threshold: float = 5.0
    ramp_from: float = 3.0
    footprint_scale: float | None = 1.0
    chi2_from: float | None = None
    stack_snr: float | None = None

    def __post_init__(self) -> None:
        key = "postprocess.give_back"
        for name, value in vars(self).items():
            optional = name in ("footprint_scale", "chi2_from", "stack_snr")
            if (value is None and not optional) or (
                value is not None
                and (isinstance(value, bool) or not isinstance(value, int | float))
            ):
                raise UserError(
                    f"{key}.{name}={value!r} is invalid: use a number"
                    + (" or null (off)" if optional else "")
                )
        if not (math.isfinite(self.detect_scale) and self.detect_scale > 0):
            raise UserError(
                f"{key}.detect_scale={self.detect_scale!r} is invalid: use a width in pixels > 0 "
                "(1-2), or postprocess=none for no give-back"
            )
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise UserError(f"{key}.threshold={self.threshold!r} is invalid: use a value > 0 (3-5)")
        if not (math.isfinite(self.ramp_from) and 0 <= self.ramp_from < self.threshold):
            raise UserError(
                f"{key}.ramp_from={self.ramp_from!r} is invalid: use 0 <= value < "
                f"{key}.threshold ({self.threshold})"
            )
        scale = self.footprint_scale
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise UserError(
                f"{key}.footprint_scale={scale!r} is invalid: use a scale in pixels > 0 "
                "(about 1) or null"
            )
        chi2 = self.chi2_from
        if chi2 is not None and not (math.isfinite(chi2) and chi2 > 1):
            raise UserError(
                f"{key}.chi2_from={chi2!r} is invalid: use a reduced chi-square > 1 "
                "(about 1.5; white noise reads 1) or null"
            )
        snr = self.stack_snr
        if snr is not None and not (math.isfinite(snr) and snr > 0):
            raise UserError(
                f"{key}.stack_snr={snr!r} is invalid: use a signal-to-noise > 0 (about 20) or null"
            )

    def __call__(self, observed: Tensor, restored: Tensor, noise: AsinhNoise) -> Tensor:
        """``restored`` (normalised, the network's output for ``observed``) with what it took
        from, or added to, the sources given back. See :func:`give_back_removed_sources`."""
        return give_back_removed_sources(observed, restored, noise, **vars(self))


def give_back_removed_sources(
    z: Tensor,
    restored: Tensor,
    noise: AsinhNoise,
    detect_scale: float = 1.5,
    threshold: float = 5.0,
    ramp_from: float = 3.0,
    footprint_scale: float | None = 1.0,
    chi2_from: float | None = None,
    stack_snr: float | None = None,
) -> Tensor:
    """Return to ``restored`` the light a restoration took from, or added to, the sources.

    Works in the linear units of the asinh normalisation (sky noise ``1 / softening``; with
    ``photons_per_unit`` the noise of each pixel adds its shot noise, ``observed / G``: the
    normaliser's :class:`~astrorestore.data.normalization.asinh.AsinhNoise`), in two steps:

    1. **Significant residual.** ``w * (input - restored)`` is added back, with
       ``w = clip((|L| / sigma_L - ramp_from) / (threshold - ramp_from), 0, 1)``: ``L`` the
       Gaussian (``detect_scale``) mean of the residual, ``sigma_L`` its value for white noise.
       Both signs: light the network took away (``L > 0``, faint stars shrunk towards the sky)
       and light it added (``L < 0``: an image-predicting network overshoots bright stars, and
       the per-pixel clamp lets each wing pixel rise by up to ``k`` sigma). Below ``ramp_from``
       sigma nothing is given back, so the sky's own noise (``|L|`` of a few ``sigma_L``) stays
       removed: a ramp from 0 gave back a fifth of the sky noise at 1 ``sigma_L`` (empty-sky
       noise 0.21-0.27 of the input's on the PSF-robustness cells; 0.06-0.10 with the ramp from
       3 sigma).
       With ``chi2_from`` (None: off) the residual is also given back where it is not noise
       in another way: its local reduced chi-square, the Gaussian (``detect_scale``) mean of
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
    2. **Flux on source footprints** (``footprint_scale``, None: off). A blind-spot network also
       moves light from a faint source's core into its wings, a change no pixel of which is
       significant, but which added 6-12 % to the aperture flux of faint sources on the JWST-like
       demo frames. On the footprint of every source (where the restoration, smoothed by 1 px, is
       at least one sky sigma above the sky, grown by 3 px), the Gaussian (``footprint_scale``)
       low-pass of the remaining residual is added back: the restoration may reshape a source
       only below that scale and cannot change its flux (demo frames: +0.2 % against the noisy
       input). The sky outside footprints is untouched.
    """
    observed = torch.sinh(z.clamp(-Z_LIMIT, Z_LIMIT))
    linear_out = torch.sinh(restored.clamp(-Z_LIMIT, Z_LIMIT))
    residual = observed - linear_out
    # Each pixel's noise variance: the sky's, plus shot noise when photons_per_unit is given.
    variance = noise.linear_variance(observed)
    # A Gaussian mean of white noise of variance v has variance v / (4 pi s^2); with a varying
    # v, the squared-kernel (a Gaussian of s / sqrt 2) average of v.
    spread = _blur(variance, detect_scale / math.sqrt(2.0)).sqrt()
    sigma_mean = spread / (2.0 * math.sqrt(math.pi) * detect_scale)
    significance = _blur(residual, detect_scale).abs() / sigma_mean
    weight = ((significance - ramp_from) / (threshold - ramp_from)).clamp(0.0, 1.0)
    if chi2_from is not None:
        chi2 = _blur(residual**2 / variance, detect_scale)
        weight = torch.maximum(weight, ((chi2 - chi2_from) / chi2_from).clamp(0.0, 1.0))
    linear_out = linear_out + weight * residual
    if stack_snr is not None:
        sigma = variance.sqrt()
        correction = stacked_correction(
            (observed - linear_out) / sigma, linear_out / sigma, stack_snr
        )
        linear_out = linear_out + sigma * correction
    if footprint_scale is not None:
        sources = (_blur(linear_out, 1.0) > 1.0 / noise.softening).to(linear_out.dtype)
        sources = F.max_pool2d(sources, 7, stride=1, padding=3)
        low_pass = _blur(observed - linear_out, footprint_scale)
        linear_out = linear_out + _blur(sources, 1.0) * low_pass
    return torch.asinh(linear_out)
