"""Every ``bench/*.py`` script runs at its smallest budget and writes finite figures.

A benchmark is a second way into the package (composed configs, restorers, metrics): one that
no longer runs, or writes NaN where a figure belongs, fails here instead of on the day someone
wants its table. Each case runs the script as a user would, into ``tmp_path``, and reads the
headline numbers of its result file. The ones that need a trained checkpoint share one tiny
training run; cases that take more than ~30 s on a 2-core CPU are marked slow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_script

BENCH = REPO / "bench"
# Modules of bench/ that are not scripts.
HELPERS = {"common.py", "psf_cells.py"}


@dataclass
class Case:
    """How to run one bench at its smallest budget and what it must write.

    ``args`` may contain ``{out}`` (a folder under tmp_path) and ``{ckpt}`` (a tiny trained
    checkpoint); ``numbers`` maps a result file to key paths (``*`` = every key or item)
    whose values must all be finite, and at least one of them present."""

    args: list[str]
    numbers: dict[str, list[tuple]]
    files: list[str] = field(default_factory=list)
    slow: bool = False
    needs: str | None = None  # an optional package the bench cannot run without


CASES = {
    "bench_self_supervised.py": Case(
        ["--smoke", "--out", "{out}/self_supervised"],
        {
            "self_supervised.json": [
                ("n2v", "*", "psnr_e"),
                ("r2r", "*", "psnr_e"),
                ("noisy input", "*", "sky_noise_ratio"),
            ]
        },
        files=["self_supervised.md"],
    ),
    "bench_simdata.py": Case(
        ["--smoke", "--out", "{out}"],
        {"simdata.json": [("render_ms", "*", "mean"), ("batch_ms", "*", "cpu")]},
        files=["realistic_fields.png"],
    ),
    "bench_data_pipeline.py": Case(
        ["--smoke", "--out", "{out}"],
        {
            "data_pipeline.json": [
                ("data_pipeline_patches_per_s",),
                ("training_step_patches_per_s",),
            ]
        },
    ),
    "bench_fits_tiling.py": Case(
        ["--smoke", "--out", "{out}"],
        {"fits_tiling.json": [("tiles_per_s",), ("patches_per_s",), ("cache_hit_s",)]},
    ),
    "evaluate.py": Case(
        ["--smoke", "--out", "{out}"],
        {"results.json": [("*", "all", "psnr_db"), ("*", "all", "sky_noise_ratio")]},
        files=["results.md"],
    ),
    "bench_speed.py": Case(
        ["--smoke", "--out", "{out}"],
        {"speed.json": [("training", "*", "train_patches_per_s"), ("inference", "*", "mp_per_s")]},
    ),
    "bench_generative.py": Case(
        ["--smoke", "--out", "{out}"],
        {
            "generative.json": [
                ("colorization", "cgan_ycbcr", "delta_e"),
                ("super_resolution", "table", "sr3_residual_v", "ssim"),
                ("super_resolution", "table", "bicubic", "consistency"),
            ]
        },
    ),
    "bench_colorize_realism.py": Case(
        ["--smoke", "--diagnose", "--out", "{out}"],
        {
            "colorize_realism.json": [
                ("rows", "*", "delta_e2000"),
                ("rows", "*", "colourfulness_ratio"),
                ("rows", "*", "chroma_swd"),
                ("rows", "cgan", "gradient_ratio_adversarial_to_l1"),
            ]
        },
        files=["colorize_realism.md", "colorize_realism.png"],
        slow=True,
    ),
    "bench_sr3_steps.py": Case(
        ["--smoke", "--parts", "references,steps,diagnose,stars", "--out", "{out}"],
        {
            "sr3_steps.json": [
                ("variants", "shipped", "ddim", "*", "power_high"),
                ("variants", "shipped", "samples", "coverage_1sigma"),
                ("variants", "shipped", "x0_by_level", "*", "x0_rms_error"),
                ("sr_regression", "consistency"),
            ],
            "sr3_star_fields.json": [("*", "centroid_error_px"), ("*", "flux_bias")],
        },
        files=["sr3_steps.md", "sr3_steps.png"],
        slow=True,
    ),
    "bench_generative_axes.py": Case(
        ["--smoke", "--out", "{out}/generative_axes"],
        {
            "generative_axes.json": [
                ("regions", "*", "rows", "bicubic", "psnr"),
                ("regions", "*", "rows", "bicubic", "consistency_sigma"),
            ]
        },
        files=["generative_axes.md"],
    ),
    "bench_supervised.py": Case(
        ["--smoke", "--ckpt", "{ckpt}", "--out", "{out}"],
        {
            "supervised.json": [
                ("held_out_field", "psnr_electrons_dB", "*"),
                ("seams", "*"),
                ("speed", "*"),
            ]
        },
        files=["supervised.png"],
    ),
    "bench_demo_frames.py": Case(
        ["--ckpt", "tiny={ckpt}", "--out", "{out}/demo_frames"],
        {"demo_frames.json": [("results", "tiny", "psnr_e_restored")]},
        files=["demo_frames.md"],
    ),
    "bench_faint_flux.py": Case(
        ["--ckpt", "tiny={ckpt}", "--fields", "1", "--size", "96", "--out", "{out}/faint_flux"],
        {"faint_flux.json": [("results", "tiny", "*", "psnr_gain_dB")]},
        files=["faint_flux.md", "faint_flux.png"],
    ),
    "bench_psf_robustness.py": Case(
        [
            "--ckpt",
            "tiny={ckpt}",
            "--cells",
            "1",
            "--fields",
            "1",
            "--size",
            "64",
            "--out",
            "{out}/psf_robustness",
        ],  # fmt: skip
        {"psf_robustness.json": [("cells", "*", "*", "psnr_e_dB")]},
        files=["psf_robustness.md"],
    ),
    "bench_psf_fitting.py": Case(
        ["--cells", "1", "--fields", "1", "--size", "128", "--out", "{out}/psf_fitting"],
        {
            "psf_fitting.json": [
                ("cells", "*", "hand-written", "core_psnr_dB"),
                ("cells", "*", "photutils", "flux_bias"),
            ]
        },
        files=["psf_fitting.md"],
    ),
    "bench_real_frames.py": Case(
        [
            "--smoke",
            "--ckpt",
            "pretrained",
            "--frames",
            "m13,xdf_vig",
            "--figures",
            "{out}/figures",
            "--out",
            "{out}/real_frames",
        ],  # fmt: skip
        {
            "real_frames.json": [
                ("rows", "*", "psnr"),
                ("rows", "*", "worst_bias_sigma"),
                # m13's noisy and pretrained rows (its corner holds galaxies; xdf_vig's dark
                # corner none, so its profile biases are n/a).
                ("rows", 0, "profile_bias_worst"),
                ("rows", 3, "profile_bias_median"),
                ("frames", "*", "galaxy_annuli"),
            ]
        },
        files=["real_frames.md", "figures/m13_r3.png", "figures/xdf_vig_r3.png"],
    ),
    "careamics_rows.py": Case(
        [
            "--train",
            "{out}/train.npy",
            "--test",
            "{out}/test.npy",
            "--out",
            "{out}/careamics",
            "--steps",
            "2",
            "--batch",
            "2",
            "--patch",
            "32",
        ],  # fmt: skip
        {"careamics/careamics.json": [("rows", "*", "steps")]},
        needs="careamics",
    ),
}


def test_every_bench_script_has_a_case():
    scripts = {path.name for path in BENCH.glob("*.py")} - HELPERS
    assert scripts == set(CASES), "add a Case for each new bench script (or drop a stale one)"


def test_benches_do_not_import_each_other():
    # Shared helpers live in bench/common.py: a bench importing another runs that one's
    # module code and ties two scripts' command lines together.
    scripts = {path.stem for path in BENCH.glob("*.py")} - {Path(h).stem for h in HELPERS}
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        for other in scripts - {path.stem}:
            assert f"from {other} import" not in text and f"import {other}\n" not in text, (
                f"{path.name} imports {other}"
            )


def values_at(record, path: tuple) -> list:
    """The values at a key path; ``*`` takes every key of a dict or item of a list."""
    if not path:
        return [record]
    head, rest = path[0], path[1:]
    if head == "*":
        children = record.values() if isinstance(record, dict) else record
        return [value for child in children for value in values_at(child, rest)]
    if isinstance(record, list):
        return values_at(record[int(head)], rest)
    return values_at(record[head], rest) if head in record else []


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    """One epoch of the default experiment at debug=tiny: the checkpoint benches score."""
    root = tmp_path_factory.mktemp("bench_ckpt")
    result = run_script(
        "train.py",
        "debug=tiny",
        "logger=csv",
        "trainer.max_epochs=1",
        "test=false",
        root=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((root / "logs" / "train" / "runs").iterdir())
    return json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]


def _careamics_inputs(out: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(out / "train.npy", rng.normal(20, 5, (2, 64, 64)).astype(np.float32))
    np.save(out / "test.npy", rng.normal(20, 5, (1, 64, 64)).astype(np.float32))


def _params():
    for name, case in CASES.items():
        marks = [pytest.mark.slow] if case.slow else []
        yield pytest.param(name, marks=marks, id=name.removesuffix(".py"))


@pytest.mark.parametrize("script", list(_params()))
def test_bench_runs_at_its_smallest_budget(script, tmp_path, request):
    case = CASES[script]
    if case.needs:
        pytest.importorskip(case.needs)
    out = tmp_path / "out"
    out.mkdir()
    if script == "careamics_rows.py":
        _careamics_inputs(out)
    ckpt = (
        request.getfixturevalue("tiny_checkpoint") if any("{ckpt}" in a for a in case.args) else ""
    )
    args = [a.format(out=out, ckpt=ckpt) for a in case.args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    for name in case.files:
        assert (out / name).is_file(), f"{script} did not write {name}"
    for name, paths in case.numbers.items():
        record = json.loads((out / name).read_text())
        for path in paths:
            values = values_at(record, path)
            assert values, f"{name}: nothing at {path}"
            bad = [v for v in values if not (isinstance(v, int | float) and math.isfinite(v))]
            assert not bad, f"{name}: {path} has non-finite values {bad}"


@pytest.mark.slow  # one train.py + infer.py per frame
def test_real_frames_adapted_row(tmp_path):
    """``--adapt``: the shipped weights fine-tuned on each noisy frame alone get a scored row;
    ``--adapt n2n:scratch`` trains Noise2Noise on the frame's pair of draws."""
    out = tmp_path / "out"
    args = ["--smoke", "--ckpt", "pretrained", "--adapt", "n2v", "--adapt", "n2n:scratch"]
    args += ["--frames", "m13", "--adapt-epochs", "1", "--adapt-patches", "16"]
    args += ["--out", str(out / "real_frames")]  # (was the stem "out": no out/real_frames.json)
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    result = subprocess.run(
        [sys.executable, str(BENCH / "bench_real_frames.py"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    rows = json.loads((out / "real_frames.json").read_text())["rows"]
    adapted = [row for row in rows if row["method"] == "adapted (n2v)"]
    assert adapted and all(math.isfinite(row["psnr"]) for row in adapted)
    n2n = [row for row in rows if row["method"] == "n2n on the frame pair"]
    assert n2n and all(math.isfinite(row["psnr"]) for row in n2n)
