"""Checkpoints name their restorer and post-processing; records of earlier formats still load
and restore exactly as before."""

import pytest
import torch

from astrorestore.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, upgrade_record
from astrorestore.data.normalization.asinh import AsinhNoise
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
        "postprocess": {},
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
    "_target_": "astrorestore.nets.bounded.BoundedResidualUNet",
    "base_channels": 4,
    "depth": 2,
    "dilations": [1],
    "noise": {
        "_target_": "astrorestore.data.normalization.asinh.AsinhNoise",
        "softening": 3.0,
        "photons_per_unit": 16.0,
    },
}
# The same network as format 2 stored it: another module, the noise model as two numbers,
# and the give-back (on, with a chi-square test) among its settings.
BOUNDED_FORMAT_2 = {
    "_target_": "astrorestore.nets.bounded_residual.BoundedResidualUNet",
    "base_channels": 4,
    "depth": 2,
    "dilations": [1],
    "softening": 3.0,
    "photons_per_unit": 16.0,
    "bound_sigmas": 4.0,
    "flux_sigma": 1.5,
    "flux_threshold": 5.0,
    "flux_ramp_from": 3.0,
    "flux_chi2": 1.5,
    "flux_stack_snr": None,
    "flux_footprint": None,
}


def _bounded():
    from astrorestore.nets.bounded import BoundedResidualUNet

    torch.manual_seed(0)
    net = BoundedResidualUNet(base_channels=4, depth=2, dilations=[1], noise=AsinhNoise(3.0, 16.0))
    torch.nn.init.normal_(net.noise_head.weight, std=3.0)  # something to give back
    return net


def test_format_2_record_is_upgraded_to_a_postprocess_config():
    record = _record(
        format=2,
        net=BOUNDED_FORMAT_2,
        config={"model": {"net": dict(BOUNDED_FORMAT_2), "lr": 1}, "data": {}},
    )
    record.pop("postprocess", None)
    upgraded = upgrade_record(record)
    assert upgraded["format"] == CHECKPOINT_FORMAT and upgraded["upgraded_from"] == 2
    net = upgraded["net"]
    assert net["_target_"] == "astrorestore.nets.bounded.BoundedResidualUNet"
    assert net["noise"] == BOUNDED["noise"]
    assert not any(
        key.startswith("flux_") or key in ("softening", "photons_per_unit") for key in net
    )
    give_back = {"detect_scale": 1.5, "threshold": 5.0, "ramp_from": 3.0, "chi2_from": 1.5}
    assert upgraded["postprocess"] == {
        "give_back": {**give_back, "stack_snr": None, "footprint_scale": None}
    }
    # the run config too (what a resume is compared with)
    assert upgraded["config"]["model"]["net"] == net
    assert upgraded["config"]["postprocess"] == upgraded["postprocess"]
    assert record["net"] == BOUNDED_FORMAT_2  # the stored record is not changed in place
    # flux_sigma null (or absent): the give-back was off
    off = upgrade_record(_record(format=2, net={**BOUNDED_FORMAT_2, "flux_sigma": None}))
    assert off["postprocess"] == {"give_back": None}
    # Noise2Void's renamed output
    n2v = {"_target_": "astrorestore.nets.n2v_unet.N2VUNet", "output": "bounded_residual"}
    n2v_net = upgrade_record(_record(format=2, net=n2v))["net"]
    assert n2v_net["output"] == "capped_residual" and n2v_net["noise"]["softening"] == 3.0


def test_format_2_checkpoint_restores_exactly_as_before(tmp_path):
    from astrorestore.postprocess.give_back import give_back_removed_sources

    net = _bounded()
    _save(tmp_path / "old.ckpt", _record(format=2, net=BOUNDED_FORMAT_2), net)
    assert read_checkpoint(tmp_path / "old.ckpt")["astrorestore"]["upgraded_from"] == 2
    restorer = load_restorer(tmp_path / "old.ckpt")
    x = torch.asinh(torch.randn(1, 1, 16, 16) * 50)
    # what format 2's network gave in evaluation: its bounded output, then the give-back
    noise = AsinhNoise(3.0, 16.0)
    expected = give_back_removed_sources(
        x, net.eval()(x), noise, detect_scale=1.5, chi2_from=1.5, footprint_scale=None
    )
    torch.testing.assert_close(restorer(x), expected, rtol=0, atol=0)
    assert not torch.equal(expected, net(x))


