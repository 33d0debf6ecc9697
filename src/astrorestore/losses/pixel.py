"""Pixel losses for restoration: L1, L2, 1 - SSIM, image-gradient L1, and their weighted sum.

All inputs are normalised (asinh) images of shape (B, C, H, W). Pixel-wise terms reduce with
``masked_mean``, so a blind-spot or bad-pixel mask applies to them in one place.

Noise weighting (``noise_weighting=True``): in asinh space a star core's noise is ~0.01 against
~0.33 on the sky, so a plain L1/L2 there practically ignores cores, while a PSNR in electrons is
dominated by them. With the option on, the L1 and L2 terms weigh each pixel's error by
``sigma_sky / sigma(pixel)``: the error in units of that pixel's own noise (as a chi^2 does),
scaled so that a sky pixel keeps weight 1 and the SSIM and gradient weights keep their meaning.
Sigma is the noise model of the bounded network (:func:`asinh_noise_sigma`) evaluated at the
target, i.e. the expected noise of the true pixel; that is exact for clean targets, while with a
noisy target (Noise2Noise) the weights correlate with the target's own noise. Terms that
compare neighbourhoods (SSIM, gradients) cannot be restricted to isolated pixels: given a
mask they refuse it, instead of silently using every pixel (with which a blind-spot network
would learn the identity).

Local-flux term (``flux_weight > 0``): L1 in asinh space learns each pixel's conditional
*median*, and where a faint source's wing is uncertain that posterior is skewed towards the sky,
so the median loses light a photometrist wants kept. The term compares Gaussian-weighted local
fluxes (scale ``flux_scale`` px) of prediction and target in *linear* units (``sinh z``), in
units of that local flux's own noise, with a squared error: its optimum is the conditional
*mean* of the local flux, which is unbiased. Only the valid region (no padding) counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn

from astrorestore.data.normalization.asinh import Z_LIMIT as _Z_LIMIT
from astrorestore.data.normalization.asinh import (
    asinh_noise_sigma,
    check_noise_model,
    given_photons,
    photons_setting,
)
from astrorestore.errors import UserError
from astrorestore.filters import gaussian_kernel


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the pixels where ``mask`` is true (all pixels if None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``weights * |pred - target|`` (weights 1 if None) over the mask."""
    error = (pred - target).abs()
    return masked_mean(error if weights is None else weights * error, mask)


def l2_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``(weights * (pred - target))^2`` (weights 1 if None) over the mask."""
    error = pred - target
    return masked_mean((error if weights is None else weights * error).square(), mask)


def noise_weights(
    target: torch.Tensor, softening: float, photons_per_unit: float | torch.Tensor | None
) -> torch.Tensor:
    """``sigma_sky / sigma(target)`` per pixel: 1 on the sky, ~1/noise-fraction in bright cores.

    ``sigma`` is :func:`~astrorestore.data.normalization.asinh.asinh_noise_sigma` (sky, read and,
    with ``photons_per_unit``, shot noise); ``sigma_sky = 1 / softening`` is its value at the
    sky (z = 0). No gradient flows through the weights.
    """
    sigma = asinh_noise_sigma(target.detach(), softening, photons_per_unit)
    return (1.0 / softening) / sigma


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y (shapes H x W-1 and H-1 x W)."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between image gradients: penalises blurred edges and PSF cores."""
    pred_dx, pred_dy = image_gradients(pred)
    target_dx, target_dy = image_gradients(target)
    return 0.5 * ((pred_dx - target_dx).abs().mean() + (pred_dy - target_dy).abs().mean())


def local_flux_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    scale: float,
    softening: float,
    photons_per_unit: float | torch.Tensor | None,
) -> torch.Tensor:
    """Difference of Gaussian-weighted local fluxes, in units of the local flux's noise.

    Both images are taken back to linear normalised units ``u = sinh(z)`` (sky 0, sky noise
    ``1 / softening`` per pixel), blurred with a normalised Gaussian of ``scale`` px without
    padding (valid region only), and the difference is divided by the noise of the target's
    blurred flux: ``sqrt(sum(k^2) * (1/softening^2 + max(u_t, 0) / photons_per_unit))`` (shot
    noise only where ``photons_per_unit`` is given).
    """
    kernel = gaussian_kernel(scale, pred.device).to(pred.dtype)
    channels = pred.shape[1]
    if kernel.numel() > min(pred.shape[-2:]):
        raise UserError(
            f"model.loss.flux_scale={scale} needs patches wider than {kernel.numel()} px: "
            "lower it or raise data.patch_size"
        )

    def blur(image: torch.Tensor) -> torch.Tensor:
        u = torch.sinh(image.clamp(-_Z_LIMIT, _Z_LIMIT))
        out = F.conv2d(u, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)

    flux_pred, flux_target = blur(pred), blur(target.detach())
    variance = torch.full_like(flux_target, 1.0 / softening**2)
    if photons_per_unit is not None:
        variance = variance + flux_target.clamp_min(0.0) / photons_per_unit
    kernel_power = kernel.square().sum() ** 2  # sum over the 2-D kernel k(x) k(y) of k^2
    return (flux_pred - flux_target) / torch.sqrt(kernel_power * variance)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """1 - SSIM, with the data range taken per batch from the target (normalised units)."""
    data_range = (target.amax() - target.amin()).clamp_min(1e-6).item()
    # SSIM's constants are defined relative to a non-negative range: shift both images alike.
    low = target.amin()
    value = ssim(
        pred - low, target - low, data_range=data_range, size_average=True, win_size=win_size
    )
    return 1.0 - value


