"""N2V U-Net: the N2V2 switches are wired as named, and the net is a plain image-to-image map."""

import pytest
import torch
from torch import nn

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


def test_residual_starts_as_the_identity():
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(N2VUNet(base_channels=4, depth=2, residual=True)(x), x)


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


def test_bounded_residual_moves_no_pixel_more_than_the_cap_in_electrons():
    torch.manual_seed(0)
    net = N2VUNet(base_channels=4, depth=1, residual=True, residual_bound=1.0)
    torch.nn.init.normal_(net.head.weight, std=10.0)  # a wild correction
    x = torch.linspace(-1.0, 9.0, 256).reshape(1, 1, 16, 16)  # sky to a bright core (asinh)
    out = net(x)
    # Back in electrons (scale 1): |sinh(out) - sinh(x)| <= bound, at every brightness.
    moved = (torch.sinh(out) - torch.sinh(x)).abs()
    assert moved.max() <= 1.0 + 1e-3 * torch.sinh(x).abs().max()
    assert (out - x).abs()[x.abs() < 0.5].max() > 0.5  # near the sky it can still move


def test_residual_bound_needs_residual():
    with pytest.raises(UserError, match="residual=true"):
        N2VUNet(residual_bound=1.0)
