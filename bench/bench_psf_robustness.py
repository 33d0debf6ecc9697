"""PSF-robustness table (issue 10): does a denoiser keep stars the shape they have?

A network trained on one PSF learns it and imposes it. This benchmark scores any number of
checkpoints (and the noisy input, and BM3D after a variance-stabilising transform when the
optional ``bm3d`` package is installed) on held-out fields rendered with seeds no training run
uses, in cells of PSF shape: Moffat FWHM {1.2, 1.6, 2.5, 3.5, 5} px x beta {2.5, 4.5}, plus a
JWST-like Airy core with six diffraction spikes. Scene per field: sky 20 e-, 60 stars (12 of
them bright), 25 galaxies, no saturation; Poisson noise (gain 1) + 5 e- read noise, exposure 1.

Per cell (all in electrons, against the noiseless truth):

- PSNR, data range = the truth's 0.5-99.5 percentile range (the max-min range is set by one
  star core and flatters everything); and PSNR in asinh space (the network's own space, the
  noisy frame's statistics, data range = truth's max-min there);
- bright stars (isolated, true peak >= 1000 e- above the sky): the restored/true peak pixel
  ratio (median and 5th percentile), and the FWHM ratio of 2-D circular Gaussian PRF fits
  (photutils ``fit_fwhm``) of the restored and the true image;
- aperture photometry (r = 2 FWHM, sky known) of stars at S/N > 10: median relative flux error
  against the truth's aperture flux (bias) and its robust scatter (1.4826 MAD);
- empty-sky noise ratio: std(out - truth) / std(noisy - truth) where the truth is within 0.5 e-
  of the sky;
- DAOStarFinder detections at 5 sigma of the INPUT's sky noise (the same threshold in electrons
  for every image), and at 5 sigma of each image's own sky noise (robust std of its empty-sky
  pixels): catalogue sources found (within max(2, FWHM) px) / spurious detections. The second
  is what a user thresholding the restored frame would get;
- detections at a matched false-positive rate (the issue's gate): per field, the noisy input's
  spurious count at 5 sigma is the budget, and every image (the noisy input too) is thresholded
  at the lowest multiple of the input's sky sigma (0.5-10 in steps of 0.25) at which it stays
  within that budget (``evaluation.detections_at_spurious_budget``; one-to-one matching, border
  excluded). Reported: true detections / spurious / mean threshold.

Usage (one command; labels are free, so Noise2Void/Noise2Noise checkpoints are just more rows):

    python bench/bench_psf_robustness.py --ckpt default=path/a.ckpt --ckpt bounded=path/b.ckpt

writes ``bench/results/psf_robustness.{md,json,png}``. ``--variant LABEL=BASE:OVERRIDES`` adds a
row with BASE's weights and ``infer.py``'s post-processing overrides (comma-separated, composed
from ``configs/`` as ``infer.py`` does), e.g. the same network without its give-back:
``--variant a-raw=a:postprocess=none``, or with one: ``--variant
gb=a:postprocess=give_back,postprocess.give_back.footprint_scale=2``. ``--oracle LABEL`` adds a
ceiling row: LABEL's output with every star's core fitted with the true PSF at its true position
(``--oracle "noisy input"`` for the input itself); ``--oracle-position LABEL`` fits each
position too (the ceiling of fitting cores on this frame alone). ``--psf-cores LABEL[:key=value,...]`` adds
LABEL's output with its star cores fitted with the PSF each frame shows
(``astrorestore.postprocess.psf_cores``, what ``infer.py postprocess=psf_cores`` runs; no truth).
``--self-ensemble LABEL:N`` adds LABEL's checkpoint as the mean of N flipped/rotated passes
(``infer.py self_ensemble=N``); ``--psf-cores "LABEL + self-ensemble N"`` stacks the two.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import variant_spec
from psf_cells import (
    BRIGHT_PEAK,
    CELLS,
    GAIN,
    HELD_OUT_SEED,
    READ_NOISE,
    SCENE,
    SKY,
    aperture_errors,
    bright_stars,
    star_shapes,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


# ---------------------------------------------------------------------------- measures
def matched_rate_detections(images: dict, catalog, fwhm, sigma) -> dict[str, tuple]:
    """(true, spurious, threshold) per image at the noisy input's 5-sigma spurious count."""
    from astrorestore.evaluation.detection import (
        detect_sources,
        detections_at_spurious_budget,
        score_detections,
    )

    reference = np.column_stack([catalog["x"], catalog["y"]])
    common = dict(fwhm=max(fwhm, 1.5), background=SKY, sigma=sigma)
    radius = max(2.0, fwhm)
    at_5 = detect_sources(images["noisy input"], threshold=5.0, **common)
    budget = score_detections(reference, at_5, radius)["n_spurious"]
    out = {}
    for name, image in images.items():
        best = detections_at_spurious_budget(
            image, reference, max_spurious=budget, radius=radius, **common
        )
        out[name] = (best["n_recovered"], best["n_spurious"], best["threshold"])
    return out


