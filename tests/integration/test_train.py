"""Training through the real Hydra entry point (train.py), as a user runs it."""

import json

import pytest
import torch

from tests.integration.conftest import TINY


def test_fast_dev_run(run):
    result = run("train.py", "debug=fast_dev_run", "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]


def test_training_writes_checkpoints_panels_and_summary(trained_run):
    root, run_dir, result = trained_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 3
    assert "val/psnr" in summary["best"] and "val/ssim" in summary["best"]
    best = summary["best_checkpoint"]
    assert best and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "panels").glob("epoch_*.png"))) == 3
    # all three curriculum stages ran (3 epochs: easy, hard, filter)
    assert "stage 3/3 'filter' from epoch 2" in result.stdout + result.stderr
    # the printed summary names the best checkpoint and the PSNR data range
    assert "best checkpoint" in result.stdout and "data range" in result.stdout
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    record = checkpoint["astrorestore"]
    assert record["model"] == "supervised" and record["format"] == 3
    assert record["postprocess"] == {"give_back": None, "psf_cores": None}  # the default: none
    assert record["restorer"]["_target_"].endswith("NetForward") and record["weights"] == "net"
    assert record["io"] == {"in_channels": 1, "out_channels": 1, "scale": 1, "size_multiple": 4}
    assert record["net"]["depth"] == 2 and record["normalizer"]["softening"] == 3.0
    # The best checkpoint holds the best epoch by the run's monitor.
    assert summary["monitor"] == "val/psnr" and summary["mode"] == "max"
    scores = {row["epoch"]: row["val/psnr"] for row in summary["history"]}
    best_epoch = max(scores, key=scores.get)
    assert summary["best_epoch"] == best_epoch and best.endswith(f"best-epoch{best_epoch:03d}.ckpt")
    assert checkpoint["epoch"] == best_epoch
    # LPIPS is never part of the model weights
    assert not any("lpips" in key for key in checkpoint["state_dict"])


def test_training_improves_on_noisy_input(trained_run):
    _, run_dir, _ = trained_run
    best = json.loads((run_dir / "summary.json").read_text())["best"]
    assert best["val/psnr"] > best["val/input/psnr"]


def test_resume_from_checkpoint(trained_run, run, tmp_path):
    _, run_dir, _ = trained_run
    last = run_dir / "checkpoints" / "last.ckpt"
    result = run(
        "train.py",
        *TINY,
        "trainer.max_epochs=4",
        "data.patches_per_epoch=64",
        f"ckpt_path={last}",
        "test=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    # It resumed at epoch 3 (the fourth), in the filter stage, with the saved learning rate.
    summary = json.loads((resumed_dir / "summary.json").read_text())
    history = summary["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]  # the epochs before count too
    # The best is chosen over all four epochs, and the best checkpoint holds that epoch, in the
    # earlier run folder if no resumed epoch beat it.
    scores = {row["epoch"]: row["val/psnr"] for row in history}
    best_epoch = max(scores, key=scores.get)
    assert summary["best_epoch"] == best_epoch
    folder = resumed_dir if best_epoch == 3 else run_dir
    assert summary["best_checkpoint"] == str(
        folder / "checkpoints" / f"best-epoch{best_epoch:03d}.ckpt"
    )
    saved = torch.load(last, map_location="cpu", weights_only=True)
    saved_lr = saved["optimizer_states"][0]["param_groups"][0]["lr"]
    rows = _csv_rows(resumed_dir)
    stage = [float(r["curriculum/stage"]) for r in rows if r.get("curriculum/stage")]
    lrs = [float(r["lr-AdamW"]) for r in rows if r.get("lr-AdamW")]
    assert stage == [2.0]  # 4 epochs: easy 0, hard 1-2, filter 3
    assert lrs and lrs[0] == pytest.approx(saved_lr)
    assert saved["global_step"] > 0


def test_wandb_offline_logger(run, tmp_path):
    result = run("train.py", "debug=tiny", "trainer.max_epochs=1", "logger=wandb", "test=false")
    assert result.returncode == 0, result.stderr[-3000:]
    offline_runs = list(tmp_path.glob("logs/train/runs/*/wandb/offline-run-*"))
    assert offline_runs, "no offline wandb run folder written"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model=supervsied", "model=supervised"),
        ("trainer.max_epoch=2", "trainer.max_epochs"),
        ("data.patch_size=36", "data.patch_size"),
        ("trainer.max_epochs=abc", "is not an integer"),
    ],
)
def test_bad_config_is_one_line_error(run, override, expected):
    result = run("train.py", override, "logger=csv")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]


def test_ddp_on_two_cpu_processes(run):
    result = run(
        "train.py",
        *TINY,
        "trainer=ddp_sim",
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.progress_bar=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _csv_rows(run_dir):
    import csv

    with open(next(run_dir.glob("csv/version_*/metrics.csv"))) as handle:
        return list(csv.DictReader(handle))


def test_summary_history_matches_logged_metrics(trained_run):
    # Each epoch's row must hold that epoch's metrics (not the previous epoch's).
    _, run_dir, _ = trained_run
    history = json.loads((run_dir / "summary.json").read_text())["history"]
    logged = {
        int(row["epoch"]): float(row["val/psnr"]) for row in _csv_rows(run_dir) if row["val/psnr"]
    }
    assert [row["epoch"] for row in history] == [0, 1, 2]
    for row in history:
        assert row["val/psnr"] == pytest.approx(logged[row["epoch"]], rel=1e-6)


@pytest.mark.gpu
def test_one_gpu_bf16(run):
    result = run("train.py", *TINY, "trainer=gpu", "trainer.max_epochs=1", "test=false")
    assert result.returncode == 0, result.stderr[-3000:]
