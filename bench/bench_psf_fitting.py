"""PSF-core refitting: the hand-written fitter against photutils, on the PSF-robustness fields.

Issue 22 asks whether the field's library can do the PSF-core stage's job: this bench runs the
hand-written DAOPHOT-style fitter (``astrorestore.postprocess.psf_cores.PSFCores``) and the same
stage written with photutils (``astrorestore.postprocess.psf_photutils.PhotutilsPSFCores``:
``EPSFBuilder`` + ``PSFPhotometry``, same star selection and blend rule) on the held-out fields
of ``bench_psf_robustness.py`` (same cells, seeds, scene and noise), and scores, per cell, in
electrons against the noiseless truth:

- core PSNR: over the pixels within 2 FWHM of the bright isolated stars (true peak >= 1000 e-
  above the sky), data range = the truth's 0.5-99.5 percentile range of the whole field;
- the bright stars' restored/true peak-pixel ratio (median) and FWHM ratio (photutils
  ``fit_fwhm``), as in the PSF-robustness table;
- flux bias: median relative aperture-flux error (r = 2 FWHM) of the stars at S/N > 10;
- stars whose cores were fitted / replaced, and the wall time of the stage per field.

The frame whose cores are refitted is the noisy input itself (the stage runs on any
restoration; ``--ckpt PATH`` refits a checkpoint's restoration instead). Usage:

    python bench/bench_psf_fitting.py --fields 1 --size 256

writes ``bench/results/psf_fitting.{md,json}``. ``--photutils key=value`` (repeatable) passes a
setting to the photutils stage (e.g. ``oversampling=4``, ``local_background=true``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from psf_cells import (  # noqa: E402
    CELLS,
    GAIN,
    HELD_OUT_SEED,
    READ_NOISE,
    SCENE,
    aperture_errors,
    bright_stars,
    star_shapes,
)

from astrorestore.metrics.image_quality import psnr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def field(index: int, number: int, size: int, seed: int = HELD_OUT_SEED):
    """Field ``number`` of cell ``index``: truth, catalogue and noisy frame (electrons), drawn
    exactly as ``bench_psf_robustness.score_cell`` draws them."""
    from astrorestore.data.corruption.noise import PoissonGaussianNoise
    from astrorestore.data.simulation.scene import render_field

    cell = CELLS[index]
    psf = {k: v for k, v in cell.items() if k != "name"}
    seq = np.random.SeedSequence([seed, index]).spawn(number + 1)[number]
    truth, catalog = render_field(size, np.random.default_rng(seq), **SCENE, **psf)
    gen = torch.Generator().manual_seed(seed + 1000 * index + number)
    noise = PoissonGaussianNoise(gain=GAIN, read_noise=READ_NOISE)
    return truth, catalog, noise.draw(torch.from_numpy(truth), gen).numpy()


def core_mask(shape, stars, fwhm: float) -> np.ndarray:
    """True within 2 FWHM of the given stars' true positions."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for _, _, x, y in stars:
        mask |= np.hypot(xx - x, yy - y) <= 2.0 * fwhm
    return mask


def score(out, truth, catalog, fwhm, stars, data_range) -> dict:
    mask = core_mask(truth.shape, stars, fwhm)
    peaks, fwhms = star_shapes(out, truth, stars, fwhm)
    return {
        "core_psnr": psnr(out[mask], truth[mask], data_range) if mask.any() else float("nan"),
        "peak": peaks.tolist(),
        "fwhm": fwhms.tolist(),
        "flux": aperture_errors(out, truth, catalog, fwhm).tolist(),
    }


def summarise(parts: list[dict]) -> dict:
    def median(key):
        values = np.concatenate([p[key] for p in parts])
        return float(np.median(values)) if values.size else float("nan")

    return {
        "core_psnr_dB": float(np.mean([p["core_psnr"] for p in parts])),
        "bright_stars": int(sum(len(p["peak"]) for p in parts)),
        "peak_ratio_median": median("peak"),
        "fwhm_ratio_median": median("fwhm"),
        "flux_bias": median("flux"),
        "stars_fitted": int(sum(p.get("stars_fitted", 0) for p in parts)),
        "stars_replaced": int(sum(p.get("stars_replaced", 0) for p in parts)),
        "seconds_per_field": float(np.mean([p.get("seconds", 0.0) for p in parts])),
        "notes": sorted({p["note"] for p in parts if p.get("note")}),
    }


