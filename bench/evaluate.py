"""Score restoration methods on held-out simulated fields with the astronomy evaluation.

Every method — the noisy input, the classical baselines (Gaussian, median, bilateral, BM3D after
a variance-stabilising transform when ``bm3d`` is installed) and every checkpoint given — sees
the same fields and the same noise. The fields use seeds and settings that training never used:
seeds 9000+, 512x512 pixels, PSF FWHM 1.6, 2.5 and 3.5 px (training renders 2.5 px only),
sky 20 e-, Poisson + 5 e- read noise at exposure 1, stars down to 50 e- (training: 300 e-)
with flatter number counts, 400 stars and 100 galaxies per 512x512 field.

Writes, under ``--out`` (default ``bench/results/evaluate``):
- ``<method>/``: the full report of each method (report.json, CSVs, plots, summary.md);
- ``results.md``: one table across methods (and one per PSF width), as in docs/evaluation.md;
- ``results.json``: the same numbers; ``methods_*.png``: comparison plots.

Usage:
    python bench/evaluate.py [--ckpt A.ckpt --ckpt B.ckpt]
        [--methods noisy,gaussian,median,bilateral,bm3d_vst] [--out bench/results/evaluate]
        [--fields 3] [--size 512] [--fwhms 1.6,2.5,3.5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED0 = 9000
SKY, GAIN, READ_NOISE = 20.0, 1.0, 5.0
# Training renders 60 stars (300 e- to 3e5 e-, counts slope 1.5) and 25 galaxies per 256x256
# field, whose faintest stars sit right at the noisy frame's detection limit: a depth gain would
# hit the catalog's floor. Held-out fields go fainter (50 e-) with flatter counts (slope 0.5), so
# ~60 % of stars are below 300 e- and the depth a method reaches is measured, not capped.
STARS_PER_PX, GALAXIES_PER_PX = 400 / 512**2, 25 / 256**2
STAR_FLUX_RANGE, FLUX_SLOPE = (50.0, 3e5), 0.5

_RESTORERS: dict[str, object] = {}


def checkpoint_labels(paths: list[str]) -> list[str]:
    """``ckpt:<name>`` per checkpoint, unique: the file stem, or as many of the folders above
    it as tell two of them apart (two runs' ``last.ckpt`` would share one report folder and
    one table row). The same file twice is a UserError."""
    from astrorestore.errors import UserError

    resolved = [Path(p).expanduser().resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise UserError(f"--ckpt {paths[i]} is given twice; pass each checkpoint once")

    def suffix(path: Path, depth: int) -> str:
        parents = path.parent.parts
        return "/".join([*parents[len(parents) - depth + 1 :], path.stem])

    labels = []
    for i, path in enumerate(resolved):
        others = [p for j, p in enumerate(resolved) if j != i]
        depth = 1
        while depth <= len(path.parts) and any(
            suffix(o, depth) == suffix(path, depth) for o in others
        ):
            depth += 1
        labels.append(f"ckpt:{suffix(path, depth)}")
    return labels


def load_checkpoints(paths: list[str], load=None) -> None:
    """Load every checkpoint before any field is rendered, so a missing file or a model that
    is not a grey denoiser at the input's size fails at once, and loading is not timed."""
    from astrorestore.errors import UserError

    if load is None:
        import torch

        from astrorestore.inference.restorer import load_restorer

        device = "cuda" if torch.cuda.is_available() else "cpu"

        def load(path):
            return load_restorer(path, device)

    for path in paths:
        restorer = load(path)
        if (restorer.in_channels, restorer.out_channels, restorer.scale) != (1, 1, 1):
            raise UserError(
                f"--ckpt {path}: model {restorer.name} takes {restorer.in_channels} and gives "
                f"{restorer.out_channels} channel(s) at x{restorer.scale}; this benchmark scores "
                "grey denoisers on simulated fields (infer.py or pipeline.py score the others)"
            )
        _RESTORERS[path] = restorer


def _restore_with_checkpoint(path: str, image: np.ndarray) -> np.ndarray:
    """Restore ``image`` (electrons) with a checkpoint, through infer.py's own path."""
    from astrorestore.inference.restore import restore_image

    return restore_image(image, _RESTORERS[path], tile=256, overlap=32, batch_size=4)


def held_out_fields(n_fields: int, size: int, fwhms: list[float]) -> list[dict]:
    """Noiseless truth, catalog and one noisy draw per (PSF width, seed)."""
    import torch

    from astrorestore.data.corruption.noise import PoissonGaussianNoise
    from astrorestore.data.simulation.scene import render_field

    noise = PoissonGaussianNoise(gain=GAIN, read_noise=READ_NOISE)
    fields = []
    for k, fwhm in enumerate(fwhms):
        for i in range(n_fields):
            seed = SEED0 + 100 * k + i
            truth, catalog = render_field(
                size,
                np.random.default_rng(seed),
                sky=SKY,
                psf_fwhm=fwhm,
                n_stars=round(STARS_PER_PX * size * size),
                n_galaxies=round(GALAXIES_PER_PX * size * size),
                star_flux_range=STAR_FLUX_RANGE,
                flux_slope=FLUX_SLOPE,
            )
            generator = torch.Generator().manual_seed(seed)
            noisy, _ = noise(torch.from_numpy(truth)[None, None], generator)
            fields.append(
                {
                    "name": f"fwhm{fwhm:g}_seed{seed}",
                    "fwhm": fwhm,
                    "truth": truth,
                    "catalog": catalog,
                    "noisy": noisy[0, 0].numpy(),
                }
            )
    return fields


