"""The shared weight averaging (``model.ema_decay``) of every method's module."""

import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.modules.regression import RegressionModule
from tests.unit.test_gan import _fit, _module


def _regression(**extra):
    torch.manual_seed(0)
    return RegressionModule(
        net=torch.nn.Conv2d(1, 1, 3, padding=1),
        loss=RestorationLoss(1.0, 0.0, 0.0),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        compute_lpips=False,
        **extra,
    )


def test_without_a_decay_nothing_is_averaged():
    module = _regression()
    assert not hasattr(module, "ema")
    assert module.inference_net is module.net
    assert module.restorer_spec()["weights"] == "net"


def test_the_average_is_what_evaluation_and_the_checkpoint_use():
    module = _regression(ema_decay=0.5)
    assert module.restorer_spec() == {
        "_target_": "astrorestore.inference.restorer.NetForward",
        "weights": "ema",
        "net_config": "net",
    }
    assert module.inference_net is module.ema and not module.ema.training
    assert not any(p.requires_grad for p in module.ema.parameters())
    start = [p.detach().clone() for p in module.net.parameters()]
    # three batches: the average lags the trained weights (warm-up decay (1+t)/(10+t) at first)
    trained = []
    for step in range(3):
        with torch.no_grad():
            for p in module.net.parameters():
                p.add_(1.0)
        trained.append([p.detach().clone() for p in module.net.parameters()])
        module.averager.update(module.ema, module.net, step)
    expected = [s.clone() for s in start]
    for step, weights in enumerate(trained):
        decay = min(0.5, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    for got, want in zip(module.ema.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want)
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(module.restore(x), module.ema(x))
    assert not torch.allclose(module.restore(x), module.net(x))


@pytest.mark.parametrize("bad", [1.0, -0.1, True])
def test_bad_decays_are_one_line_errors(bad):
    with pytest.raises(UserError, match=r"model.ema_decay=.*\[0, 1\).*null"):
        _regression(ema_decay=bad)


def test_a_gan_averages_its_generator_once_per_batch():
    module = _module(ema_decay=0.9)
    trainer = _fit(module, steps=2)
    assert trainer.global_step == 4  # two optimiser steps per GAN batch ...
    assert module.batches_trained() == 2  # ... but two batches
    assert module.restorer_spec()["weights"] == "ema"
    # the average moved off the initial generator but is not the trained one
    assert any(
        not torch.equal(a, b)
        for a, b in zip(module.ema.parameters(), module.net.parameters(), strict=True)
    )
    assert sum(p.numel() for p in module.ema.parameters()) == sum(
        p.numel() for p in module.net.parameters()
    )
