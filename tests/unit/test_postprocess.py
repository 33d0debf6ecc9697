"""The post-processing stage: its config group, and that networks no longer post-process."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.errors import UserError
from astrorestore.modules.regression import RegressionModule
from astrorestore.nets.bounded import BoundedResidualUNet
from astrorestore.nets.n2v_unet import N2VUNet
from astrorestore.nets.res_unet_se import ResUNetSE
from astrorestore.postprocess import (
    STAGES,
    build_postprocess,
    check_postprocess,
    merge_postprocess,
)
from astrorestore.postprocess.give_back import give_back_removed_sources
from astrorestore.train import build_stages

ROOT = Path(__file__).resolve().parents[2]
NETS = ROOT / "src" / "astrorestore" / "nets"


def _compose(name, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_the_group_files_are_the_stages_settings():
    train = _compose("train", [])
    assert check_postprocess(train.postprocess) == {"give_back": None, "psf_cores": None}
    n2v = _compose("train", ["model=n2v"])
    assert set(n2v.postprocess.give_back) == set(STAGES["give_back"])
    cores = _compose("infer", ["postprocess=psf_cores"]).postprocess
    assert set(cores) == {"psf_cores"} and set(cores.psf_cores) == set(STAGES["psf_cores"])
    assert check_postprocess(_compose("infer", []).postprocess) == {}  # the checkpoint's
    for option in ("none", "give_back", "psf_cores", "checkpoint"):
        build_postprocess(_compose("infer", [f"postprocess={option}"]).postprocess, AsinhNoise())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sharpen": {}}, "postprocess.sharpen is not a post-processing stage; use give_back, "),
        (
            {"give_back": {"sigma": 1.5}},
            "postprocess.give_back.sigma is not a setting of give_back",
        ),
        ({"give_back": 1.5}, "postprocess.give_back=1.5 is invalid: give its settings"),
        ({"psf_cores": {"gain": -1}}, "postprocess.psf_cores.gain=-1.0 is invalid"),
        ("give_back", "postprocess='give_back' is invalid: choose a config"),
    ],
)
def test_a_bad_stage_or_setting_fails_naming_the_key_and_the_allowed_values(settings, message):
    with pytest.raises(UserError) as info:
        build_postprocess(settings, AsinhNoise())
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_give_back_needs_the_asinh_noise_model():
    with pytest.raises(UserError, match="postprocess.give_back works in the asinh"):
        build_postprocess({"give_back": {}}, noise=None)


def test_infer_settings_are_laid_over_the_checkpoints_stage_by_stage():
    stored = {"give_back": {"detect_scale": 1.5, "chi2_from": 1.5}, "psf_cores": None}
    assert merge_postprocess(stored, {}) == stored
    assert merge_postprocess(stored, {"give_back": None})["give_back"] is None
    changed = merge_postprocess(stored, {"give_back": {"threshold": 4.0}})["give_back"]
    assert changed == {"detect_scale": 1.5, "chi2_from": 1.5, "threshold": 4.0}
    added = merge_postprocess(stored, {"psf_cores": {"min_snr": 10}})
    assert added["give_back"] == stored["give_back"] and added["psf_cores"] == {"min_snr": 10}


def _nets():
    noise = AsinhNoise(3.0, 16.0)
    return {
        "bounded": BoundedResidualUNet(base_channels=4, depth=2, noise=noise),
        "n2v_clamped": N2VUNet(
            base_channels=4, depth=2, output="clamped", bound_sigmas=5.0, noise=noise
        ),
        "n2v_capped": N2VUNet(
            base_channels=4, depth=2, output="capped_residual", bound_sigmas=5.0, noise=noise
        ),
        "n2n": ResUNetSE(base_channels=4, depth=2, bound_sigmas=4.0, noise=noise),
    }


@pytest.mark.parametrize("name", list(_nets()))
def test_networks_are_the_same_in_training_and_evaluation(name):
    net = _nets()[name]
    torch.manual_seed(0)
    for parameter in net.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = torch.asinh(torch.randn(2, 1, 16, 16) * 30)
    assert torch.equal(net.train()(x), net.eval()(x))


def test_no_network_switches_on_training_mode():
    for path in NETS.glob("*.py"):
        tree = ast.parse(path.read_text())
        reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "training"]
        assert not reads, f"{path.name} reads self.training"


def _module(postprocess):
    net = BoundedResidualUNet(base_channels=4, depth=2, noise=AsinhNoise(3.0))
    torch.nn.init.normal_(net.noise_head.weight, std=3.0)
    loss = lambda pred, target, mask: ((pred - target).abs().mean(), {})  # noqa: E731
    return RegressionModule(
        net, loss, optimizer=torch.optim.SGD, compute_lpips=False, postprocess=postprocess
    )


def test_validation_scores_the_post_processed_output_and_training_the_network():
    stages = build_postprocess({"give_back": {"detect_scale": 1.5}}, AsinhNoise(3.0))
    module = _module(stages)
    x = torch.asinh(torch.randn(2, 1, 16, 16) * 30)
    batch = {"input": x, "target": torch.zeros_like(x)}
    _, restored = module.evaluate_batch(batch)
    expected = give_back_removed_sources(x, module.net(x), AsinhNoise(3.0), detect_scale=1.5)
    torch.testing.assert_close(restored, expected, rtol=0, atol=0)
    assert not torch.equal(restored, module.net(x))
    assert "postprocess" not in module.hparams  # an object, not a plain value


def test_train_refuses_tile_stages_where_the_output_changes_shape():
    pairing = SimpleNamespace(
        upscale_factor=2, input_channels=lambda c: c, output_channels=lambda c: c
    )
    datamodule = SimpleNamespace(
        normalizer=SimpleNamespace(softening=3.0), pairing=pairing, channels=1
    )
    cfg = {"postprocess": {"give_back": {"detect_scale": 1.5}}}
    with pytest.raises(UserError, match="use postprocess=none"):
        build_stages(cfg, datamodule, None)
    pairing.upscale_factor = 1
    assert build_stages(cfg, datamodule, None).on_tiles
