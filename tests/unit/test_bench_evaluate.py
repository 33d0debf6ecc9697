"""bench/evaluate.py: checkpoints are checked before any work and told apart in the tables."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from astrorestore.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_evaluate", REPO / "bench" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_runs_last_checkpoints_get_distinct_labels(bench, tmp_path):
    # Both were "ckpt:last": one report folder written over the other, two identical rows.
    a = tmp_path / "runs" / "A" / "checkpoints" / "last.ckpt"
    b = tmp_path / "runs" / "B" / "checkpoints" / "last.ckpt"
    other = tmp_path / "best.ckpt"
    labels = bench.checkpoint_labels([str(a), str(b), str(other)])
    assert labels == ["ckpt:A/checkpoints/last", "ckpt:B/checkpoints/last", "ckpt:best"]
    assert bench.checkpoint_labels([str(other)]) == ["ckpt:best"]
    with pytest.raises(UserError, match="given twice"):
        bench.checkpoint_labels([str(a), str(a)])


def test_a_checkpoint_that_is_not_a_grey_denoiser_is_refused_up_front(bench):
    def load(path):
        return SimpleNamespace(name="sr3", in_channels=3, out_channels=3, scale=2)

    with pytest.raises(UserError, match="--ckpt sr3.ckpt: model sr3 .* x2"):
        bench.load_checkpoints(["sr3.ckpt"], load)


def test_a_missing_checkpoint_exits_2_before_any_field_is_scored(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "evaluate.py"), "--methods", "noisy"]
        + ["--size", "64", "--fields", "1", "--fwhms", "2.5", "--out", str(tmp_path / "o")]
        + ["--ckpt", str(tmp_path / "nope.ckpt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith("error: checkpoint not found")
    assert "noisy:" not in result.stdout  # nothing was run before the check


@pytest.mark.parametrize(
    ("option", "value"), [("--fwhms", "abc"), ("--fwhms", "2.5,-1"), ("--fields", "0")]
)
def test_bad_options_exit_2_with_one_line(tmp_path, option, value):
    # --fwhms abc ended in a ValueError traceback; --fields 0 in "is the folder empty?".
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "evaluate.py"), option, value]
        + ["--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"argument {option}" in result.stderr and "Traceback" not in result.stderr
