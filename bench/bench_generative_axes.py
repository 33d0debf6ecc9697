"""Both axes of a super-resolution x2 on held-out Hubble Deep Field data: distortion and realism,
plus consistency with the input, for the classical baselines (the reference rows that SR3 and
the regression U-Net are to be read against).

Data: ``skimage.data.hubble_deep_field`` (``data=hubble``), its held-out right quarter only.
The truth is the high-resolution image; the input is ``model=sr3``'s degradation (Gaussian PSF
sigma 1 px, 2 x 2 area average, Gaussian noise sigma ``--sigma`` = 0.01 on [0, 1] pixels), one
noise draw per seed of ``--seeds``. Regions: ``test_crops`` (``--n-crops`` fixed 128 px crops of
the test half, as ``data.n_test``), ``test_half`` (the whole 436 x 250 px test half) and
``held_out`` (the whole held-out quarter, 872 x 250 px, validation half included).

Rows: ``bicubic`` and ``nearest`` up-sampling of the noisy input, and ``truth`` (the truth
scored against itself: band ratios 1, and the consistency that the input noise alone gives).
Columns, each the mean over seeds (``_std``: the spread over seeds, sample std):
Every measure comes from :func:`astrorestore.evaluation.generative.generative_axes`, the procedure
``infer.py ... truth= report=`` and validation use:
- distortion: PSNR and SSIM (:mod:`astrorestore.metrics.image_quality`, data range = the truth's
  range) and CIE76 / CIEDE2000 Delta E (:mod:`astrorestore.metrics.colour`);
- realism (:mod:`astrorestore.metrics.realism`): output/truth power in 0-0.125, 0.125-0.25 and
  0.25-0.5 cycles/pixel (per image, then the mean over images), colourfulness ratio, sliced
  Wasserstein distances of 4 x 4 RGB patches and of 4 x 4 chroma (Cb, Cr) patches;
- consistency (:mod:`astrorestore.metrics.consistency`): rms(degrade(output) - input) in units of
  the input noise sigma (~1 = consistent) and in 8-bit levels.

Usage: ``python bench/bench_generative_axes.py [--seeds 0,1,2] [--n-crops 16] [--sigma 0.01]
[--psf-sigma 1] [--no-window] [--out bench/results/generative_axes]``; writes ``<out>.json`` and ``<out>.md``. CPU, seconds.
``--smoke``: one seed, 2 test crops (does the bench run?).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import RESULTS, add_output_options

from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
from astrorestore.data.sources.hubble import HubbleFixedCrops, held_out_start, hubble_image
from astrorestore.evaluation.generative import band_name, flat_measures, generative_axes
from astrorestore.metrics.realism import DEFAULT_BANDS

SCALE = 2
PSF_SIGMA = 1.0  # configs/pairing/super_resolution.yaml (--psf-sigma)
CROP = 128  # configs/model/sr3.yaml data.patch_size (high resolution)
DISTORTION = ("psnr", "ssim", "delta_e76", "delta_e2000")
BAND_NAMES = [band_name(lo, hi) for lo, hi in DEFAULT_BANDS]
# Column -> key of evaluation.generative.flat_measures (the procedure's names).
MEASURES = {
    **{name: f"distortion/{name}" for name in DISTORTION},
    **{name: f"realism/{name}" for name in BAND_NAMES},
    **{name: f"realism/{name}" for name in ("colourfulness_ratio", "patch_swd", "chroma_swd")},
    "consistency_sigma": "consistency/error_sigma",
}


def regions(n_crops: int) -> dict[str, torch.Tensor]:
    """Truth batches (B, 3, H, W) in [0, 1] of each held-out region (even sizes for x2)."""
    image = hubble_image()
    h, w = image.shape[:2]
    x0 = held_out_start(w)

    def whole(y0: int, y1: int) -> torch.Tensor:
        part = image[y0:y1, x0:w]
        part = part[: part.shape[0] // SCALE * SCALE, : part.shape[1] // SCALE * SCALE]
        return torch.from_numpy(np.ascontiguousarray(part.transpose(2, 0, 1)))[None]

    crops = HubbleFixedCrops(CROP, n_crops, "test", image=image)
    return {
        "test_crops": torch.stack([crops[i]["rgb"] for i in range(len(crops))]),
        "test_half": whole(h // 2, h),
        "held_out": whole(0, h),
    }


def upsample(low: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(low, scale_factor=SCALE, mode="nearest")
    return F.interpolate(low, scale_factor=SCALE, mode=mode, align_corners=False)


def scores(
    output: torch.Tensor,
    truth: torch.Tensor,
    observed: torch.Tensor,
    pairing: SuperResolutionPairing,
    sigma: float,
    window: bool = True,
) -> dict[str, float]:
    """Every column for one output batch against its truth and its (noisy) input: the
    two-axis procedure infer.py and validation use, plus the consistency in 8-bit levels."""
    measured = flat_measures(
        generative_axes(output, truth, observed, pairing.degrade, sigma=sigma, window=window)
    )
    row = {column: measured[key] for column, key in MEASURES.items()}
    # error_sigma = rms(residual) / sigma for a scalar sigma: the same rms in 8-bit levels.
    row["consistency_8bit"] = row["consistency_sigma"] * sigma * 255.0
    return row


def run(
    seeds: list[int], n_crops: int, sigma: float, psf_sigma: float = PSF_SIGMA, window: bool = True
) -> dict:
    pairing = SuperResolutionPairing(SCALE, psf_sigma=psf_sigma)
    result: dict = {
        "settings": {
            "scale": SCALE,
            "psf_sigma": psf_sigma,
            "hann_window": window,
            "noise_sigma": sigma,
            "seeds": seeds,
            "crop": CROP,
            "n_crops": n_crops,
            "bands": [list(band) for band in DEFAULT_BANDS],
        },
        "regions": {},
    }
    for name, truth in regions(n_crops).items():
        clean_low = pairing.degrade(truth)
        per_seed: dict[str, list[dict[str, float]]] = {"bicubic": [], "nearest": [], "truth": []}
        for seed in seeds:
            noise = torch.randn(clean_low.shape, generator=torch.Generator().manual_seed(seed))
            observed = clean_low + sigma * noise
            for mode in ("bicubic", "nearest"):
                output = upsample(observed, mode)
                per_seed[mode].append(scores(output, truth, observed, pairing, sigma, window))
            # The truth against itself: distortion is trivially perfect (PSNR infinite), so only
            # its realism (1 by construction) and consistency (the input noise alone) are kept.
            reference = scores(truth, truth, observed, pairing, sigma, window)
            per_seed["truth"].append({k: v for k, v in reference.items() if k not in DISTORTION})
        # The same upsampling of the noiseless input: how much of bicubic's loss is the noise.
        noiseless = scores(upsample(clean_low, "bicubic"), truth, clean_low, pairing, sigma, window)
        rows = {row: summarise(values) for row, values in per_seed.items()}
        rows["bicubic_noiseless_input"] = {
            k: v for k, v in noiseless.items() if not k.startswith("consistency")
        }
        result["regions"][name] = {"shape": list(truth.shape), "rows": rows}
        print(name, json.dumps(rows["bicubic"]), flush=True)
    return result


def summarise(values: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in values[0]:
        column = [v[key] for v in values]
        out[key] = statistics.fmean(column)
        out[f"{key}_std"] = statistics.stdev(column) if len(column) > 1 else 0.0
    return out


COLUMNS = [
    ("psnr", "PSNR dB", ".2f"),
    ("ssim", "SSIM", ".3f"),
    ("delta_e76", "ΔE76", ".2f"),
    ("delta_e2000", "ΔE2000", ".2f"),
    *[(name, f"P {name[6:]}", ".3f") for name in BAND_NAMES],
    ("colourfulness_ratio", "colourf.", ".3f"),
    ("patch_swd", "patch SWD", ".4f"),
    ("chroma_swd", "chroma SWD", ".4f"),
    ("consistency_sigma", "consist. σ", ".2f"),
    ("consistency_8bit", "consist. 8-bit", ".2f"),
]


def markdown(result: dict) -> str:
    s = result["settings"]
    window = "Hann-windowed" if s["hann_window"] else "unwindowed"
    lines = [
        "# Super-resolution x2 on the held-out Hubble Deep Field: distortion and realism axes",
        "",
        f"Input: PSF sigma {s['psf_sigma']} px, {s['scale']}x{s['scale']} area average, noise "
        f"sigma {s['noise_sigma']} on [0, 1]; spectra {window}; seeds {s['seeds']} (mean over seeds; spread in the "
        "JSON). P a-b: output/truth power in a-b cycles/pixel (1 = the truth's). Consistency: "
        "rms(degrade(output) - input) in noise sigmas and in 8-bit levels. "
        "Written by `python bench/bench_generative_axes.py`.",
    ]
    for name, region in result["regions"].items():
        lines += [
            "",
            f"## {name} (truth {region['shape']})",
            "",
            "| row | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for row, values in region["rows"].items():
            cells = [format(values[k], f) if k in values else "–" for k, _, f in COLUMNS]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="noise draws (comma-separated)")
    parser.add_argument("--n-crops", type=int, default=16, help="fixed 128 px test crops")
    parser.add_argument("--sigma", type=float, default=0.01, help="input noise on [0, 1]")
    parser.add_argument(
        "--psf-sigma", type=float, default=PSF_SIGMA, help="degradation PSF (HR px; 0 = none)"
    )
    parser.add_argument(
        "--no-window", action="store_true", help="spectra without the Hann window (edge leakage)"
    )
    add_output_options(
        parser, "one seed, 2 test crops", RESULTS / "generative_axes", "path stem of .json/.md"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.n_crops = "0", 2
    seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    result = run(seeds, args.n_crops, args.sigma, args.psf_sigma, not args.no_window)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
