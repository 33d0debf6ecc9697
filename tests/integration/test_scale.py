"""Scale features in real runs: exact resume after a kill, NaN guard, sweeps, SLURM, DDP."""

import json
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from astrorestore.errors import UserError
from astrorestore.sweep_review import find_jobs, main, rank
from astrorestore.train import sweep_direction
from tests.conftest import REPO
from tests.integration.sweep_models import skip_if_model_missing

SHORT = [
    "debug=tiny",
    "logger=csv",
    "test=false",
    "callbacks.progress_bar=null",
    "callbacks.image_panels=null",
]
# 4 batches per epoch (tiny: 16 patches, batch 4), 3 epochs = 12 steps, a checkpoint every 3.
RESUMABLE = [*SHORT, "trainer.max_epochs=3", "callbacks=step_checkpoint"]
RESUMABLE += ["callbacks.step_checkpoint.every_n_train_steps=3"]
MODELS = sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
# One model per kind of training step runs DDP by default (the default regression model has
# tests/integration/test_train.py::test_ddp_on_two_cpu_processes); the rest with --runslow.
DDP_DEFAULT = {"n2v", "cgan_colorize", "sr3"}
DDP_MODELS = [m if m in DDP_DEFAULT else pytest.param(m, marks=pytest.mark.slow) for m in MODELS]