def run_cell(index: int, stages: dict, restore, size: int, n_fields: int) -> dict:
    fwhm = float(CELLS[index]["psf_fwhm"])
    parts: dict = {"input": [], **{name: [] for name in stages}}
    for number in range(n_fields):
        truth, catalog, noisy = field(index, number, size)
        restored = restore(noisy)
        data_range = float(np.subtract(*np.percentile(truth, [99.5, 0.5])))
        stars = bright_stars(truth, catalog, fwhm)
        parts["input"].append(score(restored, truth, catalog, fwhm, stars, data_range))
        for name, make in stages.items():
            stage = make()
            start = time.perf_counter()
            out = stage(noisy, restored)
            seconds = time.perf_counter() - start
            row = score(out, truth, catalog, fwhm, stars, data_range)
            info = stage.info
            row.update(
                seconds=seconds,
                stars_fitted=info.get("stars_fitted", 0),
                stars_replaced=info.get("stars_replaced", 0),
                note=info.get("note"),
            )
            parts[name].append(row)
    return {name: summarise(rows) for name, rows in parts.items()}


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "# PSF-core refitting: hand-written fitter vs photutils",
        "",
        f"`{meta['command']}`  ",
        f"{meta['fields']} held-out {meta['size']}x{meta['size']} field(s) per cell of the "
        f"PSF-robustness bench (seed {HELD_OUT_SEED}); refitted frame: {meta['input']}. Core "
        "PSNR in electrons within 2 FWHM of the bright isolated stars (data range = truth's "
        "0.5-99.5 percentile range); peak and FWHM ratios of those stars; flux bias = median "
        "aperture-flux error (r = 2 FWHM) of stars at S/N > 10; stars fitted/replaced summed "
        f"over fields; time per field ({meta['timing']}).",
        "",
        "| cell | method | core PSNR (dB) | vs input | peak med | FWHM ratio | flux bias "
        "| stars fitted/replaced | s/field |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, rows in results.items():
        base = rows["input"]["core_psnr_dB"]
        for name, r in rows.items():
            lines.append(
                f"| {cell} | {name} | {r['core_psnr_dB']:.2f} | {r['core_psnr_dB'] - base:+.2f} | "
                f"{r['peak_ratio_median']:.3f} | {r['fwhm_ratio_median']:.3f} | "
                f"{100 * r['flux_bias']:+.2f}% | {r['stars_fitted']}/{r['stars_replaced']} | "
                f"{r['seconds_per_field']:.2f} |"
            )
    names = [n for n in next(iter(results.values())) if n != "input"]
    if len(names) == 2:
        a, b = names
        gap = [rows[b]["core_psnr_dB"] - rows[a]["core_psnr_dB"] for rows in results.values()]
        bias = [
            100 * (abs(rows[b]["flux_bias"]) - abs(rows[a]["flux_bias"]))
            for rows in results.values()
        ]
        time_a = sum(rows[a]["seconds_per_field"] for rows in results.values())
        time_b = sum(rows[b]["seconds_per_field"] for rows in results.values())
        lines += [
            "",
            f"**{b} - {a}**: core PSNR {np.mean(gap):+.2f} dB on average (range "
            f"{min(gap):+.2f} to {max(gap):+.2f}); |flux bias| {np.mean(bias):+.2f} points on "
            f"average (max {max(bias):+.2f}); time x{time_b / max(time_a, 1e-9):.1f} "
            f"({time_b:.1f} s vs {time_a:.1f} s over the cells, one field each).",
        ]
    for cell, rows in results.items():
        for name, r in rows.items():
            for note in r["notes"]:
                lines.append(f"- {cell}, {name}: {note}")
    return "\n".join(lines) + "\n"


def stages_for(photutils_options: dict) -> dict:
    from astrorestore.postprocess.psf_cores import PSFCores
    from astrorestore.postprocess.psf_photutils import PhotutilsPSFCores

    return {
        "hand-written": lambda: PSFCores(gain=GAIN),
        "photutils": lambda: PhotutilsPSFCores(gain=GAIN, **photutils_options),
    }


def restorer_for(ckpt: str | None):
    """The frame to refit: the noisy input itself, or a checkpoint's restoration of it."""
    if ckpt is None:
        return lambda noisy: noisy
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.restorer import load_restorer

    restorer = load_restorer(ckpt, "cpu")
    return lambda noisy: restore_image(noisy, restorer, tile=256, overlap=32, batch_size=4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=len(CELLS), help="first N cells")
    parser.add_argument(
        "--cell", type=int, action="append", default=[], help="only cell INDEX (repeatable)"
    )
    parser.add_argument("--fields", type=int, default=1, help="fields per cell")
    parser.add_argument("--size", type=int, default=256, help="field size (px)")
    parser.add_argument("--ckpt", default=None, help="refit this checkpoint's restoration")
    parser.add_argument(
        "--photutils",
        action="append",
        default=[],
        help="key=value setting of the photutils stage (repeatable)",
    )
    parser.add_argument(
        "--timing",
        default="wall time on this machine; compare ratios from one run, not absolute seconds",
        help="how the times were taken (goes into the table's caption, e.g. 'under load')",
    )
    parser.add_argument("--out", default=str(RESULTS / "psf_fitting"), help="output stem")
    args = parser.parse_args(argv)
    options = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.photutils)}
    stages = stages_for(options)
    restore = restorer_for(args.ckpt)
    results = {}
    for index in args.cell or range(min(args.cells, len(CELLS))):
        name = CELLS[index]["name"]
        results[name] = run_cell(index, stages, restore, args.size, args.fields)
        print(name, {k: round(v["core_psnr_dB"], 2) for k, v in results[name].items()})
    meta = {
        "command": "python bench/bench_psf_fitting.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "size": args.size,
        "fields": args.fields,
        "input": f"checkpoint {args.ckpt}" if args.ckpt else "the noisy input",
        "timing": args.timing,
        "photutils_options": options,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "cells": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, meta))
    print(out.with_suffix(".md").read_text())
    return results


if __name__ == "__main__":
    main()
