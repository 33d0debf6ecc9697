"""sweep_review ranks a sweep's jobs from their files and draws the figure."""

import json

import pytest

from astrorestore.sweep_review import find_jobs, main, rank, read_wandb_records, swept_parameters


def _job(root, name, overrides, psnr=None, monitor="val/psnr", mode="max"):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if psnr is None:
        (job / "failed.txt").write_text("UserError: non-finite loss (nan) at step 3\n")
        return
    history = [{"epoch": e, monitor: psnr - 2 + e} for e in range(3)]
    summary = {"monitor": monitor, "mode": mode, "best": {monitor: psnr}, "best_epoch": 2}
    (job / "summary.json").write_text(json.dumps({**summary, "history": history}))


@pytest.fixture
def sweep(tmp_path):
    _job(tmp_path, "0", ["model.optimizer.lr=0.001", "seed=1"], psnr=30.0)
    _job(tmp_path, "1", ["model.optimizer.lr=0.01", "seed=1"], psnr=32.5)
    _job(tmp_path, "2", ["model.optimizer.lr=0.1", "seed=1"])
    return tmp_path


def test_ranks_best_first_failed_last_and_finds_the_swept_axis(sweep):
    rows = find_jobs(sweep)
    assert rank(rows, None, None) == ("val/psnr", "max")
    assert [row["job"] for row in rows] == ["1", "0", "2"]
    assert rows[-1]["value"] is None and rows[-1]["source"].startswith("failed")
    assert swept_parameters(rows) == ["model.optimizer.lr"]  # seed is the same everywhere


def test_lower_is_better_monitor_ranks_ascending(tmp_path):
    _job(tmp_path, "0", ["a=1"], psnr=0.3, monitor="val/loss", mode="min")
    _job(tmp_path, "1", ["a=2"], psnr=0.2, monitor="val/loss", mode="min")
    rows = find_jobs(tmp_path)
    assert rank(rows, None, None) == ("val/loss", "min")
    assert [row["job"] for row in rows] == ["1", "0"]


def test_cli_prints_table_and_writes_png(sweep, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "model.optimizer.lr" in out and "32.5" in out
    png = (sweep / "sweep_review.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000


def test_empty_folder_and_mixed_monitors_fail_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    _job(tmp_path, "0", ["a=1"], psnr=30.0)
    _job(tmp_path, "1", ["a=2"], psnr=0.2, monitor="val/loss", mode="min")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--metric" in err[-1]


def test_wandb_log_records_are_reassembled_across_chunks(tmp_path):
    # A record split FIRST/MIDDLE/LAST and a FULL one, in the W&B file layout.
    import struct

    def chunk(kind, payload):
        return struct.pack("<IHB", 0, len(payload), kind) + payload

    body = chunk(2, b"ab") + chunk(3, b"cd") + chunk(4, b"ef") + chunk(1, b"xyz")
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b":W&B\xe1\xbe\x00" + body)
    assert read_wandb_records(path) == [b"abcdef", b"xyz"]


def test_sweep_report_lists_failed_jobs_last(sweep, capsys):
    from astrorestore import sweep_report

    rows = sweep_report.collect(sweep)
    assert [(row["job"], row["failed"]) for row in rows] == [
        ("1", False),
        ("0", False),
        ("2", True),
    ]
    assert rows[-1]["value"] is None
    assert sweep_report.main([str(sweep)]) == 0
    assert "failed" in capsys.readouterr().out
