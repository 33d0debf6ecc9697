import pytest
import torch

from astrorestore.nets.res_unet import ResidualUNet


def test_output_shape_matches_input():
    net = ResidualUNet(base_channels=8, depth=2, dilations=(1, 2))
    x = torch.randn(3, 1, 32, 48)
    assert net(x).shape == x.shape


def test_forward_is_input_minus_predicted_noise():
    torch.manual_seed(0)
    net = ResidualUNet(base_channels=8, depth=2, dilations=(1, 2))
    torch.nn.init.normal_(net.noise_head.weight, std=0.1)  # leave the identity start
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(net(x), x - net.predict_noise(x))
    assert not torch.allclose(net(x), x)


def test_fresh_network_is_identity():
    # Zero-initialised noise head: an untrained model must not alter fluxes.
    net = ResidualUNet(base_channels=8, depth=2)
    x = torch.rand(1, 1, 16, 16) * 1e3
    torch.testing.assert_close(net(x), x)


def test_bottleneck_is_dilated_and_uses_groupnorm():
    net = ResidualUNet(base_channels=8, depth=2, dilations=(1, 2, 4))
    dilations = {m.dilation[0] for m in net.bottleneck.modules() if isinstance(m, torch.nn.Conv2d)}
    assert dilations == {1, 2, 4}
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_size_not_multiple_raises():
    net = ResidualUNet(base_channels=8, depth=3)
    assert net.size_multiple == 8
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.zeros(1, 1, 20, 24))


def test_gradients_flow_to_all_parameters():
    net = ResidualUNet(base_channels=8, depth=2)
    torch.nn.init.normal_(net.noise_head.weight, std=0.1)
    net(torch.randn(2, 1, 16, 16)).pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
