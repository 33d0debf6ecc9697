"""``train.py init_from=<ckpt>``: a new run starts from a checkpoint's network weights (its
weight average where it has one), not a resume; ``export_weights`` and the shipped default."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from astrorestore.checkpoint import (
    export_weights,
    make_record,
    network_weights,
    pretrained_path,
    read_checkpoint,
)
from astrorestore.data.normalization.asinh import frame_noise
from astrorestore.errors import UserError
from astrorestore.inference.restorer import load_restorer
from astrorestore.train import _train, build, check_config, init_weights, read_init

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = ["debug=tiny", "logger=none"]


def _compose(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    cfg.model.compute_lpips = False
    cfg.paths.output_dir = "no-run-folder"  # Hydra's, when train.py runs
    return cfg


def _trained_checkpoint(path, *overrides):
    """A format-3 checkpoint as training writes it (record, module state dict, optimizer
    state), from a model whose weights are moved away from their initialisation."""
    cfg = _compose(*TINY, *overrides)
    datamodule, model = build(cfg)
    with torch.no_grad():
        for i, param in enumerate(model.state_dict().values()):
            if param.is_floating_point():
                param.add_(0.01 * (i + 1))
    optimizer = model.configure_optimizers()["optimizer"]
    record = make_record(model, datamodule, OmegaConf.to_container(cfg, resolve=True), "supervised")
    torch.save(
        {
            "state_dict": model.state_dict(),
            "optimizer_states": [optimizer.state_dict()],
            "epoch": 7,
            "astrorestore": record,
        },
        path,
    )
    return model


def _same(a, b):
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_weights_equal_the_sources_weight_average_at_step_0(tmp_path):
    source = _trained_checkpoint(tmp_path / "a.ckpt", "model.ema_decay=0.9")
    with torch.no_grad():  # the average differs from the trained network: which one is taken
        for param in source.ema.parameters():
            param.add_(1.0)
    record = torch.load(tmp_path / "a.ckpt", weights_only=True)
    record["state_dict"] = source.state_dict()
    torch.save(record, tmp_path / "a.ckpt")
    cfg = _compose(*TINY, f"init_from={tmp_path / 'a.ckpt'}", "model.ema_decay=0.99")
    check_config(cfg)
    init = read_init(cfg)
    _, model = build(cfg)
    assert not _same(model.net, source.ema)
    init_weights(model, init, cfg.init_from)
    assert _same(model.net, source.ema) and _same(model.ema, source.ema)
    assert not _same(model.net, source.net)
    # Not a resume: a fresh optimizer, whatever the checkpoint stored.
    optimizer = model.configure_optimizers()["optimizer"]
    assert optimizer.state_dict()["state"] == {}
    assert model.current_epoch == 0 and model.global_step == 0


def test_another_network_shape_is_one_line_and_nothing_is_written(tmp_path):
    _trained_checkpoint(tmp_path / "a.ckpt")
    cfg = _compose(*TINY, f"init_from={tmp_path / 'a.ckpt'}", "model.net.base_channels=4")
    cfg.paths.output_dir = str(tmp_path / "run")
    description = {"choices": {}, "overrides": [], "sweep": None, "job": None}
    with pytest.raises(UserError) as info:
        _train(cfg, description)
    message = str(info.value)
    assert "\n" not in message
    assert "net.inc.0.weight" in message or "weight" in message
    assert "(8, 1, 3, 3)" in message and "(4, 1, 3, 3)" in message
    assert not (tmp_path / "run").exists()


def test_init_from_with_ckpt_path_is_refused(tmp_path):
    _trained_checkpoint(tmp_path / "a.ckpt")
    cfg = _compose(*TINY, f"init_from={tmp_path / 'a.ckpt'}", f"ckpt_path={tmp_path / 'a.ckpt'}")
    with pytest.raises(UserError, match="pass one of them") as info:
        check_config(cfg)
    assert "\n" not in str(info.value)


def test_starts_from_the_shipped_weights():
    shipped = network_weights(read_checkpoint(pretrained_path()))
    cfg = _compose("logger=none", "init_from=pretrained")
    init = read_init(cfg)
    _, model = build(cfg)
    init_weights(model, init, "pretrained")
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, shipped[key].float()), key


def test_a_self_supervised_model_takes_the_checkpoints_network():
    # model=n2v trains its own N2VUNet; init_net=checkpoint trains the shipped network instead.
    shipped = network_weights(read_checkpoint("pretrained"))
    cfg = _compose("logger=none", "model=n2v", "init_from=pretrained", "init_net=checkpoint")
    init = read_init(cfg)
    assert cfg.model.net._target_ == "astrorestore.nets.bounded.BoundedResidualUNet"
    _, model = build(cfg)
    init_weights(model, init, "pretrained")
    assert all(torch.equal(v, shipped[k].float()) for k, v in model.net.state_dict().items())
    with pytest.raises(UserError, match="does not fit this network"):
        init_weights(build(_compose("logger=none", "model=n2v"))[1], init, "pretrained")


def test_export_keeps_the_inference_weights_and_record_only(tmp_path):
    source = _trained_checkpoint(tmp_path / "a.ckpt", "model.ema_decay=0.9")
    out = export_weights(tmp_path / "a.ckpt", tmp_path / "slim" / "w.ckpt")
    slim = torch.load(out, weights_only=True)
    assert set(slim) == {"state_dict", "astrorestore"}
    assert all(key.startswith("ema.") for key in slim["state_dict"])
    assert {v.dtype for v in slim["state_dict"].values() if v.is_floating_point()} == {
        torch.float16
    }
    assert slim["astrorestore"]["exported_from"] == "a.ckpt"
    restorer = load_restorer(out)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(restorer(x), source.ema.eval()(x), rtol=1e-2, atol=1e-2)
    exact = torch.load(export_weights(tmp_path / "a.ckpt", tmp_path / "f.ckpt", half=False))
    for key, value in source.ema.state_dict().items():
        assert torch.equal(exact["state_dict"][f"ema.{key}"], value), key
    with pytest.raises(UserError, match="the checkpoint itself"):
        export_weights(out, out)


def test_shipped_weights_are_weights_only_and_declared_as_package_data():
    path = pretrained_path()
    # 1.49 M parameters in float16 and the record: 3.0 MB (no optimizer state: 9 MB more).
    assert path.is_file() and path.stat().st_size < 3_500_000
    pyproject = (CONFIGS.parent / "pyproject.toml").read_text()
    assert '"pretrained/*.ckpt"' in pyproject
    record = read_checkpoint(path)["astrorestore"]
    assert record["net"]["base_channels"] == 16 and record["net"]["depth"] == 3


def test_infer_without_a_checkpoint_restores_with_the_shipped_weights(capsys):
    restorer = load_restorer(None)
    assert "shipped pretrained default" in capsys.readouterr().out
    assert restorer.name == "supervised" and restorer.ckpt_path == str(pretrained_path().resolve())
    # Its bound takes each frame's own noise: infer.py gives it (test_frame_noise_bound.py).
    assert restorer.frame_gain
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad(), frame_noise(torch.full((1, 1, 1, 1), 20.0)):
        assert not torch.equal(restorer(x), x)
