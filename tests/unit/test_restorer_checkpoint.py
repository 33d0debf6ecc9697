"""Checkpoints name their restorer; records of the first version still load."""

import pytest
import torch

from astrorestore.callbacks.provenance import CHECKPOINT_FORMAT
from astrorestore.errors import UserError
from astrorestore.inference.restorer import load_restorer
from astrorestore.nets.res_unet import ResidualUNet

NET = {
    "_target_": "astrorestore.nets.res_unet.ResidualUNet",
    "base_channels": 4,
    "depth": 2,
    "dilations": [1],
}
NORMALIZER = {"_target_": "astrorestore.data.normalization.asinh.AsinhNormalizer", "softening": 3.0}


def _net():
    torch.manual_seed(0)
    net = ResidualUNet(base_channels=4, depth=2, dilations=[1])
    torch.nn.init.normal_(net.noise_head.weight, std=0.1)  # not the identity
    return net


def _record(**changes):
    """A current-format record of a NetForward restorer over ``NET``, with ``changes``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": "x",
        "model": "m",
        "restorer": {"_target_": "astrorestore.inference.restorer.NetForward"},
        "weights": "net",
        "net": NET,
        "normalizer": NORMALIZER,
        "io": {"in_channels": 1, "out_channels": 1, "scale": 1, "size_multiple": 4},
        **changes,
    }


def _save(path, meta, net):
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "astrorestore": meta}, path)


def test_version_one_denoiser_checkpoint_still_loads(tmp_path):
    net = _net()
    old = {
        "version": "0.1.0",
        "method": "supervised",
        "task": "denoise",
        "config": {"model": {"net": NET}, "data": {"normalizer": NORMALIZER}},
    }
    _save(tmp_path / "old.ckpt", old, net)
    restorer = load_restorer(tmp_path / "old.ckpt")
    assert (restorer.in_channels, restorer.out_channels, restorer.scale) == (1, 1, 1)
    assert restorer.size_multiple == 4 and restorer.name == "supervised"
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(restorer(x), net(x))


def test_unknown_old_record_fails_in_one_line(tmp_path):
    _save(tmp_path / "gan.ckpt", {"version": "0.0.9", "task": "colorize", "config": {}}, _net())
    with pytest.raises(UserError, match="older astrorestore version .*retrain") as info:
        load_restorer(tmp_path / "gan.ckpt")
    assert "\n" not in str(info.value)


def test_newer_format_is_refused(tmp_path):
    record = {"format": CHECKPOINT_FORMAT + 1, "version": "9.0"}
    _save(tmp_path / "new.ckpt", record, _net())
    with pytest.raises(UserError, match="newer astrorestore"):
        load_restorer(tmp_path / "new.ckpt")


def test_restorer_spec_is_instantiated_with_the_named_weights(tmp_path):
    net = _net()
    record = _record(weights="ema")
    other = _net()
    torch.nn.init.normal_(other.noise_head.weight, std=0.5)
    state = {f"net.{k}": v for k, v in other.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in net.state_dict().items()})
    torch.save({"state_dict": state, "astrorestore": record}, tmp_path / "ema.ckpt")
    restorer = load_restorer(tmp_path / "ema.ckpt")
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(restorer(x), net(x))  # the EMA weights, not the raw ones


def test_network_config_the_code_no_longer_takes_fails_in_one_line(tmp_path):
    record = _record(net={**NET, "residual": True})  # an argument a later version removed
    _save(tmp_path / "stale.ckpt", record, _net())
    with pytest.raises(UserError, match="residual.*retrain it") as info:
        load_restorer(tmp_path / "stale.ckpt")
    assert "\n" not in str(info.value)


BOUNDED = {
    "_target_": "astrorestore.nets.bounded_residual.BoundedResidualUNet",
    "base_channels": 4,
    "depth": 2,
    "dilations": [1],
}


def test_give_back_settings_replace_the_checkpoints_at_load(tmp_path):
    from astrorestore.nets.bounded_residual import BoundedResidualUNet

    torch.manual_seed(0)
    net = BoundedResidualUNet(base_channels=4, depth=2, dilations=[1])
    _save(tmp_path / "b.ckpt", _record(net=BOUNDED), net)  # no flux_* keys stored: off
    assert load_restorer(tmp_path / "b.ckpt").fn.net.give_back is None
    on = load_restorer(tmp_path / "b.ckpt", give_back={"flux_sigma": 1.5, "flux_footprint": 2.0})
    assert on.fn.net.give_back.sigma_px == 1.5 and on.fn.net.give_back.footprint_px == 2.0
    # the same weights: only the evaluation-time settings differ
    state = on.fn.net.state_dict()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    with pytest.raises(UserError, match=r"give_back.flux_sigma=-1.0 is invalid") as info:
        load_restorer(tmp_path / "b.ckpt", give_back={"flux_sigma": -1.0})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="not a give-back setting"):
        load_restorer(tmp_path / "b.ckpt", give_back={"base_channels": 8})


def test_give_back_on_a_network_without_one_is_refused(tmp_path):
    _save(tmp_path / "r.ckpt", _record(), _net())
    with pytest.raises(UserError, match="has no evaluation give-back"):
        load_restorer(tmp_path / "r.ckpt", give_back={"flux_sigma": 1.5})
