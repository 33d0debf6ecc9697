"""Score checkpoints on the JWST-like demo frames against their noiseless truth.

Why: the demo frames (``data=jwst`` without a folder) are what ``python train.py model=n2v
data=jwst`` trains on and what the real-frame demonstration of docs/methods/self-supervised.md
restores. The report of ``infer.py`` on a real frame can only compare the output with its noisy
input; these frames are simulated, so their truth can be re-rendered from the seed (``demo_fields``)
and the same restorations scored against it. Every frame goes through ``infer.py`` itself (FITS in
MJy/sr, NaN DO_NOT_USE pixels, tiling), then, in electrons:

- aperture flux (radius 2 FWHM, the known sky subtracted) of isolated stars, in bins of their
  signal-to-noise: median restored/truth and noisy/truth (a restoration that adds light to
  faint sources, or takes it away, shows here first);
- empty-sky noise ratio ``std(restored - truth) / std(noisy - truth)`` over the truth's empty
  sky (``metrics.image_quality.empty_sky_mask``: at least 2 FWHM from any source light);
- PSNR in electrons, data range = the truth's 0.5-99.5 percentile range.

Hot and DO_NOT_USE pixels (DQ) are masked in every measurement.

Usage: ``python bench/bench_demo_frames.py --ckpt n2v=CKPT [--ckpt other=CKPT] [--out STEM]``;
``--variant LABEL=BASE:OVERRIDES`` scores BASE's weights with ``infer.py``'s postprocess overrides
(e.g. ``--variant no_footprint=n2v:+postprocess.give_back.footprint_scale=null`` for the
give-back without step 2).
Writes ``STEM.json`` and ``STEM.md`` (default ``bench/results/demo_frames``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from common import RESULTS, variant_checkpoint

from astrorestore.data.sources.demo_frames import (
    DEMO_FWHM,
    DEMO_GAIN,
    DEMO_SKY,
    PHOTMJSR,
    READ_NOISE,
    XPOSURE,
    demo_fields,
    ensure_demo_frames,
)
from astrorestore.evaluation import photometry as phot
from astrorestore.evaluation import psf
from astrorestore.metrics import image_quality as quality

REPO = Path(__file__).resolve().parents[1]
TO_MJYSR = PHOTMJSR / (DEMO_GAIN * XPOSURE)  # electrons -> MJy/sr, as the frames were written
RADIUS = 2 * DEMO_FWHM
SN_BINS = ((5.0, 20.0), (20.0, 100.0), (100.0, np.inf))


def restore_folder(ckpt: str, folder: Path, out: Path) -> None:
    """Run infer.py on every frame of ``folder`` (the user's path, nothing bench-specific)."""
    command = [
        sys.executable,
        str(REPO / "infer.py"),
        f"ckpt_path={ckpt}",
        f"input={folder}",
        f"output={out}",
        "progress=false",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    if result.returncode != 0:
        raise SystemExit(f"infer.py failed on {ckpt}:\n{result.stderr[-2000:]}")


def score(folder: Path, restored_dir: Path) -> dict:
    rows = {"truth": [], "noisy": [], "restored": [], "sn": []}
    sky_ratios, psnr_noisy, psnr_restored = [], [], []
    fields = demo_fields()
    for path in sorted(folder.glob("*_cal.fits")):
        pointing = int(path.name[7:10]) - 1
        clean, catalog, _ = fields[pointing]
        noisy = fits.getdata(path, "SCI").astype(float) / TO_MJYSR
        restored = fits.getdata(restored_dir / path.name, "SCI").astype(float) / TO_MJYSR
        # Hot and DO_NOT_USE pixels (DQ bits 11 and 0) are not data: masked in every image.
        dq = fits.getdata(path, "DQ").astype(np.int64)
        bad = ~np.isfinite(noisy) | ~np.isfinite(restored) | ((dq & (1 | 1 << 11)) != 0)
        truth = np.where(bad, np.nan, clean.astype(float))
        noisy, restored = np.where(bad, np.nan, noisy), np.where(bad, np.nan, restored)
        # Every isolated star whose aperture lies inside the frame (brightest first).
        xy = np.c_[catalog["x"], catalog["y"]]
        stars = psf.bright_isolated(
            xy, catalog["flux"], catalog["kind"], DEMO_FWHM, len(xy), clean.shape, RADIUS + 1
        )
        xy = xy[stars]
        # Aperture sums above the known sky; masked pixels count in no image.
        true_flux = phot.aperture_fluxes(truth, xy, RADIUS, sky=DEMO_SKY)
        area = np.pi * RADIUS**2
        rows["sn"] += list(true_flux / np.sqrt(true_flux + area * (DEMO_SKY + READ_NOISE**2)))
        rows["truth"] += list(true_flux)
        rows["noisy"] += list(phot.aperture_fluxes(noisy, xy, RADIUS, sky=DEMO_SKY))
        rows["restored"] += list(phot.aperture_fluxes(restored, xy, RADIUS, sky=DEMO_SKY))
        empty = quality.empty_sky_mask(truth, DEMO_FWHM)
        sky_ratios.append(quality.empty_sky_noise_ratio(restored, noisy, truth, empty))
        value_range = quality.data_range(truth)
        psnr_noisy.append(quality.psnr(noisy, truth, value_range))
        psnr_restored.append(quality.psnr(restored, truth, value_range))
    data = {k: np.array(v) for k, v in rows.items()}
    bins = []
    for lo, hi in SN_BINS:
        k = (data["sn"] >= lo) & (data["sn"] < hi) & (data["truth"] > 0)
        bins.append(
            {
                "sn": [lo, None if np.isinf(hi) else hi],
                "n": int(k.sum()),
                "noisy_over_truth": float(np.median(data["noisy"][k] / data["truth"][k])),
                "restored_over_truth": float(np.median(data["restored"][k] / data["truth"][k])),
                "restored_over_noisy": float(np.median(data["restored"][k] / data["noisy"][k])),
            }
        )
    return {
        "flux_bins": bins,
        "sky_noise_ratio": sky_ratios,
        "psnr_e_noisy": float(np.mean(psnr_noisy)),
        "psnr_e_restored": float(np.mean(psnr_restored)),
        "frames": len(psnr_noisy),
    }


def markdown(results: dict, command: str) -> str:
    lines = [
        "# Demo frames against their truth",
        "",
        f"`{command}`",
        "",
        "| model | PSNR e⁻ noisy → restored | sky noise | "
        + " | ".join(
            f"flux S/N {lo:g}–{'∞' if hi is None else f'{hi:g}'}: noisy / restored (÷ truth)"
            for lo, hi in [b["sn"] for b in next(iter(results.values()))["flux_bins"]]
        )
        + " |",
        "|---|---|---|" + "---|" * len(SN_BINS),
    ]
    for label, r in results.items():
        sky = r["sky_noise_ratio"]
        cells = [
            f"{b['noisy_over_truth']:.3f} / {b['restored_over_truth']:.3f} (n={b['n']})"
            for b in r["flux_bins"]
        ]
        lines.append(
            f"| {label} | {r['psnr_e_noisy']:.2f} → {r['psnr_e_restored']:.2f} | "
            f"{min(sky):.3f}–{max(sky):.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH (repeatable)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=BASE:OVERRIDES : BASE's weights with infer.py's postprocess overrides "
        "(comma-separated, as bench_psf_robustness.py --variant; repeatable)",
    )
    parser.add_argument(
        "--folder", default=None, help="demo folder (default: written to a temp dir)"
    )
    parser.add_argument("--out", default=str(RESULTS / "demo_frames"), help="output stem")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else ensure_demo_frames(Path(tmp) / "jwst_demo")
        checkpoints = {}
        for spec in args.ckpt:
            label, _, path = spec.rpartition("=")
            checkpoints[label or Path(path).stem] = path
        for spec in args.variant:
            label, _, rest = spec.partition("=")
            base, _, settings = rest.partition(":")
            checkpoints[label] = str(variant_checkpoint(checkpoints[base], settings, Path(tmp)))
        results = {}
        for label, path in checkpoints.items():
            out = Path(tmp) / f"restored_{label}"
            restore_folder(path, folder, out)
            results[label] = score(folder, out)
            print(label, json.dumps(results[label]), flush=True)
    command = "python bench/bench_demo_frames.py " + " ".join(
        [f"--ckpt {c}" for c in args.ckpt] + [f"--variant {v}" for v in args.variant]
    )
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps({"command": command, "results": results}, indent=2)
    )
    stem.with_suffix(".md").write_text(markdown(results, command))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
