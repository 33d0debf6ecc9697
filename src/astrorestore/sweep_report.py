"""Rank the jobs of a Hydra multirun by their best validation metric.

``python -m astrorestore.sweep_report logs/train/multiruns/<date>_<time> [--metric val/psnr]``

Each job's ``summary.json`` records the run's monitor and whether higher or lower is better;
the report ranks by that monitor and mode unless ``--metric`` (and ``--mode``) say otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from astrorestore.sweep_review import find_jobs, rank


def collect(sweep_dir: Path, metric: str | None = None, mode: str | None = None) -> list[dict]:
    """One row per job, best first, failed jobs (``failed.txt``) last with no value.
    ``metric``/``mode`` default to the jobs' own monitor. The jobs are found and ranked as
    :mod:`astrorestore.sweep_review` does."""
    jobs = find_jobs(sweep_dir) if sweep_dir.is_dir() else []
    metric, mode = rank(jobs, metric, mode)
    return [
        {
            "job": job["job"],
            "overrides": " ".join(job["overrides"]),
            "metric": metric,
            "mode": mode,
            "value": job["value"],
            "epoch": job["epoch"],
            "checkpoint": job.get("checkpoint"),
            "failed": job["source"].startswith("failed"),
        }
        for job in jobs
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="default: each run's monitor")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    args = parser.parse_args(argv)
    try:
        rows = collect(args.sweep_dir, args.metric, args.mode)
    except ValueError as exc:
        print(f"error: {exc}; pass --metric", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"error: no */summary.json or failed.txt under {args.sweep_dir}; is it a multirun "
            "folder?",
            file=sys.stderr,
        )
        return 2
    metric, mode = rows[0]["metric"], rows[0]["mode"]
    table = Table(title=f"{args.sweep_dir} ranked by best {metric} ({mode})")
    for column in ("job", "overrides", metric, "best epoch", "checkpoint"):
        table.add_column(column)
    for row in rows:
        value = (
            "failed" if row["failed"] else "-" if row["value"] is None else f"{row['value']:.3f}"
        )
        table.add_row(
            row["job"], row["overrides"], value, str(row["epoch"]), str(row["checkpoint"])
        )
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