@pytest.fixture
def with_test_callbacks(monkeypatch):
    """Let the runs import tests.integration.faults (fault-injection callbacks)."""
    paths = [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


def _run_dir(root):
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    return run_dir


def _checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("kill_at", [7, pytest.param(10, marks=pytest.mark.slow)])
def test_kill_and_resume_matches_uninterrupted_run(tmp_path, with_test_callbacks, kill_at):
    """Killed at step ``kill_at`` (last.ckpt from step 6: mid-epoch; from step 9: after the
    first batch of the last curriculum stage), the resumed run ends where the uninterrupted run
    ends: same step count, same weights."""
    from tests.conftest import run_script

    for name in ("whole", "killed", "resumed"):
        (tmp_path / name).mkdir()
    whole = run_script("train.py", *RESUMABLE, root=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run_script(
        "train.py",
        *RESUMABLE,
        "+callbacks.kill._target_=tests.integration.faults.KillAt",
        f"+callbacks.kill.step={kill_at}",
        root=tmp_path / "killed",
    )
    assert killed.returncode == -9  # SIGKILL: no clean-up, no final checkpoint
    last = _run_dir(tmp_path / "killed") / "checkpoints" / "last.ckpt"
    assert _checkpoint(last)["global_step"] == kill_at - 1
    resumed = run_script("train.py", *RESUMABLE, f"ckpt_path={last}", root=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = _checkpoint(_run_dir(tmp_path / "whole") / "checkpoints" / "last.ckpt")
    got = _checkpoint(_run_dir(tmp_path / "resumed") / "checkpoints" / "last.ckpt")
    assert got["global_step"] == expected["global_step"] == 12
    assert got["epoch"] == expected["epoch"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key


def test_ctrl_c_keeps_summary_and_names_the_checkpoint_to_resume(
    run, tmp_path, with_test_callbacks
):
    # Ctrl-C in the second epoch (step 5 of 4 per epoch): the finished epoch is summarised and
    # the message names the last checkpoint, written at the end of the first epoch.
    result = run(
        "train.py",
        *SHORT,
        "trainer.max_epochs=2",
        "+callbacks.stop._target_=tests.integration.faults.InterruptAt",
        "+callbacks.stop.step=5",
    )
    assert result.returncode == 130, result.stderr[-3000:]  # 128 + SIGINT, as shells expect
    run_dir = _run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and [r["epoch"] for r in summary["history"]] == [0]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "interrupted at step 5 (epoch 1)" in result.stderr
    assert f"resume with ckpt_path={last}" in result.stderr.replace("\n", "")
    assert _checkpoint(last)["global_step"] == 4


def test_nan_guard_stops_real_run_and_keeps_last_good_checkpoint(
    run, tmp_path, with_test_callbacks
):
    result = run(
        "train.py",
        *RESUMABLE,
        "+callbacks.nan._target_=tests.integration.faults.NanWeightsAt",
        "+callbacks.nan.step=7",
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "non-finite loss (nan) at step 7" in errors[0]
    last = _run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    assert str(last) in errors[0]
    kept = _checkpoint(last)
    assert kept["global_step"] == 6
    assert all(torch.isfinite(value).all() for value in kept["state_dict"].values())


def test_crashed_job_does_not_stop_the_sweep(run, tmp_path, with_test_callbacks, capsys):
    result = run(
        "train.py",
        "-m",
        *SHORT,
        "trainer.max_epochs=1",
        "+callbacks.nan._target_=tests.integration.faults.NanWeightsAt",
        "+callbacks.nan.step=0,1000",
    )
    # The sweep finished its other job, then exits 1 naming the failed one.
    assert result.returncode == 1, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "1 job(s) of the sweep failed" in error and str(sweep_dir / "0") in error
    assert "non-finite loss" in (sweep_dir / "0" / "failed.txt").read_text()
    assert (sweep_dir / "1" / "summary.json").is_file()
    rows = find_jobs(sweep_dir)
    rank(rows, None, None)
    assert [row["job"] for row in rows] == ["1", "0"]  # the failed job ranks last
    assert rows[0]["value"] is not None and rows[1]["value"] is None
    # Run tags, git commit and the job's overrides reach the logger's hyper-parameters.
    hparams = (sweep_dir / "1" / "csv" / "version_0" / "hparams.yaml").read_text()
    assert "model:supervised" in hparams and "commit:" in hparams
    assert "callbacks.nan.step=1000" in hparams
    assert main([str(sweep_dir)]) == 0
    assert (sweep_dir / "sweep_review.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_each_sweep_runs_under_fast_dev_run(run, tmp_path, sweep):
    skip_if_model_missing(sweep)
    extra = ["hydra.sweeper.n_trials=1"] if sweep.startswith("optuna") else []
    result = run(
        "train.py", "-m", "-cd", str(REPO / "sweeps"), "-cn", sweep,
        "debug=fast_dev_run", "logger=csv", "callbacks.progress_bar=null", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert not list(sweep_dir.rglob("failed.txt"))
    assert len([p for p in sweep_dir.iterdir() if p.name.isdigit()]) >= 1


@pytest.mark.slow
def test_optuna_sweep_of_two_trials(run, tmp_path):
    result = run(
        "train.py", "-m", "-cd", str(REPO / "sweeps"), "-cn", "optuna_lr",
        "hydra.sweeper.n_trials=2", *SHORT, "trainer.max_epochs=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    rows = find_jobs(sweep_dir)
    metric, mode = rank(rows, None, None)
    assert (metric, mode) == ("val/psnr", "max") and len(rows) == 2
    # Optuna maximised what train.py returned: the best job's best val/psnr.
    assert results.best_value == pytest.approx(rows[0]["value"])


def test_optuna_direction_follows_the_monitor():
    assert sweep_direction("val/psnr", "auto") == "maximize"
    assert sweep_direction("val/loss", "auto") == "minimize"
    assert sweep_direction("val/psnr", "min") == "minimize"
    with pytest.raises(UserError, match="explicit monitor.metric"):
        sweep_direction("auto", "auto")


def test_slurm_launcher_takes_nodes_and_gpus_from_the_trainer():
    GlobalHydra.instance().clear()
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert cfg.trainer.num_nodes == 2


@pytest.mark.parametrize("model", DDP_MODELS)
def test_ddp_sim_trains_each_model(run, tmp_path, model):
    """Two CPU processes (gloo): the distributed path of every method runs and checkpoints."""
    # debug=tiny sizes the simulated fields; photograph data have their own tiny preset.
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        data_target = compose("train", overrides=[f"model={model}"]).data._target_
    tiny = (
        "debug=tiny_photos"
        if data_target.startswith("astrorestore.data.datamodules.photos")
        else "debug=tiny"
    )
    short = [tiny if arg == "debug=tiny" else arg for arg in SHORT]
    result = run("train.py", f"model={model}", "trainer=ddp_sim", *short, "trainer.max_epochs=1")
    if result.returncode == 2 and "not found" in result.stderr:
        pytest.skip(f"model={model} needs data absent here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (_run_dir(tmp_path) / "checkpoints" / "last.ckpt").is_file()