def test_postprocess_is_stored_and_can_be_changed_at_load(tmp_path):
    net = _bounded()
    stored = {"give_back": {"detect_scale": 1.5, "chi2_from": 1.5, "footprint_scale": None}}
    _save(tmp_path / "b.ckpt", _record(net=BOUNDED, postprocess=stored), net)
    on = load_restorer(tmp_path / "b.ckpt")
    assert on.postprocess.give_back.chi2_from == 1.5
    x = torch.asinh(torch.randn(1, 1, 16, 16) * 50)
    assert not torch.equal(on(x), net(x))
    # infer.py's postprocess is laid over the stored stages, key by key
    changed = load_restorer(tmp_path / "b.ckpt", postprocess={"give_back": {"threshold": 4.0}})
    assert changed.postprocess.give_back.threshold == 4.0
    assert changed.postprocess.give_back.chi2_from == 1.5
    off = load_restorer(tmp_path / "b.ckpt", postprocess={"give_back": None})
    torch.testing.assert_close(off(x), net(x))
    # the same weights: only what runs after the network differs
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in off.fn.net.state_dict().items())
    with pytest.raises(UserError, match=r"^postprocess.give_back.detect_scale=-1.0 is invalid"):
        load_restorer(tmp_path / "b.ckpt", postprocess={"give_back": {"detect_scale": -1.0}})
    with pytest.raises(UserError, match="postprocess.give_back.base_channels is not a setting"):
        load_restorer(tmp_path / "b.ckpt", postprocess={"give_back": {"base_channels": 8}})
    with pytest.raises(UserError, match="postprocess.sharpen is not a post-processing stage"):
        load_restorer(tmp_path / "b.ckpt", postprocess={"sharpen": {}})


def test_postprocess_of_a_model_that_changes_the_shape_is_refused(tmp_path):
    io = {"in_channels": 1, "out_channels": 3, "scale": 1, "size_multiple": 4}
    _save(tmp_path / "c.ckpt", _record(io=io), _net())
    with pytest.raises(UserError, match="use postprocess=none"):
        load_restorer(tmp_path / "c.ckpt", postprocess={"give_back": {}})
    load_restorer(tmp_path / "c.ckpt")  # nothing stored, nothing asked: fine


def test_the_record_stores_the_runs_postprocess_and_restores_with_it(tmp_path):
    from types import SimpleNamespace

    from astrorestore.checkpoint import make_record

    net = _bounded()
    module = SimpleNamespace(
        restorer_spec=lambda: {
            "_target_": "astrorestore.inference.restorer.NetForward",
            "weights": "net",
        },
        net=net,
    )
    pairing = SimpleNamespace(
        upscale_factor=1, input_channels=lambda c: c, output_channels=lambda c: c
    )
    datamodule = SimpleNamespace(channels=1, pairing=pairing)
    give_back = {"detect_scale": 1.5, "footprint_scale": 2.0}
    config = {
        "model": {"net": BOUNDED},
        "data": {"normalizer": NORMALIZER},
        "postprocess": {"give_back": give_back, "psf_cores": None},
    }
    record = make_record(module, datamodule, config, "supervised")
    assert record["format"] == CHECKPOINT_FORMAT
    assert record["postprocess"] == {"give_back": give_back, "psf_cores": None}
    assert upgrade_record(record) is record  # today's layout: nothing to upgrade
    _save(tmp_path / "r.ckpt", record, net)
    restorer = load_restorer(tmp_path / "r.ckpt")
    assert restorer.postprocess.give_back.footprint_scale == 2.0
    assert restorer.postprocess.noise == AsinhNoise(3.0, 16.0)  # the network's own


def test_the_normalisers_background_setting_comes_from_the_checkpoint(tmp_path):
    net = _net()
    _save(tmp_path / "old.ckpt", _record(), net)  # written before data.normalizer.background
    assert load_restorer(tmp_path / "old.ckpt").normalizer.background == "median"
    mapped = dict(NORMALIZER, background="map", box_size=24)
    _save(tmp_path / "map.ckpt", _record(normalizer=mapped), net)
    normalizer = load_restorer(tmp_path / "map.ckpt").normalizer
    assert normalizer.per_pixel and normalizer.box_size == 24
