"""Rank the jobs of a Hydra multirun by their best validation metric.

``python -m astrorestore.sweep_report logs/train/multiruns/<date>_<time> [--metric val/psnr]``

Each job's ``summary.json`` records the run's monitor and whether higher or lower is better;
the report ranks by that monitor and mode unless ``--metric`` (and ``--mode``) say otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def collect(sweep_dir: Path, metric: str | None = None, mode: str | None = None) -> list[dict]:
    """One row per job, best first. ``metric``/``mode`` default to the jobs' own monitor."""
    rows = []
    for summary_path in sorted(sweep_dir.glob("*/summary.json")):
        job = summary_path.parent
        summary = json.loads(summary_path.read_text())
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = (
            [
                line[2:].strip()
                for line in overrides_file.read_text().splitlines()
                if line.startswith("- ")
            ]
            if overrides_file.is_file()
            else []
        )
        job_metric = metric or summary.get("monitor", "val/psnr")
        rows.append(
            {
                "job": job.name,
                "overrides": " ".join(overrides),
                "metric": job_metric,
                "mode": mode or summary.get("mode", "max"),
                "value": summary.get("best", {}).get(job_metric),
                "epoch": summary.get("best_epoch"),
                "checkpoint": summary.get("best_checkpoint"),
            }
        )
    if len({(row["metric"], row["mode"]) for row in rows}) > 1:
        raise ValueError("jobs of this sweep were judged by different monitors; pass --metric")
    sign = -1.0 if rows and rows[0]["mode"] == "max" else 1.0
    # Jobs without a value (crashed, or the metric never logged) go last.
    return sorted(
        rows,
        key=lambda row: (row["value"] is None, sign * (row["value"] or 0.0)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="default: each run's monitor")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    args = parser.parse_args(argv)
    try:
        rows = collect(args.sweep_dir, args.metric, args.mode)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"error: no */summary.json under {args.sweep_dir}; is it a multirun folder?",
            file=sys.stderr,
        )
        return 2
    metric, mode = rows[0]["metric"], rows[0]["mode"]
    table = Table(title=f"{args.sweep_dir} ranked by best {metric} ({mode})")
    for column in ("job", "overrides", metric, "best epoch", "checkpoint"):
        table.add_column(column)
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        table.add_row(
            row["job"], row["overrides"], value, str(row["epoch"]), str(row["checkpoint"])
        )
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
