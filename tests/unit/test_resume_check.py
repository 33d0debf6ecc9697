import pytest
import torch
from omegaconf import OmegaConf

from astrorestore.callbacks.provenance import CHECKPOINT_FORMAT
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
    # evaluation-only give-back of a network.
    check_config(_cfg(_checkpoint(tmp_path / "a.ckpt", MODEL)))
    check_config(_cfg(_checkpoint(tmp_path / "b.ckpt", MODEL), flux_sigma=1.5, flux_footprint=2))


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
