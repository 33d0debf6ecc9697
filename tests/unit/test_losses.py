import math

import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.losses.pixel import (
    RestorationLoss,
    gradient_loss,
    l1_loss,
    masked_mean,
    noise_weights,
    ssim_loss,
)


def test_l1_known_value():
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.full((1, 1, 4, 4), 2.0)
    assert l1_loss(pred, target).item() == pytest.approx(2.0)


def test_masked_mean_uses_only_masked_pixels():
    values = torch.tensor([[1.0, 3.0], [5.0, 100.0]]).view(1, 1, 2, 2)
    mask = torch.tensor([[1, 1], [1, 0]]).view(1, 1, 2, 2).bool()
    assert masked_mean(values, mask).item() == pytest.approx(3.0)


def test_gradient_loss_known_value():
    # target: horizontal ramp (dx = 1, dy = 0); pred: flat (dx = dy = 0) -> 0.5 * (1 + 0)
    target = torch.arange(5.0).repeat(5, 1).view(1, 1, 5, 5)
    pred = torch.zeros_like(target)
    assert gradient_loss(pred, target).item() == pytest.approx(0.5)
    assert gradient_loss(target + 7.0, target).item() == pytest.approx(0.0)


def test_ssim_loss_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(0)
    target = torch.randn(2, 1, 32, 32)
    assert ssim_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_loss(target + 0.5 * torch.randn_like(target), target).item() > 0.1


