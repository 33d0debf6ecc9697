"""Rank the jobs of a Hydra multirun by their best validation metric.

``python -m astrorestore.sweep_report logs/train/multiruns/<date>_<time> [--metric val/psnr]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def collect(sweep_dir: Path, metric: str) -> list[dict]:
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
        rows.append(
            {
                "job": job.name,
                "overrides": " ".join(overrides),
                "value": summary.get("best", {}).get(metric),
                "epoch": summary.get("best_epoch"),
                "checkpoint": summary.get("best_checkpoint"),
            }
        )
    return sorted(rows, key=lambda row: -(row["value"] if row["value"] is not None else -1e30))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default="val/psnr")
    args = parser.parse_args(argv)
    rows = collect(args.sweep_dir, args.metric)
    if not rows:
        print(
            f"error: no */summary.json under {args.sweep_dir}; is it a multirun folder?",
            file=sys.stderr,
        )
        return 2
    table = Table(title=f"{args.sweep_dir} ranked by best {args.metric}")
    for column in ("job", "overrides", args.metric, "best epoch", "checkpoint"):
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
