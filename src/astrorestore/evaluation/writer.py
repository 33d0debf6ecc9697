"""Write evaluation results as a report folder a person and a script can both read.

``report.json`` holds every number (per image and aggregate), the CSV files the per-source and
per-threshold tables, the PNGs the plots, and ``summary.md`` the key numbers with their data
ranges and every warning, plus where the numbers stand against the project's goals. The folder
is built under a temporary name and renamed into place, so a crash never leaves half a report.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from astrorestore.errors import UserError
from astrorestore.evaluation import photometry as phot
from astrorestore.io.images import umask_permissions

# Targets of issue 9; summary.md states where each result stands, met or not.
GOALS = {"depth_gain_mag": 0.75, "spurious_rate": 0.01, "abs_flux_bias": 0.01}


def to_jsonable(value: object) -> object:
    """Plain JSON types; NaN/inf become None so no table or file ever shows NaN."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _numeric_leaves(tree: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numeric_leaves(value, path + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value is not None:
            out[path] = float(value)
    return out


def aggregate(results: list[dict]) -> dict:
    """Mean of every numeric result over images, plus depth and photometry pooled over sources."""
    leaves = [_numeric_leaves({k: v for k, v in r.items() if k != "tables"}) for r in results]
    keys = sorted(set().union(*leaves)) if leaves else []
    means = {}
    for key in keys:
        values = [leaf[key] for leaf in leaves if key in leaf and math.isfinite(leaf[key])]
        if values:
            means[key] = float(np.mean(values))
    pooled: dict = {"n_images": len(results)}
    with_truth = [r for r in results if r.get("has_truth") and "sweep" in r["tables"]]
    if with_truth:
        pooled.update(_pooled_truth(with_truth))
    return {"mean": means, "pooled": pooled}


def _pooled_truth(results: list[dict]) -> dict:
    """Depth, spurious rate and flux bias over the sources of all images together."""
    mags = np.concatenate([r["tables"]["reference_mag"] for r in results])
    out: dict = {}
    for key in ("noisy", "restored"):
        matched = [
            np.concatenate([r["tables"]["sweep_matched"][key][i] for r in results])
            for i in range(len(results[0]["tables"]["sweep"][key]["thresholds"]))
        ]
        n_det = np.sum([r["tables"]["sweep"][key]["n_detected"] for r in results], axis=0)
        n_spur = np.sum([r["tables"]["sweep"][key]["n_spurious"] for r in results], axis=0)
        depth = phot.depth_at_purity(mags, matched, list(n_det), list(n_spur))
        sources = [r["tables"]["sources"] for r in results]
        found = np.concatenate([s[f"found_{key}"] for s in sources]).astype(bool)
        flux = np.concatenate([s[f"flux_{key}"] for s in sources])
        truth = np.concatenate([s["flux_truth"] for s in sources])
        errors = phot.flux_errors(flux[found], truth[found])
        detected = sum(r["detection"][key]["n_detected"] for r in results)
        spurious = sum(r["detection"][key]["n_spurious"] for r in results)
        matched_at = sum(r["detection"][key]["n_recovered"] for r in results)
        reference = sum(r["detection"][key]["n_counted"] for r in results)
        out[key] = {
            "depth_mag": depth["magnitude"],
            "flux_bias": errors["bias"],
            "flux_scatter": errors["scatter"],
            "spurious_rate": spurious / detected if detected else 0.0,
            "recall": matched_at / reference if reference else 0.0,
        }
    a, b = out["noisy"]["depth_mag"], out["restored"]["depth_mag"]
    out["depth_gain_mag"] = None if a is None or b is None else b - a
    return out