def test_restoration_loss_weights_combine_terms():
    torch.manual_seed(1)
    target = torch.randn(2, 1, 32, 32)
    pred = target + 0.3 * torch.randn_like(target)
    loss = RestorationLoss(l1_weight=1.0, ssim_weight=0.5, gradient_weight=2.0)
    total, terms = loss(pred, target)
    expected = terms["l1"] + 0.5 * terms["ssim"] + 2.0 * terms["gradient"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    l1_only, l1_terms = RestorationLoss(ssim_weight=0.0, gradient_weight=0.0)(pred, target)
    assert set(l1_terms) == {"l1"}
    assert l1_only.item() == pytest.approx(terms["l1"].item())


def test_negative_weight_rejected():
    with pytest.raises(UserError, match="ssim_weight"):
        RestorationLoss(ssim_weight=-1.0)


def test_mask_applies_to_every_term_of_the_full_loss():
    pred, target = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    target[0, 0, 4, 4] = 1.0  # the only masked pixel differs by 1
    pred[0, 0, 0, :] = 5.0  # unmasked pixels differ wildly
    mask = torch.zeros_like(pred, dtype=torch.bool)
    mask[0, 0, 4, 4] = True
    loss = RestorationLoss(l1_weight=1.0, l2_weight=0.5, ssim_weight=0.0, gradient_weight=0.0)
    total, terms = loss(pred, target, mask)
    assert terms["l1"].item() == pytest.approx(1.0) and terms["l2"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(1.5)


def test_terms_that_cannot_be_masked_refuse_a_mask():
    pred, target = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    mask = torch.ones_like(pred, dtype=torch.bool)
    with pytest.raises(UserError, match="ssim_weight=0"):
        RestorationLoss(ssim_weight=0.2, gradient_weight=0.0)(pred, target, mask)
    with pytest.raises(UserError, match="gradient_weight=0"):
        RestorationLoss(ssim_weight=0.0, gradient_weight=0.1)(pred, target, mask)
    assert not RestorationLoss().supports_mask and RestorationLoss(0.0 + 1, 0, 0).supports_mask


def test_noise_weights_are_sky_sigma_over_pixel_sigma():
    # softening 1, G = 1: at u = sinh(z) = 3 the noise in u is sqrt(1 + 3) = 2 and in z
    # 2 / cosh(z) = 2 / sqrt(10); the sky (z = 0) has sigma 1, so its weight is 1.
    z = torch.tensor([0.0, math.asinh(3.0)]).view(1, 1, 1, 2)
    weights = noise_weights(z, softening=1.0, photons_per_unit=1.0)
    assert weights.flatten().tolist() == pytest.approx([1.0, math.sqrt(10.0) / 2.0], rel=1e-6)
    # without shot noise, sigma_z = sigma_sky / cosh(z): the error is measured in electrons
    sky_only = noise_weights(z, softening=3.0, photons_per_unit=None)
    assert sky_only.flatten().tolist() == pytest.approx([1.0, math.sqrt(10.0)], rel=1e-6)


def test_noise_weighted_loss_counts_a_pixel_with_larger_sigma_less():
    # Same asinh error 0.1 on a sky pixel (sigma_z = 1/3) and on a bright core (u = 400,
    # sigma_z = sqrt(1/9 + 400/16) / cosh(z) ~ 0.0125): the core's error is ~27 noise sigma.
    target = torch.zeros(1, 1, 1, 2)
    target[..., 1] = math.asinh(400.0)
    loss = RestorationLoss(
        l1_weight=1.0,
        l2_weight=1.0,
        ssim_weight=0.0,
        gradient_weight=0.0,
        noise_weighting=True,
        softening=3.0,
        photons_per_unit=16.0,
    )
    core_weight = (1 / 3) * math.cosh(math.asinh(400.0)) / math.sqrt(1 / 9 + 400 / 16)
    for pixel, weight in ((0, 1.0), (1, core_weight)):
        pred = target.clone()
        pred[..., pixel] += 0.1
        _, terms = loss(pred, target)
        assert terms["l1"].item() == pytest.approx(0.1 * weight / 2, rel=1e-5)
        assert terms["l2"].item() == pytest.approx((0.1 * weight) ** 2 / 2, rel=1e-5)
    plain = RestorationLoss(l1_weight=1.0, ssim_weight=0.0, gradient_weight=0.0)
    assert plain(pred, target)[1]["l1"].item() == pytest.approx(0.05, rel=1e-5)


def test_noise_weighted_loss_keeps_the_mask():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 1] = math.asinh(3.0)  # the masked pixel: weight sqrt(10) / 2 (see above)
    pred = target + 5.0  # every pixel is off by 5; only the masked one may count
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[0, 0, 1, 1] = True
    loss = RestorationLoss(
        l1_weight=1.0,
        ssim_weight=0.0,
        gradient_weight=0.0,
        noise_weighting=True,
        softening=1.0,
        photons_per_unit=1.0,
    )
    assert loss(pred, target, mask)[0].item() == pytest.approx(5.0 * math.sqrt(10) / 2, rel=1e-5)


def test_noise_weighting_bad_settings_are_one_line_user_errors():
    with pytest.raises(UserError, match="model.loss.softening") as missing:
        RestorationLoss(noise_weighting=True)
    with pytest.raises(UserError, match="model.loss.photons_per_unit=0") as bad:
        RestorationLoss(noise_weighting=True, softening=3.0, photons_per_unit=0.0)
    assert "\n" not in str(missing.value) + str(bad.value)


def test_local_flux_error_is_a_flux_difference_in_units_of_its_noise():
    # a uniform excess of d (linear units) on the sky: each blurred value is d, whose noise is
    # sqrt(sum k^2) / softening, so the error is d * softening / sqrt(sum k^2) everywhere
    from astrorestore.filters import gaussian_kernel
    from astrorestore.losses.pixel import local_flux_error

    softening, d = 3.0, 0.2
    target = torch.zeros(1, 1, 24, 24)
    pred = torch.asinh(torch.full_like(target, d))
    error = local_flux_error(pred, target, 1.5, softening, None)
    kernel = gaussian_kernel(1.5)
    assert error.shape[-1] == 24 - kernel.numel() + 1  # valid region only, no padding
    expected = d * softening / float(kernel.square().sum())
    assert torch.allclose(error, torch.full_like(error, expected), rtol=1e-5)
    # shot noise makes a bright target's local flux noisier, so the same excess counts less
    bright = torch.asinh(torch.full_like(target, 50.0))
    brighter = torch.asinh(torch.full_like(target, 50.0 + d))
    assert local_flux_error(brighter, bright, 1.5, softening, 16.0).abs().max() < expected / 2


def test_flux_term_penalises_lost_light_more_than_light_moved_within_its_scale():
    softening = 3.0
    # the flux term alone (l1, ssim and gradient weights 0)
    loss = RestorationLoss(
        0.0, 0.0, 0.0, flux_weight=1.0, softening=softening, photons_per_unit=16.0
    )
    star = torch.zeros(1, 1, 32, 32)
    star[..., 16, 16] = 4.0
    star[..., 16, 15] = star[..., 16, 17] = star[..., 15, 16] = star[..., 17, 16] = 2.0
    target = torch.asinh(star)
    assert loss(target, target)[0].item() == pytest.approx(0.0, abs=1e-10)
    # the same light with its peak pixel shared with the neighbours vs 20 % of it gone
    spread = star.clone()
    spread[..., 16, 16] = 2.4
    spread[..., 16, 15] += 0.4
    spread[..., 16, 17] += 0.4
    spread[..., 15, 16] += 0.4
    spread[..., 17, 16] += 0.4
    assert spread.sum().item() == pytest.approx(star.sum().item())
    moved, lost = loss(torch.asinh(spread), target)[0], loss(torch.asinh(0.8 * star), target)[0]
    assert moved.item() < 0.3 * lost.item()


def test_flux_term_needs_softening_and_refuses_masks():
    with pytest.raises(UserError, match="flux_weight>0 needs model.loss.softening"):
        RestorationLoss(flux_weight=0.1)
    with pytest.raises(UserError, match="flux_scale"):
        RestorationLoss(flux_weight=0.1, softening=3.0, flux_scale=0.0)
    loss = RestorationLoss(ssim_weight=0.0, gradient_weight=0.0, flux_weight=0.1, softening=3.0)
    x = torch.zeros(1, 1, 32, 32)
    with pytest.raises(UserError, match="flux_weight=0"):
        loss(x, x, torch.ones_like(x, dtype=torch.bool))
    with pytest.raises(UserError, match="data.patch_size"):
        RestorationLoss(flux_weight=0.1, softening=3.0, flux_scale=4.0)(
            x[..., :16, :16], x[..., :16, :16]
        )
