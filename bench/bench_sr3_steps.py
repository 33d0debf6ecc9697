"""SR3 quality against its sampling step count, on both axes, and the measurements behind it.

Super-resolution x2 of held-out Hubble Deep Field crops (``--size`` -> 2 x ``--size`` px, the
``model=sr3`` degradation: Gaussian PSF sigma 1 px, 2 x 2 area average, noise sigma 0.01), at a
budget of ``--train-steps`` optimiser steps (batches of 8) per model, one model per seed of
``--seeds``. Every model is ``model=sr3`` (or ``sr_regression``) composed with ``SR_BENCH`` and
the per-variant overrides of ``--variants`` (``LABEL=override;override``), so a variant states
only what it changes in the shipped config.

Parts (``--parts``):
- ``steps``: for each variant, quality against DDIM step count (``STEP_COUNTS``) on both axes:
  distortion (PSNR, SSIM), realism (output/truth power at 0.125-0.25 and 0.25-0.5 cycles/px,
  :mod:`astrorestore.metrics.realism`) and consistency (rms of degrade(output) - input in units
  of the input noise, :mod:`astrorestore.metrics.consistency`); bicubic and the regression U-Net
  as references; the mean of ``--n-samples`` samples and its 1 sigma / 2 sigma coverage
  (:mod:`astrorestore.metrics.calibration`) at the variant's exported step count. Writes
  ``sr3_steps.json``, ``sr3_steps.md`` and ``sr3_steps.png`` (quality against steps, mean and
  seed spread).
- ``diagnose``: for each variant, the x0 estimate of one network evaluation at fixed noise levels
  sqrt(gamma) (its rms error in units of the residual scale, and its power at 0.25-0.5
  cycles/px): a denoiser that is worse than the Wiener bound min-combination of "the prior
  mean" and "x_t / sqrt(gamma)" at some level has not learnt that level; and the curve against
  steps for the ancestral (stochastic) sampler beside DDIM (eta = 0).

Usage: ``python bench/bench_sr3_steps.py [--parts steps,diagnose] [--train-steps 1500]
[--seeds 0,1,2] [--variants shipped=] [--out bench/results] [--smoke]``. CPU; the budget is
steps, wall times under the shared machine's load say little.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from common import add_output_options, compose, fit_steps, sr3_sample

from astrorestore.colour import to_unit
from astrorestore.diffusion.sampler import (
    predict_x0,
    step,
    to_image,
    to_target,
    upsample,
)
from astrorestore.metrics.calibration import calibration_summary
from astrorestore.metrics.consistency import consistency_error
from astrorestore.metrics.image_quality import psnr_per_image, ssim_per_image
from astrorestore.metrics.realism import band_power_ratio
from astrorestore.train import build

STEP_COUNTS = (1, 2, 5, 10, 25, 50, 100, 250)
LEVELS = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97, 0.995)  # sqrt(gamma) of the diagnosis
# A bench-sized SR3: batches of 8, no LR schedule (the budget is steps), no LPIPS network,
# a small network trained fast (as bench/bench_generative.py), no dropout, EMA 0.995.
SR_BENCH = ["data.batch_size=8", "data.patches_per_epoch=256", "model.compute_lpips=false", "model.n_panel_images=1", "model.scheduler=null",
            "speed.channels_last=false", "model.net.base_channels=16", "model.net.depth=2",
            "model.optimizer.lr=0.002", "model.optimizer.weight_decay=0.01"]  # fmt: skip
SR3_BENCH = ["model.net.dropout=0.0", "model.ema_decay=0.995"]


def overrides(model: str, size: int, variant: str = "") -> list[str]:
    extra = [item for item in variant.split(";") if item]
    sr3 = SR3_BENCH if model == "sr3" else ["model.net.dilations=[1,2]"]
    data = [f"data.patch_size={2 * size}", "data.n_val=4", "data.n_test=16"]
    if any(item.startswith("data=") for item in extra):
        data = []  # the variant names its data and their size
    return [f"model={model}", *SR_BENCH, *sr3, *data, *extra]


def trained(model: str, size: int, variant: str, seed: int, steps: int, cache: Path | None):
    """``(module, budget)``: the model trained for ``steps`` batches from ``seed`` (the cached
    weights when ``cache`` holds this run)."""
    cfg = compose(overrides(model, size, variant))
    torch.manual_seed(seed)
    data, module = build(cfg)[:2]
    tag = hashlib.sha1(f"{variant}|{size}".encode()).hexdigest()[:10]
    key = f"{model}_{tag}_{seed}_{steps}.pt"
    if cache is not None and (cache / key).exists():
        saved = torch.load(cache / key, weights_only=False)
        module.load_state_dict(saved["state"])
        return data, module.eval(), saved["budget"]
    budget = fit_steps(module, data, steps)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"state": module.state_dict(), "budget": budget}, cache / key)
    return data, module.eval(), budget


def test_batch(data, n: int | None = None) -> dict[str, torch.Tensor]:
    """The first ``n`` (all) fixed test crops, paired and normalised."""
    data.setup("test")
    items = [data.test_set[i] for i in range(min(n or len(data.test_set), len(data.test_set)))]
    return data.normalise({k: torch.stack([item[k] for item in items]) for k in items[0]})


def axes(hr: torch.Tensor, low: torch.Tensor, truth: torch.Tensor, pairing) -> dict:
    """Both axes for ``hr``, ``low``, ``truth`` in [0, 1] units (means over images)."""
    ratios = band_power_ratio(hr, truth).mean(0)
    sigma = pairing.noise.sigma
    return {
        "psnr": float(psnr_per_image(hr, truth).mean()),
        "ssim": float(ssim_per_image(hr, truth).mean()),
        "power_mid": float(ratios[1]),
        "power_high": float(ratios[2]),
        "consistency": float(consistency_error(hr, low, pairing.degrade, sigma).mean()),
    }


def draw(module, low: torch.Tensor, steps: int, sampler="ddim", seed=0, back_projection=None):
    """One SR3 draw from the normalised inputs ``low`` (the module's back-projection, or
    ``back_projection`` steps)."""
    cond = upsample(low, 2)
    return sr3_sample(module, cond, steps, sampler, seed, low, back_projection)


class _Raw:
    """``module`` seen with ``net`` as its inference network (the raw weights, no EMA)."""

    def __init__(self, module, net) -> None:
        self.hparams, self.schedule, self.inference_net = module.hparams, module.schedule, net


def steps_curve(module, batch, pairing, sampler: str, counts, back_projection=None) -> list:
    low, truth = to_unit(batch["input"]), to_unit(batch["truth"])
    rows = []
    for n in counts:
        out = to_unit(draw(module, batch["input"], n, sampler, 0, back_projection))
        rows.append({"steps": n, **axes(out, low, truth, pairing)})
    return rows


def samples_summary(module, batch, pairing, n_samples: int) -> dict:
    """The mean of ``n_samples`` draws at the exported step count on both axes, and the
    coverage of the truth by their per-pixel spread."""
    low, truth = to_unit(batch["input"]), to_unit(batch["truth"])
    steps = module.hparams.sample_steps
    draws = [to_unit(draw(module, batch["input"], steps, seed=s)) for s in range(n_samples)]
    draws = torch.stack(draws)
    return {
        "steps": steps,
        **{f"mean_{k}": v for k, v in axes(draws.mean(0), low, truth, pairing).items()},
        **calibration_summary(draws, truth),
    }


def x0_by_level(module, batch, levels=LEVELS, seed: int = 0) -> list[dict]:
    """One network evaluation at each noise level: the x0 estimate's rms error (residual
    units) against the Wiener bound of the two trivial estimates (the prior mean, from the
    noisiest level, and x_t / sqrt(gamma)), and its high-band power relative to the truth."""
    hp = module.hparams
    cond = upsample(batch["input"], 2)
    x0 = to_target(batch["target"], cond, hp.target, hp.residual_scale)
    truth = to_unit(batch["truth"])
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=generator)
    rows, prior = [], None
    for level in sorted(levels):
        gamma = torch.tensor(level**2)
        x_t = module.schedule.add_noise(x0, noise, torch.full((x0.shape[0],), level))
        with torch.no_grad():
            out = module.inference_net(x_t, torch.full((x0.shape[0],), level), cond).float()
        estimate = predict_x0(out, x_t, gamma, hp.prediction)
        error = float((estimate - x0).pow(2).mean().sqrt())
        prior = error if prior is None else prior
        direct = (1 - level**2) ** 0.5 / level
        bound = (prior**-2 + direct**-2) ** -0.5
        image = to_unit(to_image(estimate, cond, hp.target, hp.residual_scale))
        rows.append(
            {
                "level": level,
                "x0_rms_error": error,
                "wiener_bound": bound,
                "power_high": float(band_power_ratio(image, truth).mean(0)[2]),
            }
        )
    return rows


# Star fields x2, the JWST short-wavelength case: the scene's PSF is the optics (FWHM 2.4-3.2
# high-resolution px, i.e. 1.2-1.6 px of the 2x coarser detector), the 2 x 2 area average is the
# detector (no extra blur), Gaussian read/sky noise of STAR_NOISE electrons; PSF family, width and
# crowding drawn per field as data=simulated_randomized does.
STAR_NOISE = 5.0
STAR_DATA = ["data=simulated_randomized", "model.net.channels=1", "data.pairing.psf_sigma=0",
             "data.scene.psf_fwhm=[2.4,3.2]", "data.scene.psf={gaussian:0.5,airy:0.5}",
             "data.scene.sky=20.0", "data.scene.saturation=null", "data.patch_size=64",
             "data.field_size=256", "data.n_train_fields=16", "data.n_test_fields=4",
             "data.val_patches_per_field=2", f"data.pairing.noise.sigma={STAR_NOISE}"]  # fmt: skip
# The residual HR - bicubic(LR) of these fields has std 0.237 in asinh-normalised units
# (measured on a training batch; 0.069 on Hubble crops): model.residual_scale is set to it.
STAR_SR3 = ["model.residual_scale=0.24"]


def star_scores(out: np.ndarray, truth: np.ndarray, catalog: dict, n_stars: int = 40) -> dict:
    """Star fidelity of one high-resolution output (electrons) against the true scene: centroid
    error (px) against the catalogue, aperture flux bias and FWHM ratio against the truth image,
    and the share of detections with no true source within 1.5 px (invented)."""
    from astrorestore.evaluation.detection import detect_sources, match_catalogs, positions
    from astrorestore.evaluation.photometry import aperture_fluxes
    from astrorestore.evaluation.psf import bright_isolated, centroids, fwhm_of_stars

    fwhm, sky = catalog["psf_fwhm"], catalog["sky"]
    xy = positions(catalog)
    pick = bright_isolated(xy, catalog["flux"], catalog["kind"], fwhm, n_stars, out.shape, 4 * fwhm)
    stars = xy[pick]
    centre = centroids(out, stars, fwhm=fwhm, background=sky)
    flux = aperture_fluxes(out, stars, 2 * fwhm, sky=sky)
    true_flux = aperture_fluxes(truth, stars, 2 * fwhm, sky=sky)
    width = fwhm_of_stars(out, stars, fwhm=fwhm, background=sky, model="gaussian")
    true_width = fwhm_of_stars(truth, stars, fwhm=fwhm, background=sky, model="gaussian")
    found = detect_sources(out, fwhm=fwhm, threshold=5.0)
    detected = np.column_stack([found["x"], found["y"]])
    _, matched, _ = match_catalogs(xy, detected, 1.5)
    return {
        "n_stars": len(pick),
        "centroid_error_px": float(np.sqrt(np.nanmean(np.sum((centre - stars) ** 2, 1)))),
        "flux_bias": float(np.nanmedian(flux / true_flux) - 1),
        "fwhm_ratio": float(np.nanmedian(width / true_width)),
        "n_detected": len(detected),
        "invented_fraction": float(1 - len(matched) / max(len(detected), 1)),
        "power_high": float(
            band_power_ratio(
                torch.from_numpy(out)[None, None], torch.from_numpy(truth)[None, None]
            )[0, 2]
        ),
    }


def star_fields(args, cache: Path | None) -> dict:
    """Bicubic, the regression U-Net and SR3 (DDIM at ``--star-steps``) on the test fields."""
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed: dict[str, list] = {}
    for seed in seeds:
        outputs = {}
        data, regression, _ = trained(
            "sr_regression", args.size, ";".join(STAR_DATA), seed, args.train_steps, cache
        )
        sr3_variant = ";".join(STAR_DATA + STAR_SR3 + args.star_variant.split(";"))
        _, sr3, _ = trained("sr3", args.size, sr3_variant, seed, args.train_steps, cache)
        data.setup("test")
        clean = torch.from_numpy(data.test_fields[:, None].astype(np.float32))
        paired = data.pairing({"clean": clean}, torch.Generator().manual_seed(seed))
        normed = data.normalise(paired)
        low = normed["input"]

        def electrons(z: torch.Tensor, normed=normed, data=data) -> np.ndarray:
            return data.normalizer.inverse(z, normed["offset"], normed["scale"])[:, 0].numpy()

        outputs["truth"] = paired["truth"][:, 0].numpy()  # the measuring method's own floor
        outputs["bicubic"] = upsample(paired["input"], 2)[:, 0].numpy()
        with torch.no_grad():
            outputs["sr_regression"] = electrons(regression.net(low))
        for n in args.star_steps:
            outputs[f"sr3_{n}_steps"] = electrons(draw(sr3, low, n, seed=seed))
            if args.back_projection and not sr3.hparams.back_projection:
                name = f"sr3_{n}_steps_back_projection_{args.back_projection}"
                outputs[name] = electrons(draw(sr3, low, n, "ddim", seed, args.back_projection))
        truth = paired["truth"][:, 0].numpy()
        for name, images in outputs.items():
            rows = [
                star_scores(o, t, c)
                for o, t, c in zip(images, truth, data.test_catalogs, strict=True)
            ]
            per_seed.setdefault(name, []).append(
                {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            )
            print(seed, name, per_seed[name][-1], flush=True)
    return {name: summarise(runs) for name, runs in per_seed.items()}


def trajectory(module, batch, steps: int = 50, seed: int = 0) -> list[dict]:
    """Along one DDIM run: the image of each step's x0 estimate, its high-band power relative to
    the truth and its SSIM: do the last (least noisy) steps add structure?"""
    hp = module.hparams
    cond = upsample(batch["input"], 2)
    truth = to_unit(batch["truth"])
    gammas = module.schedule.set_timesteps(steps)
    x = torch.randn(cond.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for k in range(steps):
        with torch.no_grad():
            out = module.inference_net(x, gammas[k].sqrt().expand(x.shape[0]), cond).float()
        x0 = predict_x0(out, x, gammas[k], hp.prediction)
        x = step(x, x0, gammas[k], gammas[k + 1], "ddim")
        image = to_unit(to_image(x0, cond, hp.target, hp.residual_scale))
        rows.append(
            {
                "step": k + 1,
                "level": float(gammas[k].sqrt()),
                "power_high": float(band_power_ratio(image, truth).mean(0)[2]),
                "power_mid": float(band_power_ratio(image, truth).mean(0)[1]),
                "ssim": float(ssim_per_image(image, truth).mean()),
            }
        )
    return rows


def summarise(per_seed: list) -> object:
    """Mean and sample std over seeds of every number of nested dicts/lists (``_std`` keys)."""
    first = per_seed[0]
    if isinstance(first, dict):
        out = {}
        for key in first:
            values = [run[key] for run in per_seed]
            out[key] = summarise(values)
            if isinstance(first[key], float) and len(values) > 1:
                out[f"{key}_std"] = statistics.stdev(values)
        return out
    if isinstance(first, list):
        return [summarise([run[i] for run in per_seed]) for i in range(len(first))]
    if isinstance(first, float):
        return statistics.fmean(per_seed)
    return first


def run_steps(args, variants: dict[str, str], cache: Path | None) -> dict:
    seeds = [int(s) for s in args.seeds.split(",")]
    result: dict = {"settings": dict(vars(args)), "variants": {}}
    per_seed: dict[str, list] = {"bicubic": [], "sr_regression": []}
    for seed in seeds if "references" in args.parts else []:
        data, regression, budget = trained(
            "sr_regression", args.size, "", seed, args.train_steps, cache
        )
        batch = test_batch(data, args.n_test)
        low, truth = to_unit(batch["input"]), to_unit(batch["truth"])
        bicubic = to_unit(upsample(batch["input"], 2))
        per_seed["bicubic"].append(axes(bicubic, low, truth, data.pairing))
        with torch.no_grad():
            out = to_unit(regression.net(batch["input"]))
        per_seed["sr_regression"].append({**budget, **axes(out, low, truth, data.pairing)})
        print(seed, "sr_regression", per_seed["sr_regression"][-1], flush=True)
    for name, runs in per_seed.items():
        result[name] = summarise(runs) if runs else None
    for label, variant in variants.items() if "steps" in args.parts else []:
        runs = []
        for seed in seeds:
            data, module, budget = trained("sr3", args.size, variant, seed, args.train_steps, cache)
            batch = test_batch(data, args.n_test)
            run = {"budget": budget}
            run["ddim"] = steps_curve(module, batch, data.pairing, "ddim", args.counts)
            run["samples"] = samples_summary(module, batch, data.pairing, args.n_samples)
            if "diagnose" in args.parts:
                run["ancestral"] = steps_curve(
                    module, batch, data.pairing, "ancestral", args.counts
                )
                run["x0_by_level"] = x0_by_level(module, batch)
                run["trajectory_50"] = trajectory(module, batch)
                run[f"ddim_back_projection_{args.back_projection}"] = steps_curve(
                    module, batch, data.pairing, "ddim", args.counts, args.back_projection
                )
                raw = module.net  # the trained weights, not their moving average
                run["raw_weights"] = steps_curve(
                    _Raw(module, raw), batch, data.pairing, "ddim", (1, 50)
                )
            runs.append(run)
            print(seed, label, json.dumps(run), flush=True)
        result["variants"][label] = {"overrides": variant, **summarise(runs)}
    return result


def markdown(result: dict) -> str:
    lines = []
    refs = {k: result[k] for k in ("bicubic", "sr_regression") if result[k]}
    head = "| {} | PSNR | SSIM | power 0.125-0.25 | power 0.25-0.5 | consistency (÷σ) |"
    for label, entry in result["variants"].items():
        lines += [f"### {label} (`{entry['overrides'] or 'shipped'}`)", "",
                  head.format("DDIM steps"), "|---|---|---|---|---|---|"]  # fmt: skip
        for name, row in refs.items():
            lines.append(_row(name, row))
        for row in entry["ddim"]:
            lines.append(_row(str(row["steps"]), row))
        s = entry["samples"]
        lines += [
            "",
            f"Mean of {int(s['n_samples'])} samples at {s['steps']} steps: SSIM "
            f"{s['mean_ssim']:.3f}, PSNR {s['mean_psnr']:.2f}; coverage 1σ "
            f"{s['coverage_1sigma']:.3f} (calibrated: {s['expected_1sigma']:.3f}), 2σ "
            f"{s['coverage_2sigma']:.3f} ({s['expected_2sigma']:.3f}).",
            "",
        ]
    return "\n".join(lines) + "\n"


def _row(name: str, row: dict) -> str:
    def cell(key: str, fmt: str) -> str:
        std = row.get(f"{key}_std")
        return format(row[key], fmt) + ("" if std is None else " ± " + format(std, fmt))

    return (
        f"| {name} | {cell('psnr', '.2f')} | {cell('ssim', '.3f')} | {cell('power_mid', '.2f')} "
        f"| {cell('power_high', '.2f')} | {cell('consistency', '.2f')} |"
    )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ssim", "SSIM"), ("psnr", "PSNR (dB)"), ("power_high", "power 0.25-0.5 c/px ÷ truth"),
              ("consistency", "consistency (÷ input σ)")]  # fmt: skip
    fig, axs = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (key, title) in zip(axs, panels, strict=True):
        for label, entry in result["variants"].items():
            rows = entry["ddim"]
            x = [r["steps"] for r in rows]
            y = np.array([r[key] for r in rows])
            e = np.array([r.get(f"{key}_std", 0.0) for r in rows])
            ax.errorbar(x, y, yerr=e, marker="o", capsize=2, label=f"SR3 {label}")
        for name, style in (("bicubic", ":"), ("sr_regression", "--")):
            if result[name]:
                ax.axhline(result[name][key], ls=style, color="k", label=name)
        if key == "power_high":
            ax.axhspan(0.8, 1.25, color="g", alpha=0.1, label="gate")
        ax.set_xscale("log")
        ax.set_xlabel("DDIM steps")
        ax.set_title(title)
    axs[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def star_markdown(rows: dict) -> str:
    lines = ["| star fields x2 | centroid error (px) | flux bias | FWHM ÷ truth's | invented "
             "sources | detections | power 0.25-0.5 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['centroid_error_px']:.3f} | {row['flux_bias']:+.3f} | "
            f"{row['fwhm_ratio']:.3f} | {row['invented_fraction']:.3f} | {row['n_detected']:.0f} "
            f"| {row['power_high']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        default="references,steps,stars",
        help="references (bicubic, regression), steps, diagnose, stars",
    )
    parser.add_argument("--train-steps", type=int, default=1500)
    parser.add_argument("--size", type=int, default=32, help="low-resolution crop size")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=16, help="test crops scored (of 16)")
    parser.add_argument(
        "--variants", default="shipped=", help="LABEL=override;override,... (sr3 overrides)"
    )
    parser.add_argument("--star-steps", default="1,50", help="SR3 DDIM step counts on stars")
    parser.add_argument("--star-variant", default="", help="override;override for the SR3")
    parser.add_argument(
        "--back-projection",
        type=int,
        default=3,
        help="diagnose and stars: also sample with this many back-projection steps",
    )
    parser.add_argument("--cache", default=None, help="folder of trained weights to reuse")
    add_output_options(parser, "20 steps, one seed, 2 step counts")
    args = parser.parse_args()
    args.counts = STEP_COUNTS
    if args.smoke:
        args.train_steps, args.seeds, args.n_samples, args.counts = 20, "0", 2, (1, 5)
        args.star_steps = "2"
    args.star_steps = [int(n) for n in args.star_steps.split(",")]
    variants = dict(spec.partition("=")[::2] for spec in args.variants.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else None
    text = ""
    if {"steps", "references", "diagnose"} & set(args.parts.split(",")):
        result = run_steps(args, variants, cache)
        (out / "sr3_steps.json").write_text(json.dumps(result, indent=1, default=str))
        text += markdown(result)
        plot(result, out / "sr3_steps.png")
    if "stars" in args.parts:
        stars = star_fields(args, cache)
        (out / "sr3_star_fields.json").write_text(json.dumps(stars, indent=1))
        text += "\n" + star_markdown(stars)
    (out / "sr3_steps.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