def run_method(name: str, restore, fields: list[dict], out: Path) -> dict:
    """Restore and evaluate every field; write the method's report; return its summary row."""
    from astrorestore.evaluation import evaluate_image, write_report
    from astrorestore.evaluation.writer import aggregate

    results, seconds, pixels = [], 0.0, 0
    for field in fields:
        start = time.perf_counter()
        restored = restore(field["noisy"])
        seconds += time.perf_counter() - start
        pixels += field["noisy"].size
        results.append(
            evaluate_image(
                restored,
                field["noisy"],
                field["truth"],
                catalog=field["catalog"],
                gain=GAIN,
                read_noise=READ_NOISE,
                fwhm=field["fwhm"],
                name=field["name"],
            )
        )
        print(f"  {name} {field['name']}: {results[-1]['detection']['restored']['f1']:.3f} F1")
    folder = write_report(
        results, out / name.replace("/", "_").replace(":", "_"), title=f"{name}: held-out fields"
    )
    by_fwhm = {}
    for fwhm in sorted({f["fwhm"] for f in fields}):
        subset = [r for r, f in zip(results, fields, strict=True) if f["fwhm"] == fwhm]
        by_fwhm[f"{fwhm:g}"] = _row(aggregate(subset))
    return {
        "method": name,
        "seconds_per_megapixel": seconds / (pixels / 1e6),
        "all": _row(aggregate(results)),
        "by_fwhm": by_fwhm,
        "report": str(folder.relative_to(out)),
    }


def _row(aggregate: dict) -> dict:
    mean, pooled = aggregate["mean"], aggregate["pooled"]
    return {
        "psnr_db": mean.get("quality.restored.psnr"),
        "ssim": mean.get("quality.restored.ssim"),
        "psnr_asinh_db": mean.get("quality.normalised.restored.psnr"),
        "data_range_e": mean.get("quality.data_range_e"),
        "sky_noise_ratio": mean.get("quality.empty_sky_noise_ratio"),
        "f1": mean.get("detection.restored.f1"),
        "recall": pooled["restored"]["recall"],
        "spurious_rate": pooled["restored"]["spurious_rate"],
        "flux_bias": pooled["restored"]["flux_bias"],
        "flux_bias_bright": mean.get("photometry.restored.bias_bright"),
        "flux_scatter": pooled["restored"]["flux_scatter"],
        "depth_mag": pooled["restored"]["depth_mag"],
        "depth_gain_mag": pooled["depth_gain_mag"],
        "peak_ratio": mean.get("psf.restored.peak_ratio_median"),
        "fwhm_ratio": mean.get("psf.restored.fwhm_ratio_median"),
        "bright_offset_px": mean.get("astrometry.restored.bright_median_offset_px"),
        "residual_variance": mean.get("residual.variance_ratio"),
    }


COLUMNS = (
    ("PSNR dB", "psnr_db", "{:.2f}"),
    ("SSIM", "ssim", "{:.3f}"),
    ("PSNR asinh dB", "psnr_asinh_db", "{:.2f}"),
    ("sky noise", "sky_noise_ratio", "{:.2f}"),
    ("F1@5σ", "f1", "{:.3f}"),
    ("recall@5σ", "recall", "{:.3f}"),
    ("spurious", "spurious_rate", "{:.1%}"),
    ("flux bias", "flux_bias", "{:+.2%}"),
    ("flux scatter", "flux_scatter", "{:.2%}"),
    ("flux bias S/N≥20", "flux_bias_bright", "{:+.2%}"),
    ("depth gain (mag)", "depth_gain_mag", "{:+.2f}"),
    ("peak ratio", "peak_ratio", "{:.3f}"),
    ("FWHM ratio", "fwhm_ratio", "{:.3f}"),
    ("bright offset px", "bright_offset_px", "{:.4f}"),
    ("s/MPix", "seconds_per_megapixel", "{:.2f}"),
)