class RestorationLoss(nn.Module):
    """``l1·L1 + l2·L2 + ssim·(1 - SSIM) + gradient·gradient-L1 + flux·local-flux²`` (weights
    from config).

    ``forward`` returns the total and a dict of the individual terms for logging. L1 and L2
    honour a mask; SSIM, the gradient and the local-flux terms refuse one (see the module
    docstring).

    Args:
        noise_weighting: weigh the L1 and L2 errors by ``sigma_sky / sigma(pixel)`` (see the
            module docstring), so that star cores count by their information.
        softening: the normaliser's softening (needed by ``noise_weighting``).
        photons_per_unit: ``gain * normaliser scale`` for the shot noise in sigma (as in
            :class:`~astrorestore.data.normalization.asinh.AsinhNoise`); ``None`` = sky
            noise only, i.e. an error in electrons (cores then weigh ~``u`` times a sky pixel);
            ``"frame"``: each image's own, given with its batch.
            The local-flux term uses the same noise model.
        flux_weight: weight of the squared local-flux error (0 = off; see the module
            docstring); needs ``softening``.
        flux_scale: the local flux's Gaussian scale in pixels.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        ssim_weight: float = 0.2,
        gradient_weight: float = 0.1,
        ssim_window: int = 7,
        l2_weight: float = 0.0,
        noise_weighting: bool = False,
        softening: float | None = None,
        photons_per_unit: float | str | None = None,
        flux_weight: float = 0.0,
        flux_scale: float = 1.5,
    ) -> None:
        super().__init__()
        for name, value in (
            ("l1_weight", l1_weight),
            ("l2_weight", l2_weight),
            ("ssim_weight", ssim_weight),
            ("gradient_weight", gradient_weight),
            ("flux_weight", flux_weight),
        ):
            if value < 0:
                raise UserError(f"model.loss.{name}={value} is invalid: use a value >= 0")
        if l1_weight + l2_weight + ssim_weight + gradient_weight + flux_weight <= 0:
            raise UserError("model.loss has every weight at 0: set at least one of them > 0")
        self.l1_weight = l1_weight
        self.l2_weight = l2_weight
        self.ssim_weight = ssim_weight
        self.gradient_weight = gradient_weight
        self.ssim_window = ssim_window
        for option, enabled in (
            ("noise_weighting=true", noise_weighting),
            ("flux_weight>0", flux_weight > 0),
        ):
            if not enabled:
                continue
            if softening is None:
                raise UserError(
                    f"model.loss.{option} needs model.loss.softening: set it to the "
                    "normaliser's, ${data.normalizer.softening}"
                )
            check_noise_model(softening, photons_per_unit, group="model.loss")
        if flux_weight > 0 and not (math.isfinite(flux_scale) and flux_scale > 0):
            raise UserError(
                f"model.loss.flux_scale={flux_scale!r} is invalid: use a scale in pixels > 0"
            )
        self.noise_weighting = bool(noise_weighting)
        self.flux_weight = flux_weight
        self.flux_scale = float(flux_scale)
        self.softening = None if softening is None else float(softening)
        self.photons_per_unit = photons_setting(photons_per_unit)

    @property
    def supports_mask(self) -> bool:
        """True when every active term can be restricted to a mask."""
        return self.ssim_weight == 0 and self.gradient_weight == 0 and self.flux_weight == 0

    def check_mask_support(self) -> None:
        if not self.supports_mask:
            raise UserError(
                "this training masks the loss (blind spots or bad pixels), but the SSIM, "
                "gradient and local-flux terms compare neighbourhoods and cannot be masked; set "
                "model.loss.ssim_weight=0 model.loss.gradient_weight=0 model.loss.flux_weight=0 "
                "(e.g. loss=l1)"
            )

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # SSIM's Gaussian window is float32-sensitive; keep it out of bf16 autocast.
        pred, target = pred.float(), target.float()
        if mask is not None:
            self.check_mask_support()
        weights = None
        photons = None
        if self.noise_weighting or self.flux_weight > 0:
            # photons_per_unit=frame: each image's own, given with the batch (frame_noise).
            photons = given_photons(self.photons_per_unit, "model.loss")
        if self.noise_weighting and self.l1_weight + self.l2_weight > 0:
            weights = noise_weights(target, self.softening, photons)
        weighted = {}
        if self.l1_weight > 0:
            weighted["l1"] = (self.l1_weight, l1_loss(pred, target, mask, weights))
        if self.l2_weight > 0:
            weighted["l2"] = (self.l2_weight, l2_loss(pred, target, mask, weights))
        if self.ssim_weight > 0:
            weighted["ssim"] = (self.ssim_weight, ssim_loss(pred, target, self.ssim_window))
        if self.gradient_weight > 0:
            weighted["gradient"] = (self.gradient_weight, gradient_loss(pred, target))
        if self.flux_weight > 0:
            error = local_flux_error(pred, target, self.flux_scale, self.softening, photons)
            weighted["flux"] = (self.flux_weight, error.square().mean())
        total = sum(weight * value for weight, value in weighted.values())
        return total, {name: value for name, (_, value) in weighted.items()}
