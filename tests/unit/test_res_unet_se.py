"""ResUNet-SE: shapes, identity start, the selectable activation and its parts."""

import pytest
import torch
from torch import nn

from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.errors import UserError
from astrorestore.nets.res_unet_se import (
    AttentionGate,
    PixelShuffleUp,
    ResUNetSE,
    SqueezeExcitation,
)


def test_shape_size_multiple_and_identity_at_start():
    net = ResUNetSE(base_channels=4, depth=2)
    x = torch.randn(2, 1, 32, 32)
    assert net.size_multiple == 4
    assert torch.equal(net(x), x)  # zero noise head: starts as the identity
    with pytest.raises(ValueError, match="multiple of 4"):
        net(torch.randn(1, 1, 30, 32))


@pytest.mark.parametrize(
    ("name", "kind"),
    [("relu", nn.ReLU), ("elu", nn.ELU), ("leaky_relu", nn.LeakyReLU), ("silu", nn.SiLU)],
)
def test_activation_is_the_one_asked_for(name, kind):
    net = ResUNetSE(base_channels=4, depth=1, activation=name)
    kinds = {type(m) for m in net.modules()} & {nn.ReLU, nn.ELU, nn.LeakyReLU, nn.SiLU}
    assert kinds == {kind}


def test_unknown_activation_fails_in_one_line():
    with pytest.raises(UserError) as info:
        ResUNetSE(activation="gelu")
    assert "model.net.activation" in str(info.value) and "\n" not in str(info.value)


def test_pixel_shuffle_upsampling_and_attention_gates_are_wired():
    net = ResUNetSE(base_channels=4, depth=2)
    assert all(isinstance(u, PixelShuffleUp) for u in net.ups)
    assert any(isinstance(m, nn.PixelShuffle) for m in net.modules())
    assert all(isinstance(g, AttentionGate) for g in net.gates)
    plain = ResUNetSE(base_channels=4, depth=2, attention=False)
    assert not any(isinstance(m, AttentionGate) for m in plain.modules())
    assert sum(isinstance(m, SqueezeExcitation) for m in net.modules()) >= 5


def test_attention_gate_only_scales_the_skip_between_zero_and_one():
    gate = AttentionGate(4, 4, "relu")
    skip = torch.rand(1, 4, 8, 8) + 1.0
    out = gate(torch.randn(1, 4, 8, 8), skip)
    ratio = out / skip
    assert (ratio > 0).all() and (ratio < 1).all()
    # One weight per pixel, shared by all channels.
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))


def test_squeeze_excitation_weights_channels_per_image():
    se = SqueezeExcitation(8, 2, "relu")
    x = torch.rand(2, 8, 4, 4)
    weights = se(x) / x
    assert torch.allclose(weights, weights[..., :1, :1].expand_as(weights), atol=1e-6)
    assert (weights > 0).all() and (weights < 1).all()


def test_learns_a_denoising_step():
    torch.manual_seed(0)
    net = ResUNetSE(base_channels=4, depth=1, dilations=[1])
    clean = torch.zeros(4, 1, 16, 16)
    noisy = clean + 0.5 * torch.randn_like(clean)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    before = (net(noisy) - clean).square().mean().item()
    for _ in range(30):
        optimizer.zero_grad()
        (net(noisy) - clean).square().mean().backward()
        optimizer.step()
    assert (net(noisy) - clean).square().mean().item() < 0.5 * before


def test_bounded_noise_prediction_starts_as_identity_and_stays_within_k_sigma():
    from astrorestore.data.normalization.asinh import asinh_noise_sigma

    net = ResUNetSE(base_channels=4, depth=1, bound_sigmas=4.0, noise=AsinhNoise(3.0))
    x = torch.linspace(-1.0, 9.0, 256).reshape(1, 1, 16, 16)
    assert torch.equal(net(x), x)
    torch.manual_seed(0)
    nn.init.normal_(net.noise_head.weight, std=10.0)
    nn.init.normal_(net.noise_head.bias, std=10.0)
    moved = (net(x) - x).abs()
    sigma = asinh_noise_sigma(x, 3.0)
    assert (moved <= 4.0 * sigma + 1e-6).all()
    assert (moved > 2.0 * sigma).float().mean() > 0.5  # the bound is reached, not a no-op
    unbounded = ResUNetSE(base_channels=4, depth=1)
    unbounded.load_state_dict(net.state_dict())  # same layers and keys
    assert (unbounded(x) - x).abs().max() > 10 * moved.max()


def test_bad_bound_fails_in_one_line():
    with pytest.raises(UserError, match="model.net.bound_sigmas"):
        ResUNetSE(bound_sigmas=0.0, noise=AsinhNoise(3.0))


def test_bounded_net_is_the_unbounded_one_at_the_sky():
    torch.manual_seed(0)
    net = ResUNetSE(base_channels=4, depth=1, bound_sigmas=4.0, noise=AsinhNoise(3.0))
    nn.init.normal_(net.noise_head.weight, std=0.01)
    unbounded = ResUNetSE(base_channels=4, depth=1)
    unbounded.load_state_dict(net.state_dict())
    sky = torch.zeros(1, 1, 16, 16)  # z = 0: sigma = 1 / softening, the head's own unit
    change, change_unbounded = net(sky) - sky, unbounded(sky) - sky
    assert change.abs().max() > 0
    assert torch.allclose(change, change_unbounded, rtol=1e-2, atol=1e-7)
