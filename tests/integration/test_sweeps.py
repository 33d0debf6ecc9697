"""Each sweep in sweeps/ runs once (tiny settings) and its report ranks the jobs."""

import pytest

from astrorestore.sweep_report import collect, main
from tests.conftest import REPO
from tests.integration.sweep_models import skip_if_model_missing

SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
JOBS = {"learning_rate": 4, "noise_level": 3, "noise_method": 4, "optuna_lr": 2, "n2v_mask_lr": 6}
# Optuna sweeps run as many trials as asked: two here.
EXTRA = {"optuna_lr": ["hydra.sweeper.n_trials=2"]}


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_runs_every_job(run, tmp_path, sweep, capsys):
    skip_if_model_missing(sweep)
    result = run(
        "train.py",
        "-m",
        "-cd",
        str(REPO / "sweeps"),
        "-cn",
        sweep,
        "debug=tiny",
        "logger=csv",
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.progress_bar=null",
        *EXTRA.get(sweep, []),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    rows = collect(sweep_dir, "val/psnr")
    assert len(rows) == JOBS[sweep]
    assert all(row["value"] is not None for row in rows)
    assert rows[0]["value"] >= rows[-1]["value"]
    assert main([str(sweep_dir)]) == 0
    assert rows[0]["job"] in capsys.readouterr().out


def test_report_on_empty_folder(tmp_path):
    assert main([str(tmp_path)]) == 2
