"""N2V U-Net: the N2V2 switches are wired as named, the net is a plain image-to-image map, and
the clamped output keeps the blind spot and the bound."""

import pytest
import torch
from torch import nn

from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.data.pairings.blind_spot import mask_frames
from astrorestore.errors import UserError
from astrorestore.nets.n2v_unet import MaxBlurPool2d, N2VUNet


def test_output_keeps_the_input_shape_for_both_variants():
    x = torch.randn(2, 1, 32, 32)
    for blur_pool, top_skip in ((False, True), (True, False)):
        net = N2VUNet(base_channels=4, depth=2, blur_pool=blur_pool, top_skip=top_skip)
        assert net(x).shape == x.shape
    assert N2VUNet(depth=3).size_multiple == 8
    with pytest.raises(ValueError, match="multiple of 4"):
        N2VUNet(base_channels=4, depth=2)(torch.randn(1, 1, 30, 32))


def test_blur_pool_is_used_only_when_asked():
    plain = N2VUNet(base_channels=4, depth=2)
    blurred = N2VUNet(base_channels=4, depth=2, blur_pool=True)
    assert all(isinstance(p, nn.MaxPool2d) for p in plain.pools)
    assert all(isinstance(p, MaxBlurPool2d) for p in blurred.pools)


def test_max_blur_pool_halves_keeps_levels_and_spreads_a_point():
    pool = MaxBlurPool2d(1)
    flat = torch.full((1, 1, 16, 16), 3.0)
    assert torch.allclose(pool(flat), torch.full((1, 1, 8, 8), 3.0))
    point = torch.zeros(1, 1, 16, 16)
    point[0, 0, 8, 8] = 1.0
    # A max-pool would put the point in one output pixel; the blur spreads it (anti-aliasing).
    assert (nn.MaxPool2d(2)(point) > 0).sum() == 1
    assert (pool(point) > 0).sum() > 1


def test_top_skip_off_removes_only_the_full_resolution_concatenation():
    with_skip = N2VUNet(base_channels=4, depth=2, top_skip=True)
    without = N2VUNet(base_channels=4, depth=2, top_skip=False)
    first_conv = [d.body[0].in_channels for d in without.decoders]
    assert first_conv == [2 * 8, 4]  # deeper level keeps its skip; the top one has none
    assert [d.body[0].in_channels for d in with_skip.decoders] == [2 * 8, 2 * 4]


def test_residual_outputs_start_as_the_identity():
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(N2VUNet(base_channels=4, depth=2, output="residual")(x), x)
    net = N2VUNet(
        base_channels=4, depth=2, output="capped_residual", bound_sigmas=5.0, noise=AsinhNoise(3.0)
    )
    assert torch.allclose(net(x), x, atol=1e-5)


def test_bottleneck_dilations_are_optional():
    net = N2VUNet(base_channels=4, depth=2, dilations=[1, 2])
    assert not isinstance(net.bottleneck, nn.Identity)
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize(
    ("key", "kwargs"), [("depth", {"depth": 0}), ("base_channels", {"base_channels": 0})]
)
def test_bad_sizes_fail_in_one_line(key, kwargs):
    with pytest.raises(UserError, match=f"model.net.{key}"):
        N2VUNet(**kwargs)


def _wild(net: N2VUNet) -> N2VUNet:
    torch.manual_seed(0)
    torch.nn.init.normal_(net.head.weight, std=10.0)
    torch.nn.init.normal_(net.head.bias, std=10.0)
    return net


def test_capped_residual_moves_no_pixel_more_than_the_cap_in_electrons():
    net = _wild(
        N2VUNet(
            base_channels=4,
            depth=1,
            output="capped_residual",
            bound_sigmas=3.0,
            noise=AsinhNoise(3.0),
        )
    )
    x = torch.linspace(-1.0, 9.0, 256).reshape(1, 1, 16, 16)  # sky to a bright core (asinh)
    out = net(x)
    # Back in units of the normaliser scale (softening 3 sky sigmas): at most 3/3 = 1.
    moved = (torch.sinh(out) - torch.sinh(x)).abs()
    assert moved.max() <= 1.0 + 1e-3 * torch.sinh(x).abs().max()
    assert (out - x).abs()[x.abs() < 0.5].max() > 0.5  # near the sky it can still move


@pytest.mark.parametrize("n2v2", [False, True])
def test_clamped_output_stays_within_the_bound_of_the_input(n2v2):
    net = _wild(
        N2VUNet(
            base_channels=4,
            depth=1,
            blur_pool=n2v2,
            top_skip=not n2v2,
            output="clamped",
            bound_sigmas=5.0,
            noise=AsinhNoise(3.0),
        )
    )
    x = torch.linspace(-1.0, 9.0, 256).reshape(1, 1, 16, 16)
    out = net(x)
    moved = (torch.sinh(out) - torch.sinh(x)).abs()  # in normaliser scales (3 sky sigmas)
    assert moved[x > 4].max() <= 1.05 * 5.0 / 3.0  # ~5 sky sigmas at bright cores
    assert moved.max() <= 2.0 * 5.0 / 3.0  # looser near the sky, still bounded
    assert moved[x.abs() < 0.5].max() > 0.5  # and the sky is free to move
    # Even without a top skip (N2V2), a core follows its own pixel: the clamp sees the input.
    spiked = x.clone()
    spiked[0, 0, 8, 8] += 3.0
    assert net(spiked)[0, 0, 8, 8] - out[0, 0, 8, 8] > 2.5


def test_clamped_output_at_a_hidden_pixel_ignores_its_true_value():
    net = _wild(
        N2VUNet(base_channels=4, depth=1, output="clamped", bound_sigmas=5.0, noise=AsinhNoise())
    )
    noisy = torch.randn(1, 1, 32, 32)
    masked, loss_mask = mask_frames(noisy, 0.01, rng=torch.Generator().manual_seed(1))
    # Another noise draw at the hidden pixels only: the same mask gives the same training input,
    # so the prediction the loss compares with the target cannot have seen the target.
    other = torch.where(loss_mask, noisy + 100.0, noisy)
    masked_other, _ = mask_frames(other, 0.01, rng=torch.Generator().manual_seed(1))
    assert torch.equal(masked, masked_other)
    assert torch.equal(net(masked)[loss_mask], net(masked_other)[loss_mask])
    # At inference the real pixel is there, and a huge value pulls the output with it.
    assert (net(other)[loss_mask] - net(noisy)[loss_mask]).min() > 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"output": "clamped"},
        {"output": "image", "bound_sigmas": 5.0},
        {"output": "sharpened"},
        {"output": "clamped", "bound_sigmas": -1.0},
        {"output": "clamped", "bound_sigmas": 5.0},  # no noise model
        {"output": "bounded_residual", "bound_sigmas": 5.0},  # renamed: capped_residual
    ],
)
def test_output_and_bound_must_fit_together(kwargs):
    with pytest.raises(UserError, match="model.net.") as info:
        N2VUNet(**kwargs)
    assert "\n" not in str(info.value)