def _table(rows: list[dict], fwhm: str | None = None) -> list[str]:
    lines = ["| method | " + " | ".join(c[0] for c in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        numbers = row["all"] if fwhm is None else row["by_fwhm"][fwhm]
        values = {**numbers, "seconds_per_megapixel": row["seconds_per_megapixel"]}
        cells = ["n/a" if values.get(k) is None else fmt.format(values[k]) for _, k, fmt in COLUMNS]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(rows: list[dict], fields: list[dict], out: Path, args) -> None:
    first = rows[0]["all"]
    lines = [
        "# Held-out benchmark",
        "",
        "Command: `" + " ".join(["python bench/evaluate.py", *sys.argv[1:]]) + "`",
        "",
        f"{len(fields)} fields of {args.size}x{args.size} px (seeds {SEED0}+), PSF FWHM "
        f"{args.fwhms} px (Moffat beta 3), sky {SKY:g} e-, Poisson + {READ_NOISE:g} e- read noise, "
        f"exposure 1, stars 50 e- to 3e5 e- (counts slope 0.5). PSNR/SSIM in electrons against the truth's 0.5-99.5 percentile range "
        f"(mean {first['data_range_e']:.1f} e-); PSNR asinh: in the networks' asinh space, "
        "truth max-min there (the training logs' convention). Detection: DAOStarFinder at 5σ of each image's own "
        "background, matched to the catalog; recall on point sources; spurious = detections "
        "matching no catalog source. Depth: faintest magnitude with 90 % completeness at a "
        "threshold with purity ≥ 90 %, pooled over fields; gain = method - noisy input. "
        "Goals (issue 9): depth gain ≥ +0.75 mag, spurious ≤ 1 %, |flux bias| ≤ 1 %.",
        "",
        "## All fields",
        "",
        *_table(rows),
        "",
    ]
    for fwhm in rows[0]["by_fwhm"]:
        lines += [f"## PSF FWHM {fwhm} px", "", *_table(rows, fwhm), ""]
    (out / "results.md").write_text("\n".join(lines))


def plot_methods(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fwhms = list(rows[0]["by_fwhm"])
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for row in rows:
        for axis, key in zip(axes, ("depth_gain_mag", "flux_bias", "spurious_rate"), strict=True):
            values = [row["by_fwhm"][f][key] for f in fwhms]
            axis.plot(
                [float(f) for f in fwhms],
                [np.nan if v is None else v for v in values],
                "o-",
                label=row["method"],
            )
            axis.set(xlabel="PSF FWHM (px)", title=key)
    axes[0].axhline(0.75, color="k", ls=":", lw=0.8)
    axes[1].axhspan(-0.01, 0.01, color="k", alpha=0.08)
    axes[2].axhline(0.01, color="k", ls=":", lw=0.8)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "methods_vs_fwhm.png", dpi=80)
    plt.close(figure)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _fwhm_list(text: str) -> str:
    try:
        values = [float(f) for f in text.split(",") if f.strip()]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of PSF FWHMs in pixels (> 0), e.g. 1.6,2.5"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ckpt", action="append", default=[], help="checkpoint (repeatable)")
    parser.add_argument("--methods", default="noisy,gaussian,median,bilateral,bm3d_vst")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "evaluate"))
    parser.add_argument("--fields", type=_positive_int, default=3, help="fields per PSF width")
    parser.add_argument("--size", type=_positive_int, default=512)
    parser.add_argument("--fwhms", type=_fwhm_list, default="1.6,2.5,3.5")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny budget (does the bench run?): one 128 px field at FWHM 2.5, noisy and "
        "gaussian unless --methods is given",
    )
    args = parser.parse_args()
    if args.smoke:
        args.fields, args.size, args.fwhms = 1, 128, "2.5"
        if "--methods" not in sys.argv:
            args.methods = "noisy,gaussian"

    from astrorestore.errors import UserError
    from astrorestore.evaluation.baselines import get_baseline
    from astrorestore.evaluation.writer import to_jsonable

    try:
        methods = [m for m in args.methods.split(",") if m]
        baselines = {m: get_baseline(m) for m in methods}
        if "bm3d_vst" in baselines:
            import importlib.util

            if importlib.util.find_spec("bm3d") is None:
                print("bm3d is not installed (pip install bm3d): skipping bm3d_vst")
                baselines.pop("bm3d_vst")
        fwhms = [float(f) for f in args.fwhms.split(",") if f.strip()]
        labels = checkpoint_labels(args.ckpt)
        load_checkpoints(args.ckpt)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        fields = held_out_fields(args.fields, args.size, fwhms)
        rows = []
        for name, baseline in baselines.items():
            print(f"{name}:")
            rows.append(
                run_method(
                    name,
                    lambda image, b=baseline: b(image, gain=GAIN, read_noise=READ_NOISE),
                    fields,
                    out,
                )
            )
        for path, label in zip(args.ckpt, labels, strict=True):
            print(f"{label}:")
            rows.append(
                run_method(
                    label, lambda image, p=path: _restore_with_checkpoint(p, image), fields, out
                )
            )
        if not rows:
            raise UserError("nothing to evaluate: pass --methods and/or --ckpt")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)  # a user error, as for train.py and infer.py
    (out / "results.json").write_text(json.dumps(to_jsonable(rows), indent=2))
    write_markdown(rows, fields, out, args)
    plot_methods(rows, out)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
