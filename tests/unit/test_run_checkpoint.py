from types import SimpleNamespace

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from astrorestore.callbacks.checkpoint import RunCheckpoint
from astrorestore.callbacks.summary import RunSummary


def _trainer():
    return SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda x, all=True: x))


def test_resume_into_a_new_folder_keeps_the_best_score(tmp_path):
    old, new = tmp_path / "run1" / "checkpoints", tmp_path / "run2" / "checkpoints"
    before = RunCheckpoint(dirpath=old, monitor="val/psnr", mode="max", save_top_k=1)
    best = str(old / "best-epoch002.ckpt")
    before.best_model_score, before.best_model_path = torch.tensor(30.0), best
    before.best_k_models, before.kth_best_model_path = {best: torch.tensor(30.0)}, best
    before.kth_value = torch.tensor(30.0)
    resumed = RunCheckpoint(dirpath=new, monitor="val/psnr", mode="max", save_top_k=1)
    resumed.load_state_dict(before.state_dict())
    assert float(resumed.best_model_score) == 30.0 and resumed.best_model_path == best
    # A worse epoch after the resume is not a new best; a better one is.
    assert not resumed.check_monitor_top_k(_trainer(), torch.tensor(29.0))
    assert resumed.check_monitor_top_k(_trainer(), torch.tensor(31.0))
    # Plain Lightning forgets the score: the worse epoch would become "best".
    plain = ModelCheckpoint(dirpath=new, monitor="val/psnr", mode="max", save_top_k=1)
    plain.load_state_dict(before.state_dict())
    assert plain.check_monitor_top_k(_trainer(), torch.tensor(29.0))


def test_state_key_matches_lightnings_so_older_checkpoints_resume():
    ours = RunCheckpoint(monitor="val/psnr", mode="max")
    assert ours.state_key == ModelCheckpoint(monitor="val/psnr", mode="max").state_key


def test_summary_history_survives_a_resume():
    summary = RunSummary("val/psnr", "max")
    summary.history = [{"epoch": 0, "val/psnr": 20.0}, {"epoch": 1, "val/psnr": 21.0}]
    resumed = RunSummary("val/psnr", "max")
    resumed.load_state_dict(summary.state_dict())
    assert resumed.history == summary.history


def test_summary_states_the_data_range_of_photograph_models(tmp_path, capsys):
    # A colorizer's or SR model's PSNR is measured in [-1, 1] photograph units, not in the
    # asinh space every run's table claimed; "[dB]" was swallowed as rich markup.
    from astrorestore.data.normalization.photo import PhotoNormalizer

    summary = RunSummary("val/psnr", "max")
    summary.history = [{"epoch": 0, "val/psnr": 20.0, "val/input/psnr": 18.0}]
    trainer = SimpleNamespace(
        fast_dev_run=False,
        checkpoint_callback=None,
        is_global_zero=True,
        default_root_dir=str(tmp_path),
        datamodule=SimpleNamespace(normalizer=PhotoNormalizer()),
    )
    summary._finish(trainer)
    out = capsys.readouterr().out
    assert "photograph units" in out and "asinh" not in out
    assert "PSNR (dB)" in out and "input baseline" in out
    assert "photograph units" in summary.summary["data_range"]


def test_summary_without_truth_prints_the_no_truth_metrics(tmp_path, capsys):
    # A self-supervised run on real frames printed an empty "metrics vs clean truth" table
    # and the PSNR data-range note; it shows what was measured without a truth instead.
    summary = RunSummary("val/loss", "min")
    summary.history = [
        {"epoch": 0, "val/loss": 0.3, "val/sky_noise_ratio": 0.5, "val/bright_flux_ratio": 0.99},
        {"epoch": 1, "val/loss": 0.2, "val/sky_noise_ratio": 0.4, "val/bright_flux_ratio": 1.01},
    ]
    trainer = SimpleNamespace(
        fast_dev_run=False, checkpoint_callback=None, is_global_zero=True,
        default_root_dir=str(tmp_path),
    )  # fmt: skip
    summary._finish(trainer)
    out = capsys.readouterr().out
    assert "clean truth max" not in out and "metrics vs clean truth" not in out
    assert "val/sky_noise_ratio" in out and "0.4" in out and "1.01" in out
    assert "selected by val/loss (min)" in out and "best epoch: 1" in out
