"""Review a sweep without a browser: one table and one figure from the runs' own files.

``python -m astrorestore.sweep_review logs/train/multiruns/<date>_<time> [--metric val/ssim]``

Sources, per job folder (or any folder below the given one):

- ``summary.json`` (written by every finished run): best scores, the monitor and its mode, and
  the per-epoch validation history; the job's overrides come from ``.hydra/overrides.yaml``;
- offline WandB runs (``wandb/offline-run-*/run-*.wandb``, read record by record: summary and
  config, whose ``overrides`` come from :mod:`astrorestore.callbacks.run_tags`), used for jobs
  that have no ``summary.json`` (killed runs, or a folder of WandB runs alone);
- ``failed.txt`` (a job that crashed inside a multirun): listed as failed.

The table ranks the jobs by the monitor (best first, failed last), with one column per swept
parameter. The figure (``sweep_review.png`` in the sweep folder unless ``--out``) shows the
metric against each swept parameter and the validation curve of every job.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


def _overrides(job: Path) -> list[str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(item) for item in (yaml.safe_load(path.read_text()) or [])]


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _params(overrides: list[str]) -> dict[str, Any]:
    return {
        key.lstrip("+~"): _value(value)
        for key, _, value in (item.partition("=") for item in overrides)
    }


def _from_summary(job: Path) -> dict[str, Any]:
    summary = json.loads((job / "summary.json").read_text())
    return {
        "monitor": summary.get("monitor"),
        "mode": summary.get("mode"),
        "best": summary.get("best", {}),
        "epoch": summary.get("best_epoch"),
        "history": summary.get("history", []),
        "overrides": _overrides(job),
        "source": "summary.json",
        "checkpoint": summary.get("best_checkpoint"),
    }


_BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of chunked records
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[bytes]:
    """The serialised records of an offline ``run-*.wandb`` file (W&B's LevelDB-style log:
    a 7-byte file header, then records split into chunks with a 7-byte header each)."""
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
        else:  # zero padding at the end of a file still being written
            break
    return records


def _from_wandb(run_file: Path) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2

    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for raw in read_wandb_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind in ("summary", "config"):
            target = summary if kind == "summary" else config
            for item in getattr(record, kind).update:
                target[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "run":
            for item in record.run.config.update:
                config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    monitor = config.get("monitor") or {}
    best = {
        key.removeprefix("best/"): value
        for key, value in summary.items()
        if key.startswith("best/val/") and isinstance(value, int | float)
    }
    if not best:  # a run that never finished: its last logged validation values
        best = {k: v for k, v in summary.items() if k.startswith("val/")}
    return {
        "monitor": summary.get("monitor") or monitor.get("metric"),
        "mode": monitor.get("mode"),
        "best": best,
        "epoch": summary.get("best/epoch"),
        "history": [],
        "overrides": str(config.get("overrides") or "").split(),
        "source": "wandb",
    }


def find_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job below ``sweep_dir`` as a dict (see the module doc), unranked."""
    jobs: dict[Path, dict[str, Any]] = {}
    for path in sorted(sweep_dir.rglob("summary.json")):
        jobs[path.parent] = _from_summary(path.parent)
    for run_file in sorted(sweep_dir.rglob("offline-run-*/run-*.wandb")):
        job = run_file.parent.parent.parent  # <job>/wandb/offline-run-*/run-*.wandb
        if job not in jobs:
            jobs[job] = _from_wandb(run_file)
    for path in sorted(sweep_dir.rglob("failed.txt")):
        if path.parent not in jobs:
            reason = path.read_text().strip()
            jobs[path.parent] = {
                "monitor": None,
                "mode": None,
                "best": {},
                "epoch": None,
                "history": [],
                "overrides": _overrides(path.parent),
                "source": f"failed: {reason}",
            }
    rows = []
    for job, info in jobs.items():
        info["job"] = str(job.relative_to(sweep_dir)) if job != sweep_dir else job.name
        info["params"] = _params(info["overrides"])
        rows.append(info)
    return rows


