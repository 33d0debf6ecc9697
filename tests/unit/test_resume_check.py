import pytest
import torch
from omegaconf import OmegaConf

from astrorestore.checkpoint import CHECKPOINT_FORMAT
from astrorestore.errors import UserError
from astrorestore.train import check_config

NET = {"_target_": "astrorestore.nets.res_unet.ResUNet", "base_channels": 8, "bound_sigmas": 4.0}
MODEL = {"_target_": "astrorestore.modules.regression.RegressionModule", "net": NET}


def _checkpoint(path, model):
    record = {"format": CHECKPOINT_FORMAT, "model": "supervised", "config": {"model": model}}
    torch.save({"astrorestore": record, "state_dict": {}}, path)
    return path


def _cfg(path, **net):
    model = {**MODEL, "net": {**NET, **net}, "optimizer": {"lr": 1e-4}}
    return OmegaConf.create({"ckpt_path": str(path), "model": model})


def test_resume_with_the_same_networks_passes(tmp_path):
    # Settings outside the networks (here the learning rate) may differ, and so may the
    # post-processing after the network.
    check_config(_cfg(_checkpoint(tmp_path / "a.ckpt", MODEL)))
    cfg = _cfg(_checkpoint(tmp_path / "b.ckpt", MODEL))
    cfg.postprocess = {"give_back": {"detect_scale": 1.5, "footprint_scale": 2}}
    check_config(cfg)


def test_resume_from_a_format_2_checkpoint_compares_the_upgraded_networks(tmp_path):
    old_net = {
        "_target_": "astrorestore.nets.bounded_residual.BoundedResidualUNet",
        "bound_sigmas": 4.0,
        "softening": 3.0,
        "photons_per_unit": None,
        "flux_sigma": 1.5,
    }
    record = {"format": 2, "model": "supervised", "config": {"model": {**MODEL, "net": old_net}}}
    torch.save({"astrorestore": record, "state_dict": {}}, tmp_path / "old.ckpt")
    net = {
        "_target_": "astrorestore.nets.bounded.BoundedResidualUNet",
        "bound_sigmas": 4.0,
        "noise": {
            "_target_": "astrorestore.data.normalization.asinh.AsinhNoise",
            "softening": 3.0,
            "photons_per_unit": None,
        },
    }
    cfg = OmegaConf.create(
        {"ckpt_path": str(tmp_path / "old.ckpt"), "model": {**MODEL, "net": net}}
    )
    check_config(cfg)  # the same network, written the new way: resumes
    cfg.model.net.noise.photons_per_unit = 16.0
    with pytest.raises(UserError, match="model.net.noise.photons_per_unit=null"):
        check_config(cfg)


def test_psf_cores_in_training_is_refused_naming_where_it_belongs():
    cfg = OmegaConf.create({"postprocess": {"psf_cores": {"min_snr": 20}}})
    with pytest.raises(UserError, match="postprocess.psf_cores works on whole frames.*infer.py"):
        check_config(cfg)
    with pytest.raises(UserError, match="postprocess.sharpen is not a post-processing stage; use"):
        check_config(OmegaConf.create({"postprocess": {"sharpen": None}}))


@pytest.mark.parametrize(
    "net, expected",
    [
        ({"base_channels": 16}, "model.net.base_channels=8 (model=supervised), this run has 16"),
        ({"bound_sigmas": None}, "bound_sigmas=4.0 (model=supervised), this run has null"),
        ({"_target_": "astrorestore.nets.n2v_unet.N2VUNet"}, "model.net._target_="),
    ],
)
def test_resume_with_another_network_is_one_line(tmp_path, net, expected):
    path = _checkpoint(tmp_path / "a.ckpt", MODEL)
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_config(_cfg(path, **net))


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "a.ckpt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        check_config(_cfg(tmp_path / "a.ckpt"))


def test_resume_with_weight_averaging_switched_on_or_off_is_one_line(tmp_path):
    # The average is part of the state dict: Lightning would fail on its missing keys.
    averaged = _checkpoint(tmp_path / "a.ckpt", {**MODEL, "ema_decay": 0.999})
    with pytest.raises(
        UserError, match=r"model.ema_decay=0.999 \(model=supervised\), this run has null"
    ):
        check_config(_cfg(averaged))
    cfg = _cfg(_checkpoint(tmp_path / "b.ckpt", MODEL))
    cfg.model.ema_decay = 0.99
    with pytest.raises(UserError, match="model.ema_decay=null"):
        check_config(cfg)
    # another decay only changes how fast the average moves: allowed
    cfg = _cfg(averaged)
    cfg.model.ema_decay = 0.99
    check_config(cfg)
