"""The bounded residual U-Net (``model=supervised``/``bounded``), its noise bound and the noise
model it is given (the normaliser's, :class:`AsinhNoise`)."""

import math

import pytest
import torch

from astrorestore.data.normalization.asinh import AsinhNoise, AsinhNormalizer, asinh_noise_sigma
from astrorestore.errors import UserError
from astrorestore.nets.bounded import BoundedResidualUNet, noise_bound
from astrorestore.nets.res_unet import ResidualUNet

SOFTENING = 3.0


def _net(photons_per_unit=None, softening=SOFTENING, **kwargs) -> BoundedResidualUNet:
    noise = AsinhNoise(softening, photons_per_unit)
    return BoundedResidualUNet(base_channels=8, depth=2, dilations=(1, 2), noise=noise, **kwargs)


def _star_field(peak: float = 5e4, sky: float = 20.0, size: int = 32) -> torch.Tensor:
    """A sky with one bright, narrow star, in electrons (1, 1, size, size)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    return (sky + peak * torch.exp(-r2 / (2 * 0.8**2))).float()[None, None]


def _adversarial(net: BoundedResidualUNet, value: float) -> None:
    """Make the network predict a huge residual everywhere (what a badly trained net could do)."""
    torch.nn.init.normal_(net.noise_head.weight, std=10.0)
    torch.nn.init.constant_(net.noise_head.bias, value)


def test_fresh_network_is_identity_even_on_bright_sources():
    net = _net()
    z = torch.cat([torch.randn(1, 1, 32, 32), torch.asinh(_star_field() / 20.0)])
    torch.testing.assert_close(net(z), z)


@pytest.mark.parametrize("photons_per_unit", [None, 20.0])
@pytest.mark.parametrize("bias", [1e6, -1e6, 3.0])
def test_bound_holds_for_adversarial_predictions(photons_per_unit, bias):
    torch.manual_seed(0)
    k = 4.0
    net = _net(bound_sigmas=k, photons_per_unit=photons_per_unit)
    _adversarial(net, bias)
    z = torch.cat([10 * torch.randn(2, 1, 32, 32), torch.asinh(_star_field() / 20.0)])
    change = (net(z) - z).abs()
    sigma = asinh_noise_sigma(z, SOFTENING, photons_per_unit)
    # float32 rounding of z - delta is ~1e-7 |z|
    rounding = 1e-6 * (1 + z.abs())
    assert torch.all(change <= k * sigma * (1 + 1e-5) + rounding)
    if abs(bias) > 1e3:  # saturated: the network reaches, but never passes, the bound
        assert torch.all(change >= k * sigma * (1 - 1e-5) - rounding)


def test_bright_core_moves_at_most_a_few_sky_sigma_in_electrons():
    # The promise in physical units: whatever the network predicts, a 5e4 e- core changes by
    # <~ k * sigma_sky electrons (gain-free bound), not by the thousands the issue measured.
    torch.manual_seed(1)
    k = 4.0
    net = _net(bound_sigmas=k)
    _adversarial(net, -1e6)
    normalizer = AsinhNormalizer(SOFTENING)
    x = _star_field() + 6.7 * torch.randn(1, 1, 32, 32)
    offset, scale = normalizer.stats(x)
    sigma_sky = scale / SOFTENING
    restored = normalizer.inverse(net(normalizer(x, offset, scale)), offset, scale)
    change = (restored - x).abs()
    # mean-value bound: |dx| <= k sigma_sky exp(k / softening) anywhere, ~k sigma_sky in cores
    assert torch.all(change <= k * sigma_sky * math.exp(k / SOFTENING) * 1.001)
    bright = (x - offset) > 100 * scale
    assert bright.sum() >= 4
    assert torch.all(change[bright] <= 1.02 * k * sigma_sky)
    assert x.max() - restored.max() < 1e-3 * x.max()


def test_sigma_matches_monte_carlo_noise_of_normalised_pixels():
    # Poisson + read noise at several levels, normalised with a fixed offset/scale: the measured
    # std of z agrees with the formula (shot-noise term with G = gain * scale).
    gen = torch.Generator().manual_seed(2)
    gain, read, sky = 2.0, 5.0, 20.0
    sigma_sky = math.sqrt(sky / gain + read**2)
    scale = SOFTENING * sigma_sky
    levels = torch.tensor([0.0, 30.0, 300.0, 3000.0, 30000.0])
    truth = (sky + levels)[:, None].expand(5, 40000)
    noisy = torch.poisson(truth * gain, generator=gen) / gain
    noisy = noisy + read * torch.randn(truth.shape, generator=gen)
    z = torch.asinh((noisy - sky) / scale)
    z_true = torch.asinh((truth[:, :1] - sky) / scale)
    predicted = asinh_noise_sigma(z_true, SOFTENING, gain * scale)[:, 0]
    # First order in the noise: at the sky asinh's curvature shrinks the real std by ~sigma_u^2/2
    # (5 % for softening 3), so the formula is within 7 % everywhere and never below it by more.
    measured = z.std(dim=1)
    torch.testing.assert_close(measured, predicted, rtol=0.07, atol=0.0)
    assert torch.all(measured[2:] / predicted[2:] - 1 < 0.03)
    # without the shot-noise term sigma is a lower bound (equal at the sky)
    lower = asinh_noise_sigma(z_true, SOFTENING, None)[:, 0]
    assert torch.all(lower <= predicted * (1 + 1e-6))
    assert lower[0] == pytest.approx(predicted[0].item())


def test_gradients_reach_every_layer():
    torch.manual_seed(3)
    net = _net()
    z = torch.randn(2, 1, 16, 16)
    target = torch.zeros_like(z)
    torch.nn.functional.l1_loss(net(z), target).backward()
    # identity at init: only the zero head gets a gradient on the first step...
    assert net.noise_head.weight.grad.abs().sum() > 0
    net.zero_grad()
    torch.nn.init.normal_(net.noise_head.weight, std=0.1)
    torch.nn.functional.l1_loss(net(z), target).backward()
    # ...and once it is non-zero, every parameter does (through the tanh bound)
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_same_weights_as_residual_unet():
    # Only forward differs: a default ResidualUNet's weights load into the bounded net.
    plain = ResidualUNet(base_channels=8, depth=2, dilations=(1, 2))
    bounded = _net()
    bounded.load_state_dict(plain.state_dict(), strict=True)
    assert bounded.size_multiple == plain.size_multiple == 4


def test_no_bound_is_exactly_the_plain_residual_unet():
    torch.manual_seed(0)
    plain = ResidualUNet(base_channels=8, depth=2, dilations=(1, 2))
    _adversarial(plain, 3.0)
    unbounded, bounded = _net(bound_sigmas=None), _net()
    unbounded.load_state_dict(plain.state_dict())
    bounded.load_state_dict(plain.state_dict())
    z = torch.asinh(_star_field() / 20.0)
    torch.testing.assert_close(unbounded(z), plain(z))
    # the same weights, bounded, give a different (bounded) output
    assert not torch.allclose(bounded(z), plain(z))


def test_the_bound_is_one_function_of_the_change_in_sigmas():
    z = torch.linspace(-2.0, 9.0, 64)
    sigma = asinh_noise_sigma(z, SOFTENING)
    change = torch.linspace(-100.0, 100.0, 64)
    out = noise_bound(z, change, sigma, 4.0)
    torch.testing.assert_close(out, z - sigma * 4.0 * torch.tanh(change / 4.0))
    assert torch.all((out - z).abs() <= 4.0 * sigma * (1 + 1e-6) + 1e-6 * (1 + z.abs()))


def test_a_bound_needs_the_noise_model():
    with pytest.raises(UserError, match="model.net.bound_sigmas=4.0 needs model.net.noise"):
        BoundedResidualUNet(base_channels=8, depth=2, bound_sigmas=4.0)
    BoundedResidualUNet(base_channels=8, depth=2, bound_sigmas=None)  # unbounded: not needed


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"softening": 0.0}, "model.net.noise.softening"),
        ({"bound_sigmas": -1.0}, "model.net.bound_sigmas"),
        ({"photons_per_unit": 0.0}, "model.net.noise.photons_per_unit"),
        ({"photons_per_unit": float("nan")}, "model.net.noise.photons_per_unit"),
    ],
)
def test_bad_settings_fail_in_one_line(kwargs, key):
    with pytest.raises(UserError) as info:
        _net(**kwargs)
    assert key in str(info.value) and "\n" not in str(info.value)