def rank(rows: list[dict[str, Any]], metric: str | None, mode: str | None) -> tuple[str, str]:
    """Sort ``rows`` in place, best first; return the metric and mode used."""
    monitors = {(row["monitor"], row["mode"]) for row in rows if row["monitor"]}
    if metric is None:
        if len(monitors) > 1:
            raise ValueError(f"jobs were judged by different monitors {sorted(monitors)}")
        metric, job_mode = next(iter(monitors), ("val/psnr", "max"))
        mode = mode or job_mode
    mode = mode or ("min" if "loss" in metric else "max")
    sign = -1.0 if mode == "max" else 1.0
    for row in rows:
        value = row["best"].get(metric)
        row["value"] = float(value) if isinstance(value, int | float) else None
        if row["value"] is not None and math.isnan(row["value"]):
            row["value"] = None
    rows.sort(key=lambda row: (row["value"] is None, sign * (row["value"] or 0.0), row["job"]))
    return metric, mode


def swept_parameters(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's axes)."""
    keys = sorted({key for row in rows for key in row["params"]})
    return [key for key in keys if len({str(row["params"].get(key)) for row in rows}) > 1]


def plot(rows: list[dict[str, Any]], metric: str, params: list[str], out: Path) -> Path:
    """Metric against each swept parameter, and every job's validation curve, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [row for row in rows if row["value"] is not None]
    panels = max(1, len(params)) + 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    for axis, param in zip(axes[0], params or [None], strict=False):
        if param is None:
            axis.bar(range(len(scored)), [row["value"] for row in scored])
            axis.set_xticks(range(len(scored)), [row["job"] for row in scored], rotation=45)
            axis.set_xlabel("job")
        else:
            values = [row["params"].get(param) for row in scored]
            numeric = all(isinstance(v, float) for v in values)
            xs = values if numeric else [str(v) for v in values]
            axis.scatter(xs, [row["value"] for row in scored])
            if numeric and values and min(values) > 0 and max(values) / min(values) >= 10:
                axis.set_xscale("log")
            axis.set_xlabel(param)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    curves = axes[0][-1]
    for row in rows:
        points = [(h["epoch"], h[metric]) for h in row["history"] if metric in h]
        if points:
            epochs, values = zip(*points, strict=True)
            curves.plot(epochs, values, marker=".", label=row["job"])
    curves.set_xlabel("epoch")
    curves.set_ylabel(f"{metric} (validation)")
    curves.grid(alpha=0.3)
    if len(rows) <= 12 and curves.lines:
        curves.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="default: the jobs' monitor")
    parser.add_argument("--mode", choices=("max", "min"), default=None)
    parser.add_argument("--out", type=Path, default=None, help="figure path (PNG)")
    args = parser.parse_args(argv)
    rows = find_jobs(args.sweep_dir) if args.sweep_dir.is_dir() else []
    if not rows:
        print(
            f"error: no summary.json, offline WandB run or failed.txt under {args.sweep_dir}; "
            "pass a multirun folder (logs/train/multiruns/<date>_<time>)",
            file=sys.stderr,
        )
        return 2
    try:
        metric, mode = rank(rows, args.metric, args.mode)
    except ValueError as exc:
        print(f"error: {exc}; pass --metric", file=sys.stderr)
        return 2
    params = swept_parameters(rows)
    table = Table(title=f"{args.sweep_dir}: {len(rows)} jobs ranked by best {metric} ({mode})")
    for column in ("rank", "job", *params, metric, "best epoch", "source"):
        table.add_column(column)
    for index, row in enumerate(rows, 1):
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        cells = [str(row["params"].get(p, "")) for p in params]
        table.add_row(str(index), row["job"], *cells, value, str(row["epoch"]), row["source"])
    Console(width=200).print(table)
    figure = plot(rows, metric, params, args.out or args.sweep_dir / "sweep_review.png")
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