def detections(image, catalog, fwhm, sigma) -> tuple[int, int, int]:
    """(catalogue sources found, spurious detections, all detections) at 5 ``sigma``."""
    from photutils.detection import DAOStarFinder

    threshold = 5.0 * sigma
    found = DAOStarFinder(threshold=threshold, fwhm=max(fwhm, 1.5))(image - SKY)
    if found is None:
        return 0, 0, 0
    detected = np.column_stack([found["x_centroid"], found["y_centroid"]])
    truth = np.column_stack([catalog["x"], catalog["y"]])
    distance = np.hypot(*(detected[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    tolerance = max(2.0, fwhm)
    return (
        int((distance.min(axis=0) < tolerance).sum()),
        int((distance.min(axis=1) >= tolerance).sum()),
        len(detected),
    )


# ---------------------------------------------------------------------------- baselines
def bm3d_vst(noisy: np.ndarray) -> np.ndarray:
    """BM3D after the generalised Anscombe transform (Poisson gain 1 + Gaussian read noise),
    inverted with Makitalo & Foi's closed-form approximation of the exact unbiased inverse."""
    import bm3d

    shifted = noisy / GAIN
    sigma2 = (READ_NOISE / GAIN) ** 2
    y = 2.0 * np.sqrt(np.clip(shifted + 3.0 / 8.0 + sigma2, 0.0, None))
    d = np.asarray(bm3d.bm3d(y, sigma_psd=1.0), dtype=np.float64)
    d = np.maximum(d, 1.0)
    s = np.sqrt(1.5)
    inverse = 0.25 * d**2 + 0.25 * s / d - 1.375 / d**2 + 0.625 * s / d**3 - 0.125 - sigma2
    return (inverse * GAIN).astype(np.float32)


def load_methods(
    ckpts: list[str],
    use_bm3d: bool,
    ensembles: list[str] = (),
    variants: dict[str, tuple[str, dict]] | None = None,
) -> dict:
    """The rows: the noisy input, BM3D-VST, each checkpoint (``LABEL=PATH``), each variant
    (``LABEL: (PATH, postprocess overrides)``) and, for each ``LABEL:N`` of ``ensembles``,
    LABEL's checkpoint as the mean of N flipped/rotated passes (``infer.py self_ensemble=N``).
    A checkpoint's row is what ``infer.py`` writes: the network, then its post-processing."""
    from astrorestore.errors import UserError
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.restorer import load_restorer
    from astrorestore.inference.self_ensemble import check_self_ensemble, self_ensemble

    methods: dict = {"noisy input": lambda noisy: noisy}
    if use_bm3d:
        try:
            import bm3d  # noqa: F401

            methods["BM3D-VST"] = bm3d_vst
        except ImportError:
            print("bm3d not installed (pip install astrorestore[baselines]): no BM3D rows")
    paths: dict[str, tuple[str, dict | None]] = {}
    for spec in ckpts:
        label, _, path = spec.rpartition("=")
        paths[label or Path(path).stem] = (path, None)
    paths.update(variants or {})
    rows = [(label, path, 1) for label, path in paths.items()]
    for spec in ensembles:
        label, _, n = spec.partition(":")
        try:
            passes = check_self_ensemble(n)
        except UserError as exc:
            raise SystemExit(f"--self-ensemble {spec!r}: {exc}") from None
        if label not in paths or passes == 1:
            raise SystemExit(
                f"--self-ensemble {spec!r}: use LABEL:N, N = 2, 4 or 8, LABEL a --ckpt"
            )
        rows.append((f"{label} + self-ensemble {passes}", paths[label], passes))
    for label, (path, postprocess), n in rows:
        restorer = self_ensemble(load_restorer(path, "cpu", postprocess, gain=GAIN), n)

        def restore(noisy: np.ndarray, r=restorer) -> np.ndarray:
            out = restore_image(noisy, r, tile=256, overlap=32, batch_size=4, gain=GAIN)
            return r.finish_frame(noisy, out)[0]

        methods[label] = restore
    return methods


# ---------------------------------------------------------------------------- the table
def asinh_of(noisy: np.ndarray, normalizer):
    """The network's space for this frame: asinh with the noisy frame's offset and scale."""
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]  # noqa: E731
    offset, scale = normalizer.stats(as_tensor(noisy))
    return lambda a: normalizer.forward(as_tensor(a), offset, scale)[0, 0].numpy()


def true_psf_cores(
    image, noisy, truth, catalog, radius: int = 4, level: float = 300.0, fit_position=False
):
    """``image`` with every star's core (the pixels it raises by > ``level`` e-) replaced by the
    true background there plus the star's flux fitted (weighted least squares) to the noisy frame
    with the TRUE PSF at its TRUE position. A ceiling for a restoration that knows the PSF and
    where each star is, not a method: it tells whether a PSNR goal is reachable at all. With
    ``fit_position`` the position is fitted too (still the true PSF and background): the ceiling
    of any method that must measure where each star is on this frame alone."""
    from scipy.optimize import least_squares

    from astrorestore.data.simulation.scene import render_psf_stamp

    out = np.array(image, dtype=np.float64)
    h, w = truth.shape
    for i in np.flatnonzero(catalog["kind"] == 0):
        x, y, flux = catalog["x"][i], catalog["y"][i], catalog["flux"][i]
        cx, cy = int(round(x)), int(round(y))
        if not (radius <= cx < w - radius and radius <= cy < h - radius):
            continue
        psf = render_psf_stamp(radius, **catalog["psf"], dx=x - cx, dy=y - cy)
        box = (slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1))
        background = truth[box] - flux * psf
        weight = 1.0 / (np.clip(truth[box], 0.0, None) / GAIN + READ_NOISE**2)
        fitted = np.sum(weight * psf * (noisy[box] - background)) / np.sum(weight * psf**2)
        model = fitted * psf
        if fit_position and flux * psf.max() > level:

            def stamp(p, x=x, y=y, cx=cx, cy=cy):
                return p[0] * render_psf_stamp(
                    radius, **catalog["psf"], dx=x - cx + p[1], dy=y - cy + p[2]
                )

            def residual(p, box=box, background=background, weight=weight, stamp=stamp):
                return ((noisy[box] - background - stamp(p)) * np.sqrt(weight)).ravel()

            model = stamp(least_squares(residual, [fitted, 0.0, 0.0], x_scale="jac").x)
        out[box] = np.where(flux * psf > level, background + model, out[box])
    return out.astype(np.float32)


def score_cell(cell: dict, index: int, methods: dict, size: int, n_fields: int) -> dict:
    from astrorestore.data.corruption.noise import PoissonGaussianNoise
    from astrorestore.data.normalization.asinh import AsinhNormalizer
    from astrorestore.data.simulation.scene import render_field
    from astrorestore.metrics.image_quality import psnr
    from astrorestore.postprocess import build_postprocess

    psf = {k: v for k, v in cell.items() if k != "name"}
    fwhm = float(cell["psf_fwhm"])
    noise = PoissonGaussianNoise(gain=GAIN, read_noise=READ_NOISE)
    normalizer = AsinhNormalizer(3.0)
    acc: dict = {name: {k: [] for k in ACC_KEYS} for name in methods}
    for field, seq in enumerate(np.random.SeedSequence([HELD_OUT_SEED, index]).spawn(n_fields)):
        truth, catalog = render_field(size, np.random.default_rng(seq), **SCENE, **psf)
        gen = torch.Generator().manual_seed(HELD_OUT_SEED + 1000 * index + field)
        noisy = noise.draw(torch.from_numpy(truth), gen).numpy()
        data_range = float(np.subtract(*np.percentile(truth, [99.5, 0.5])))
        norm = asinh_of(noisy, normalizer)
        z_truth = norm(truth)
        stars = bright_stars(truth, catalog, fwhm)
        empty = np.abs(truth - SKY) < 0.5
        sky_noise = np.std((noisy - truth)[empty])
        input_sigma = float(np.sqrt(SKY / GAIN + READ_NOISE**2))
        outputs = {}
        for name, method in methods.items():
            start = time.perf_counter()
            if isinstance(method, tuple):  # --psf-cores: that row's output, frame's own PSF
                stages = build_postprocess({"psf_cores": method[1]}, gain=GAIN)
                out = outputs[name] = stages.frame(noisy, outputs[method[0]])[0]
            elif isinstance(method, str):  # --oracle: that row's output with true-PSF cores
                base, _, mode = method.partition("|")
                out = outputs[name] = true_psf_cores(
                    outputs[base], noisy, truth, catalog, fit_position=mode == "position"
                )
            else:
                out = outputs[name] = method(noisy)
            a = acc[name]
            a["seconds"].append(time.perf_counter() - start)
            a["psnr"].append(psnr(out, truth, data_range))
            a["data_range"].append(data_range)
            a["psnr_asinh"].append(psnr(norm(out), z_truth, float(np.ptp(z_truth))))
            peaks, fwhms = star_shapes(out, truth, stars, fwhm)
            a["peak"].extend(peaks.tolist())
            a["fwhm"].extend(fwhms.tolist())
            a["flux"].extend(aperture_errors(out, truth, catalog, fwhm).tolist())
            a["sky"].append(float(np.std((out - truth)[empty]) / sky_noise))
            a["det"].append(detections(out, catalog, fwhm, input_sigma))
            # 5 sigma of the image's own sky noise (robust std of its empty-sky pixels)
            own = 1.4826 * np.median(np.abs(out[empty] - np.median(out[empty])))
            a["det_own"].append(detections(out, catalog, fwhm, max(float(own), 1e-3)))
        for name, matched in matched_rate_detections(outputs, catalog, fwhm, input_sigma).items():
            acc[name]["det_matched"].append(matched)
    return {name: summarise(a) for name, a in acc.items()}


ACC_KEYS = (
    "seconds",
    "psnr",
    "data_range",
    "psnr_asinh",
    "peak",
    "fwhm",
    "flux",
    "sky",
    "det",
    "det_own",
    "det_matched",
)


def summarise(a: dict) -> dict:
    peak, fwhm, flux = (np.asarray(a[k]) for k in ("peak", "fwhm", "flux"))
    det = np.asarray(a["det"]).sum(axis=0)
    det_own = np.asarray(a["det_own"]).sum(axis=0)
    matched = np.asarray(a["det_matched"], dtype=float)
    nan = float("nan")
    return {
        "psnr_e_dB": float(np.mean(a["psnr"])),
        "psnr_data_range_e": [round(v, 1) for v in a["data_range"]],
        "psnr_asinh_dB": float(np.mean(a["psnr_asinh"])),
        "bright_stars": int(peak.size),
        "peak_ratio_median": float(np.median(peak)) if peak.size else nan,
        "peak_ratio_p5": float(np.percentile(peak, 5)) if peak.size else nan,
        "fwhm_ratio_median": float(np.median(fwhm)) if fwhm.size else nan,
        "flux_stars": int(flux.size),
        "flux_bias": float(np.median(flux)),
        "flux_scatter": float(1.4826 * np.median(np.abs(flux - np.median(flux)))),
        "sky_noise_ratio": float(np.mean(a["sky"])),
        "true_detections": int(det[0]),
        "spurious_detections": int(det[1]),
        "all_detections": int(det[2]),
        "own_sigma_true_detections": int(det_own[0]),
        "own_sigma_spurious_detections": int(det_own[1]),
        "matched_rate_true_detections": int(matched[:, 0].sum()),
        "matched_rate_spurious_detections": int(matched[:, 1].sum()),
        "matched_rate_threshold_sigma": float(matched[:, 2].mean()),
        "seconds_per_field": float(np.mean(a["seconds"])),
    }


def gates(row: dict, noisy: dict, bm3d: dict | None) -> dict[str, bool]:
    """Issue 10's gates for one cell."""
    return {
        "psnr>=noisy+6dB": row["psnr_e_dB"] >= noisy["psnr_e_dB"] + 6.0,
        "psnr>=bm3d": bm3d is None or row["psnr_e_dB"] >= bm3d["psnr_e_dB"],
        "peak median +-3%": abs(row["peak_ratio_median"] - 1.0) <= 0.03,
        "peak p5>=0.9": row["peak_ratio_p5"] >= 0.9,
        "fwhm +-5%": abs(row["fwhm_ratio_median"] - 1.0) <= 0.05,
        "|flux bias|<=1%": abs(row["flux_bias"]) <= 0.01,
        "sky noise<=0.05": row["sky_noise_ratio"] <= 0.05,
        "true det>=noisy": row["matched_rate_true_detections"]
        >= noisy["matched_rate_true_detections"],
        "spurious<=1%": row["spurious_detections"] <= 0.01 * max(row["all_detections"], 1),
    }


def markdown(results: dict, methods: list[str], meta: dict) -> str:
    lines = [
        "# PSF robustness (issue 10)",
        "",
        f"`{meta['command']}`  ",
        f"{meta['fields_per_cell']} held-out {meta['size']}x{meta['size']} fields per cell "
        f"(seed {HELD_OUT_SEED}); sky {SKY:g} e-, read noise {READ_NOISE:g} e-, gain {GAIN:g}. "
        "PSNR in electrons with data range = truth's 0.5-99.5 percentile range "
        f"(per field, {meta['data_range_span']}). Bright stars: isolated, true peak >= "
        f"{BRIGHT_PEAK:g} e- above sky. Detections: at 5 sigma of the input sky noise; at 5 sigma "
        "of the image's own sky noise; and at the matched false-positive rate (the lowest "
        "threshold, in input sigma, whose spurious count is within the noisy input's at 5 sigma: "
        "true/spurious/mean threshold). Gates: true det uses the matched rate, spurious the "
        "fixed 5-sigma threshold.",
        "",
        "| cell | method | PSNR e (dB) | vs noisy | asinh PSNR | peak med | peak p5 | FWHM ratio "
        "| flux bias | flux scatter | sky noise | true/spurious det | own-sigma det "
        "| matched-rate det | gates |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, rows in results.items():
        noisy = rows["noisy input"]
        for name in methods:
            r = rows[name]
            passed = gates(r, noisy, rows.get("BM3D-VST"))
            lines.append(
                f"| {cell} | {name} | {r['psnr_e_dB']:.2f} | "
                f"{r['psnr_e_dB'] - noisy['psnr_e_dB']:+.2f} | {r['psnr_asinh_dB']:.2f} | "
                f"{r['peak_ratio_median']:.3f} | {r['peak_ratio_p5']:.3f} | "
                f"{r['fwhm_ratio_median']:.3f} | {100 * r['flux_bias']:+.2f}% | "
                f"{100 * r['flux_scatter']:.2f}% | {r['sky_noise_ratio']:.3f} | "
                f"{r['true_detections']}/{r['spurious_detections']} | "
                f"{r['own_sigma_true_detections']}/{r['own_sigma_spurious_detections']} | "
                f"{r['matched_rate_true_detections']}/{r['matched_rate_spurious_detections']}"
                f"/{r['matched_rate_threshold_sigma']:.2f} | "
                f"{sum(passed.values())}/{len(passed)} |"
            )
    lines += ["", "## Gates met (cells out of " + str(len(results)) + ")", ""]
    names = list(gates(*(next(iter(results.values()))["noisy input"],) * 2, None))
    lines.append("| method | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for name in methods:
        if name == "noisy input":
            continue
        counts = {g: 0 for g in names}
        for rows in results.values():
            for g, ok in gates(rows[name], rows["noisy input"], rows.get("BM3D-VST")).items():
                counts[g] += ok
        lines.append(f"| {name} | " + " | ".join(str(counts[g]) for g in names) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for beta, style in ((2.5, "-"), (4.5, "--")):
        cells = [c for c in results if c.startswith("moffat") and f"beta={beta}" in c]
        fwhms = [float(c.split("fwhm=")[1].split()[0]) for c in cells]
        for i, name in enumerate(methods):
            color = f"C{i}"
            noisy = [results[c]["noisy input"]["psnr_e_dB"] for c in cells]
            gain = [results[c][name]["psnr_e_dB"] - n for c, n in zip(cells, noisy, strict=True)]
            label = f"{name} beta={beta}"
            axes[0].plot(fwhms, gain, style, color=color, marker="o", label=label)
            peak = [results[c][name]["peak_ratio_median"] for c in cells]
            axes[1].plot(fwhms, peak, style, color=color, marker="o", label=label)
            flux = [100 * results[c][name]["flux_bias"] for c in cells]
            axes[2].plot(fwhms, flux, style, color=color, marker="o", label=label)
    axes[0].axhline(6.0, color="grey", lw=0.8)
    axes[1].axhspan(0.97, 1.03, color="grey", alpha=0.2)
    axes[2].axhspan(-1.0, 1.0, color="grey", alpha=0.2)
    titles = ("PSNR gain over noisy (dB)", "bright-star peak ratio (median)", "flux bias (%)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xlabel("Moffat FWHM (px)")
        axis.set_title(title)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main() -> None:
    global HELD_OUT_SEED
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--ckpt", action="append", default=[], help="LABEL=PATH of a checkpoint (repeatable)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=BASE:OVERRIDES : BASE's weights with infer.py's postprocess overrides "
        "(comma-separated), e.g. raw=default:postprocess=none or "
        "gb=default:postprocess=give_back,postprocess.give_back.footprint_scale=2 (repeatable)",
    )
    parser.add_argument(
        "--oracle",
        action="append",
        default=[],
        help="LABEL (repeatable): add a ceiling row, LABEL's output with each star's core fitted "
        "with the true PSF at its true position (needs the truth; not a method)",
    )
    parser.add_argument(
        "--oracle-position",
        action="append",
        default=[],
        help="LABEL (repeatable): as --oracle, but each star's position is fitted too (true PSF "
        "and background): the ceiling of fitting cores on this frame alone",
    )
    parser.add_argument(
        "--psf-cores",
        action="append",
        default=[],
        help="LABEL[:key=value,...] (repeatable): add a row, LABEL's output with its star cores "
        "fitted with the PSF measured on each frame (infer.py postprocess=psf_cores with these "
        "postprocess.psf_cores settings; no truth)",
    )
    parser.add_argument(
        "--self-ensemble",
        action="append",
        default=[],
        help="LABEL:N (repeatable): add a row, LABEL's checkpoint as the mean of N (2, 4, 8) "
        "flipped/rotated passes (infer.py self_ensemble=N)",
    )
    parser.add_argument("--size", type=int, default=256, help="field size (px)")
    parser.add_argument("--fields", type=int, default=2, help="fields per cell")
    parser.add_argument("--no-bm3d", action="store_true", help="skip the BM3D-VST baseline")
    parser.add_argument("--cells", type=int, default=len(CELLS), help="first N cells (quick look)")
    parser.add_argument("--out", default=str(RESULTS / "psf_robustness"), help="output stem")
    parser.add_argument(
        "--seed",
        type=int,
        default=HELD_OUT_SEED,
        help="field and noise seed; another value draws validation fields for choosing settings "
        "(e.g. 31416703 chose psf_cores model_variance), the default is the held-out test set",
    )
    args = parser.parse_args()
    HELD_OUT_SEED = args.seed

    variants = dict(variant_spec(spec, args.ckpt) for spec in args.variant)
    methods = load_methods(args.ckpt, not args.no_bm3d, args.self_ensemble, variants)
    for label in args.oracle:
        if label not in methods:
            raise SystemExit(f"--oracle {label!r}: not a row ({', '.join(methods)})")
        methods[f"{label} + true-PSF cores"] = label
    for label in args.oracle_position:
        if label not in methods:
            raise SystemExit(f"--oracle-position {label!r}: not a row ({', '.join(methods)})")
        methods[f"{label} + true-PSF cores, fitted positions"] = f"{label}|position"
    for spec in args.psf_cores:
        label, _, settings = spec.partition(":")
        if label not in methods:
            raise SystemExit(f"--psf-cores {label!r}: not a row ({', '.join(methods)})")
        pairs = (kv.split("=", 1) for kv in settings.split(",") if kv)
        options = {k: yaml.safe_load(v) for k, v in pairs}
        methods[f"{label} + PSF cores" + (f" ({settings})" if settings else "")] = (label, options)
    results = {}
    for index, cell in enumerate(CELLS[: args.cells]):
        results[cell["name"]] = score_cell(cell, index, methods, args.size, args.fields)
        print(cell["name"], {k: round(v["psnr_e_dB"], 2) for k, v in results[cell["name"]].items()})
    ranges = [v for rows in results.values() for v in rows["noisy input"]["psnr_data_range_e"]]
    meta = {
        "command": "python bench/bench_psf_robustness.py "
        + " ".join(
            f"{flag} {shlex.quote(value)}"
            for flag, values in (
                ("--ckpt", args.ckpt),
                ("--variant", args.variant),
                ("--oracle", args.oracle),
                ("--oracle-position", args.oracle_position),
                ("--psf-cores", args.psf_cores),
                ("--self-ensemble", args.self_ensemble),
            )
            for value in values
        )
        + f" --size {args.size} --fields {args.fields}"
        + (" --no-bm3d" if args.no_bm3d else "")
        + (f" --cells {args.cells}" if args.cells != len(CELLS) else "")
        + (f" --seed {args.seed}" if args.seed != parser.get_default("seed") else ""),
        "size": args.size,
        "fields_per_cell": args.fields,
        "data_range_span": f"{min(ranges):.0f}-{max(ranges):.0f} e-",
        "checkpoints": args.ckpt,
        "variants": args.variant,
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(methods)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "cells": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, names, meta))
    plot(results, names, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