def _write_csv(path: Path, columns: dict[str, np.ndarray | list]) -> None:
    """One column per key; NaN written as an empty cell; header only when there are no rows."""
    names = list(columns)
    rows = zip(*(list(np.asarray(columns[n]).tolist()) for n in names), strict=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow(
                ["" if isinstance(v, float) and not math.isfinite(v) else v for v in row]
            )


def _write_tables(folder: Path, result: dict) -> list[str]:
    stem = result["name"]
    tables = result["tables"]
    written = []
    if "sources" in tables:
        _write_csv(folder / f"sources_{stem}.csv", tables["sources"])
        written.append(f"sources_{stem}.csv")
    if "sweep" in tables:
        rows: dict[str, list] = {
            k: []
            for k in ("image", "threshold", "precision", "recall", "f1", "n_detected", "n_spurious")
        }
        for image, sweep in tables["sweep"].items():
            for i, threshold in enumerate(sweep["thresholds"]):
                rows["image"].append(image)
                rows["threshold"].append(threshold)
                for key in ("precision", "recall", "f1", "n_detected", "n_spurious"):
                    rows[key].append(sweep[key][i])
        _write_csv(folder / f"sweep_{stem}.csv", rows)
        written.append(f"sweep_{stem}.csv")
    spectrum = tables["power_spectrum"]
    _write_csv(folder / f"power_spectrum_{stem}.csv", spectrum)
    written.append(f"power_spectrum_{stem}.csv")
    return written


def check_report_dir(report_dir: str | Path, keep: Iterable[str | Path] = ()) -> None:
    """Refuse a report folder whose replacement would delete anything but an earlier report.

    A report replaces its folder whole, so the folder must be new, empty or an earlier report
    (every entry listed in its ``report.json``), and hold none of the paths in ``keep`` (inputs,
    outputs, truths)."""
    target = Path(report_dir).expanduser().resolve()
    for path in keep:
        path = Path(path).expanduser().resolve()
        if target == path or target in path.parents:
            raise UserError(
                f"report={report_dir} would replace the folder holding {path}; pass a separate "
                "report folder"
            )
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"report={report_dir} is a file; pass a folder for the report")
    entries = {entry.name for entry in target.iterdir()}
    listed: set[str] = set()
    if "report.json" in entries:
        try:
            listed = set(json.loads((target / "report.json").read_text()).get("files", []))
        except (ValueError, AttributeError, OSError):
            listed = set()
    if entries - listed:
        extra = sorted(entries - listed)[0]
        raise UserError(
            f"report={report_dir} holds {extra}, which is not part of an earlier report, and a "
            "report replaces its folder whole; pass a new or empty folder"
        )


def write_report(
    results: list[dict],
    report_dir: str | Path,
    title: str = "astrorestore evaluation",
    generative: list[dict] | None = None,
) -> Path:
    """Write report.json, CSV tables, PNG plots and summary.md into ``report_dir`` (atomically;
    an existing folder is replaced only if it holds nothing but an earlier report).

    ``generative``: two-axis rows (:func:`astrorestore.evaluation.generative.score_frame`) of
    generative outputs, kept under ``report.json``'s ``generative`` (with their means) and as a
    table in summary.md."""
    from astrorestore.evaluation.generative import generative_markdown, mean_measures
    from astrorestore.evaluation.plots import write_plots
    from astrorestore.evaluation.summary import summary_markdown

    check_report_dir(report_dir)
    generative = generative or []
    if not results and not generative:
        raise UserError("no images were evaluated: pass at least one input (is the folder empty?)")
    names = [r["name"] for r in [*results, *generative]]
    if len(set(names)) != len(names):
        raise UserError("evaluated images have duplicate names: give each image a unique name=")
    target = Path(report_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        umask_permissions(temp)
        summary = aggregate(results) if results else {}
        files = []
        for result in results:
            files += _write_tables(temp, result)
        files += write_plots(temp, results) if results else []
        payload = {
            "title": title,
            "images": [{k: v for k, v in r.items() if k != "tables"} for r in results],
            "aggregate": summary,
            "files": sorted(files + ["report.json", "summary.md"]),
        }
        text = summary_markdown(title, results, summary, GOALS) if results else f"# {title}\n"
        if generative:
            payload["generative"] = {"images": generative, "mean": mean_measures(generative)}
            text += generative_markdown(generative)
        (temp / "report.json").write_text(json.dumps(to_jsonable(payload), indent=2))
        (temp / "summary.md").write_text(text)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            temp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target
