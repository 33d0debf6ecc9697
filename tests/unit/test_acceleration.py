"""Speed switches of inference: same answers (to bf16 rounding), same contract."""

import numpy as np
import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.inference.acceleration import AcceleratedForward, accelerate, check_precision
from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import NetForward, Restorer
from astrorestore.nets.res_unet import ResidualUNet


class Identity:
    def stats(self, x):
        return torch.zeros(x.shape[:2] + (1, 1)), torch.ones(x.shape[:2] + (1, 1))

    def forward(self, x, offset, scale):
        return (x - offset) / scale

    def inverse(self, z, offset, scale):
        return z * scale + offset


def trained_like_net() -> ResidualUNet:
    torch.manual_seed(0)
    net = ResidualUNet(base_channels=8, depth=2, dilations=(1,))
    with torch.no_grad():  # non-zero noise head, so the network's output is not the identity
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    return net.eval()


def restorer(net) -> Restorer:
    return Restorer(
        fn=NetForward(net),
        normalizer=Identity(),
        in_channels=1,
        out_channels=1,
        scale=1,
        size_multiple=4,
        device=torch.device("cpu"),
        name="test",
        ckpt_path="(test)",
    )


def test_bf16_changes_only_the_predicted_noise_by_its_rounding():
    net = trained_like_net()
    image = np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32)
    exact = restore_image(image, restorer(net), 32, 8, 4)
    fast = restore_image(image, accelerate(restorer(net), precision="bf16"), 32, 8, 4)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    change = np.abs(fast - exact)
    predicted_noise = np.abs(image - exact)
    assert change.max() > 0  # bf16 really ran
    # bfloat16 keeps 8 bits of mantissa: ~0.4 % per value, a few % after a few layers.
    assert change.max() < 0.05 * predicted_noise.max()
    # the input passes through in float32: where the net predicts ~nothing, nothing moves
    assert np.median(change) < 0.01 * np.median(predicted_noise)


def test_channels_last_gives_the_same_output():
    net = trained_like_net()
    image = np.random.default_rng(1).normal(0, 1, (48, 64)).astype(np.float32)
    exact = restore_image(image, restorer(net), 32, 8, 3)
    fast = restore_image(
        image, accelerate(restorer(trained_like_net()), channels_last=True), 32, 8, 3
    )
    np.testing.assert_allclose(fast, exact, atol=1e-5)


def test_padded_batches_return_only_the_real_tiles():
    net = trained_like_net()
    wrapped = AcceleratedForward(NetForward(net), "fp32", False, pad_batch=4)
    tiles = torch.randn(3, 1, 16, 16)
    with torch.inference_mode():
        out = wrapped(tiles)
        np.testing.assert_allclose(out.numpy(), net(tiles).numpy(), atol=1e-5)
    assert out.shape == (3, 1, 16, 16)


def test_defaults_return_the_restorer_unchanged_and_keep_stochastic_flag():
    r = restorer(trained_like_net())
    assert accelerate(r) is r
    r.fn.stochastic = True
    assert accelerate(r, precision="bf16").stochastic


@pytest.mark.parametrize("value", ["fp16", "half", ""])
def test_unknown_precision_is_one_line(value):
    with pytest.raises(UserError, match="precision=.*fp32.*bf16") as info:
        check_precision(value)
    assert "\n" not in str(info.value)
    assert check_precision(" BF16 ") == "bf16"


def test_training_speed_switches_keep_checkpoint_keys_and_refuse_typos():
    from astrorestore.train import speed_up

    net = trained_like_net()
    keys = list(net.state_dict())
    speed_up(net, {"channels_last": True, "compile": True})
    assert list(net.state_dict()) == keys  # checkpoints load with or without compile
    assert net.stem.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(UserError, match="speed.compil is not a speed switch"):
        speed_up(net, {"compil": True})
