"""Faint-star photometry after restoration: aperture-flux change per signal-to-noise bin.

``bench_psf_robustness.py`` gates the median flux bias of all stars at S/N > 10, which the many
bright stars of a field dominate. A denoiser's prior acts on the *faint* ones: where a star's
pixels sit near the sky noise, nothing bounds how the network redistributes its light, and a
learned PSF or a learned "faint bumps are noise" moves flux in or out of the aperture. This
bench measures that, per S/N bin, on held-out fields the training never saw.

Fields: ``data=simulated``'s single-PSF scene (sky 20 e-, Moffat stars, Sersic galaxies, power-law
counts) rendered at ``--size`` px with the PSF of each cell (default FWHM 1.6 px / beta 2.5,
2.5 / 3 (the old training PSF), 3.5 / 4.5), ``--fields`` fields per cell (seeds 555000 + k,
which no training field uses), noise from the checkpoint's own noise model at exposure 1;
restored with ``infer``'s tiled path (128 px tiles, 32 px overlap).

Per star with true aperture S/N > 5 (aperture r = 2 FWHM, sky known, noise = sky + read + the
star's own shot noise), binned by that S/N:
- median relative flux error against the truth, restored and noisy input;
- the **paired change** (restored - noisy) / true, mean +- standard error over the bin's stars:
  what the restoration itself did to the flux, with the noise realisation cancelled. A
  photometry-safe restoration keeps it within 1 % at S/N >= 10 (the "<=1%" column).

A checkpoint's post-processing can be changed like ``bench_psf_robustness.py --variant`` (e.g.
the give-back ``--variant gb=default:postprocess=give_back,postprocess.give_back.footprint_scale=2``).

Usage: ``python bench/bench_faint_flux.py --ckpt default=A.ckpt [--ckpt B=...] [--variant ...]
[--fields 12] [--size 384]``; writes ``bench/results/faint_flux.{json,md,png}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import draw_noise, held_out_scene, psnr, star_fluxes, variant_spec

RESULTS = Path(__file__).resolve().parent / "results"
FIELD_SEED = 555_000
CELLS = ((1.6, 2.5), (2.5, 3.0), (3.5, 4.5))
BINS = (5.0, 10.0, 20.0, 50.0, float("inf"))


def bin_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g}" if np.isfinite(high) else f">{low:g}"


def score_cell(restorer, config, fwhm, beta, fields, size) -> dict:
    from hydra.utils import instantiate

    from astrorestore.data.simulation.scene import render_field
    from astrorestore.inference.restore import restore_image

    scene = dict(
        held_out_scene(dict(config["data"].get("scene") or {})), psf_fwhm=fwhm, psf_beta=beta
    )
    sky = float(scene.get("sky", 20.0))
    noise = instantiate(config["data"]["pairing"]["noise"], exposure_range=[1.0, 1.0])
    read_noise = float(getattr(noise, "read_noise", 0.0))
    rows, gains = [], []
    for k in range(fields):
        seed = FIELD_SEED + k
        truth, catalog = render_field(size, np.random.default_rng(seed), **scene)
        noisy = draw_noise(noise, truth, seed)
        restored = restore_image(noisy, restorer, tile=128, overlap=32, batch_size=4)
        gains.append(psnr(restored, truth) - psnr(noisy, truth))
        flux_r, true_flux, snr = star_fluxes(restored, truth, catalog, sky, fwhm, read_noise)
        flux_n, _, _ = star_fluxes(noisy, truth, catalog, sky, fwhm, read_noise)
        keep = snr > BINS[0]
        rows.append(
            np.column_stack(
                [snr, flux_r / true_flux - 1, flux_n / true_flux - 1, (flux_r - flux_n) / true_flux]
            )[keep]
        )
    snr, rel_r, rel_n, change = np.concatenate(rows).T
    bins = {}
    for low, high in zip(BINS[:-1], BINS[1:], strict=True):
        inside = (snr >= low) & (snr < high)
        n = int(inside.sum())
        bins[bin_label(low, high)] = {
            "stars": n,
            "median_error_restored": float(np.median(rel_r[inside])) if n else None,
            "median_error_noisy": float(np.median(rel_n[inside])) if n else None,
            "paired_change_mean": float(change[inside].mean()) if n else None,
            "paired_change_sem": float(change[inside].std(ddof=1) / np.sqrt(n)) if n > 1 else None,
        }
    safe = all(
        abs(b["paired_change_mean"]) <= 0.01
        for label, b in bins.items()
        if b["stars"] and not label.startswith("5-")
    )
    return {"psnr_gain_dB": float(np.mean(gains)), "bins": bins, "within_1pct_at_snr10": safe}


def markdown(results: dict, meta: dict) -> str:
    labels = [bin_label(lo, hi) for lo, hi in zip(BINS[:-1], BINS[1:], strict=True)]
    lines = [
        f"`{meta['command']}`  ",
        f"{meta['fields']} held-out {meta['size']}x{meta['size']} fields per cell (seeds "
        f"{FIELD_SEED}+k). Per S/N bin: stars, then the mean paired change (restored - noisy) / "
        "true +- its standard error, then [median error restored / noisy input].",
        "",
        "| method | PSF | PSNR e gain | "
        + " | ".join(f"S/N {b}" for b in labels)
        + " | <=1% at S/N>=10 |",
        "|---|---|---|" + "---|" * len(labels) + "---|",
    ]
    for method, cells in results.items():
        for cell, row in cells.items():
            parts = []
            for label in labels:
                b = row["bins"][label]
                parts.append(
                    "-"
                    if not b["stars"]
                    else f"{b['stars']}: {100 * b['paired_change_mean']:+.2f}+-{100 * (b['paired_change_sem'] or 0):.2f}% "
                    f"[{100 * b['median_error_restored']:+.1f} / {100 * b['median_error_noisy']:+.1f}]"
                )
            lines.append(
                f"| {method} | {cell} | {row['psnr_gain_dB']:+.2f} | "
                + " | ".join(parts)
                + f" | {'yes' if row['within_1pct_at_snr10'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [bin_label(lo, hi) for lo, hi in zip(BINS[:-1], BINS[1:], strict=True)]
    cells = list(next(iter(results.values())))
    figure, axes = plt.subplots(1, len(cells), figsize=(5 * len(cells), 4), sharey=True)
    for axis, cell in zip(np.atleast_1d(axes), cells, strict=True):
        for offset, (method, rows) in enumerate(results.items()):
            bins = rows[cell]["bins"]
            x = np.arange(len(labels)) + 0.08 * (offset - (len(results) - 1) / 2)
            y = [100 * (bins[b]["paired_change_mean"] or np.nan) for b in labels]
            e = [100 * (bins[b]["paired_change_sem"] or 0) for b in labels]
            axis.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
        axis.axhspan(-1, 1, color="0.9", zorder=0)
        axis.axhline(0, color="k", lw=0.8)
        axis.set_xticks(range(len(labels)), [f"S/N {b}" for b in labels])
        axis.set_title(cell)
    np.atleast_1d(axes)[0].set_ylabel("aperture flux change, restored - noisy (% of true)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ckpt", action="append", default=[], help="LABEL=PATH (repeatable)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=BASE:OVERRIDES : BASE's weights with infer.py's postprocess overrides "
        "(comma-separated, as bench_psf_robustness.py --variant; repeatable)",
    )
    parser.add_argument("--fields", type=int, default=12, help="fields per PSF cell")
    parser.add_argument("--size", type=int, default=384, help="field size (px)")
    parser.add_argument("--out", default=str(RESULTS / "faint_flux"), help="output stem")
    args = parser.parse_args()
    if not args.ckpt:
        parser.error("give at least one --ckpt LABEL=PATH")

    from astrorestore.checkpoint import read_checkpoint
    from astrorestore.inference.restorer import load_restorer

    results = {}
    specs = [(*spec.partition("=")[::2], None) for spec in args.ckpt]
    for spec in args.variant:
        label, (path, postprocess) = variant_spec(spec, args.ckpt)
        specs.append((label, path, postprocess))
    for label, path, postprocess in specs:
        if not path or not Path(path).is_file():
            raise SystemExit(f"--ckpt {label}={path}: use LABEL=PATH of an existing checkpoint")
        config = read_checkpoint(path)["astrorestore"]["config"]
        restorer = load_restorer(path, "cpu", postprocess)
        if restorer.postprocess.on_frames:
            raise SystemExit(f"--variant {label}: this bench scores tiles' stages only")
        results[label] = {}
        for fwhm, beta in CELLS:
            cell = f"FWHM {fwhm:g} px, beta {beta:g}"
            results[label][cell] = score_cell(restorer, config, fwhm, beta, args.fields, args.size)
            bins = results[label][cell]["bins"]
            print(
                label,
                cell,
                {b: round(100 * (v["paired_change_mean"] or 0), 2) for b, v in bins.items()},
                flush=True,
            )
    meta = {
        "command": "python bench/bench_faint_flux.py "
        + " ".join(
            [f"--ckpt {c}" for c in args.ckpt]
            + [f"--variant {v}" for v in args.variant]
            + [f"--fields {args.fields}", f"--size {args.size}"]
        ),
        "fields": args.fields,
        "size": args.size,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, meta))
    plot(results, out.with_suffix(".png"))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
