"""Benchmark the generative methods on the held-out Hubble region, at a budget of STEPS.

The machine is shared, so the budget is a number of optimiser steps (batches of 8), the same
for every model; wall times printed beside it are under load and say little. Results go to
``bench/results/generative.json`` and ``generative_steps.png``.

1. Colorization (``--size`` px crops): the cGAN (L1 x 100 + 0.3 x LSGAN) and an L1-only
   generator of the same size (``adversarial_weight=0``) in each colour space of
   ``--color-spaces``, against "grey copied to three channels", each generator trained once
   per seed of ``--seeds`` (0,1,2) and scored by the moving average of its weights
   (``--ema-decay``, 0.999 as ``model=cgan_colorize``; 0 for the trained weights). Scored on every non-overlapping crop of the held-out test
   region (``--test-crops grid``: 91 at 32 px) per crop: CIE76 ΔE (lower is better), SSIM on
   RGB in [0, 1], colourfulness. Rows give the mean over seeds and its spread (sample std);
   rows are also compared crop by crop (fraction of crops where the cGAN is better, mean
   paired difference and its standard error over crops). Gate: the cGAN beats both baselines
   on ΔE and SSIM by more than the seed spread AND by more than 2 paired standard errors.
   ``--warmup W:R`` adds one cGAN row whose adversarial weight is 0 for W batches, then ramps.
2. Super-resolution x2 (``--size`` -> 2 x ``--size``): SR3 (the ``model=sr3`` defaults:
   residual target, x0 prediction) and the regression U-Net (``sr_regression``) against
   bicubic. SSIM, LPIPS (only with real AlexNet weights), consistency error =
   rms(degrade(output) - input) / input noise sigma (the noisy input scores ~1 against its
   noiseless version, so ~1 is consistent within the noise), and flux error =
   |sum(output) / (sum(input) s²) - 1|. The SR3 rows are DDIM at the exported 25 steps (not
   picked on the test set); ``--sr3-variants`` lists the (target, prediction) pairs trained,
   the first being the gated row: by default the residual/v model and plain SR3 (image/eps).
   Gate: SR3 beats bicubic on SSIM (and LPIPS where weights exist), consistency <= 1.5.
3. Sampling time per 128² output image against step count and sampler (DDIM, ancestral),
   SR3 SSIM against step count (the plot), and a seam check of the stochastic restorer: a
   124² frame of the held-out quarter (248² output) super-resolved whole and in 48 px tiles
   with the same seed.

Usage: ``python bench/bench_generative.py [--steps 2000] [--size 32] [--parts ...] [--out FOLDER]
[--seeds 0,1,2] [--test-crops grid|N] [--smoke]``. Every model is a shipped config (``model=cgan_colorize``,
``sr3``, ``sr_regression``) composed with the overrides in ``BENCH``, ``SR_FAST`` and per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import RESULTS, add_output_options, compose, fit_steps, sr3_sample

from astrorestore.colour import to_unit
from astrorestore.data.datamodules.photos import HubbleDataModule
from astrorestore.data.sources.hubble import held_out_start, hubble_image
from astrorestore.diffusion.sampler import SuperResolutionSampler, upsample
from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import Restorer
from astrorestore.metrics.colour import colourfulness, delta_e76
from astrorestore.metrics.image_quality import photo_ssim as ssim_rgb
from astrorestore.metrics.image_quality import photo_ssim_per_image as ssim_per_image
from astrorestore.metrics.lpips_metric import build_lpips
from astrorestore.modules.diffusion import DiffusionModule
from astrorestore.train import build

OUT = RESULTS  # --out
SR3_SAMPLE_STEPS = 25
DDIM_CHOICES = (1, 2, 5, 10, 25, 50)
CURVE_STEPS = (1, 2, 5, 10, 25, 50, 250)
# What the bench changes in the shipped configs, every model alike: a bench-sized budget
# (batches of 8, 256 patches an "epoch"), no LR schedule (the budget is steps, not epochs), the
# trained network alone (no LPIPS network, one panel), PSNR as the monitor, NCHW.
BENCH = ["data.batch_size=8", "data.patches_per_epoch=256", "model.compute_lpips=false",
         "model.n_panel_images=1", "monitor.metric=val/psnr", "monitor.mode=max",
         "model.scheduler=null", "speed.channels_last=false"]  # fmt: skip
# The super-resolution networks at the bench's size, trained faster than the shipped configs
# (AdamW at 2e-3 with torch's default weight decay 0.01).
SR_FAST = ["model.net.base_channels=16", "model.net.depth=2", "model.optimizer.lr=0.002",
           "model.optimizer.weight_decay=0.01"]  # fmt: skip


ACCELERATOR = "cpu"  # --device cuda trains on one GPU; scoring and sampling stay on the CPU


def fit(module: L.LightningModule, data: HubbleDataModule, steps: int) -> dict:
    """Train for ``steps`` batches; a GAN batch steps two optimisers, which Lightning's
    ``global_step`` counts twice."""
    per_batch = 2 if getattr(module.hparams, "adversarial_weight", 0) > 0 else 1
    clip = None if not module.automatic_optimization else 1.0
    budget = fit_steps(module, data, steps * per_batch, ACCELERATOR, clip)
    return budget | {"train_steps": budget["train_steps"] // per_batch}


def held_out_batch(data: HubbleDataModule, split: str) -> dict[str, torch.Tensor]:
    """Every fixed crop of the held-out ``split`` (``val`` or ``test``), paired, normalised."""
    data.setup("fit" if split == "val" else "test")
    items = data.val_set if split == "val" else data.test_set
    items = [items[i] for i in range(len(items))]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    return data.normalise(batch)


def test_batch(data: HubbleDataModule) -> dict[str, torch.Tensor]:
    return held_out_batch(data, "test")


def test_grid(size: int) -> list[tuple[int, int]]:
    """Corners of every non-overlapping ``size`` px crop of the held-out test region (the
    bottom half of the right quarter), the grid centred in it: 13 x 7 = 91 crops at 32 px."""
    image = hubble_image()
    h, w = image.shape[:2]
    y0, y1, x0, x1 = h // 2, h, held_out_start(w), w
    rows, cols = (y1 - y0) // size, (x1 - x0) // size
    y0 += ((y1 - y0) - rows * size) // 2
    x0 += ((x1 - x0) - cols * size) // 2
    return [(y0 + i * size, x0 + j * size) for i in range(rows) for j in range(cols)]


class _GridCrops(torch.utils.data.Dataset):
    """``{"clean": (3, P, P)}`` crops of the Hubble image at fixed corners."""

    def __init__(self, corners: list[tuple[int, int]], size: int) -> None:
        self.image, self.corners, self.size = hubble_image(), corners, size

    def __len__(self) -> int:
        return len(self.corners)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        y, x = self.corners[index]
        crop = self.image[y : y + self.size, x : x + self.size].transpose(2, 0, 1)
        return {"clean": torch.from_numpy(np.ascontiguousarray(crop))}


def colour_test_batch(data: HubbleDataModule, test_crops: str) -> dict[str, torch.Tensor]:
    """The held-out test batch: ``grid`` = every non-overlapping crop of the test region,
    else that many crops of the data module's fixed grid (36 was the old default)."""
    if test_crops != "grid":
        return test_batch(data)
    grid = _GridCrops(test_grid(data.patch_size), data.patch_size)
    return data.normalise(dict(data.fixed_examples(grid, data.fixed_seeds()[1]).tensors))


def colorization(
    steps: int,
    size: int,
    spaces: list[str],
    gan_loss: str,
    seeds: list[int] = (0,),
    extra: list[tuple[str, float]] = (),
    adversarial_weight: float = 0.3,
    test_crops: str = "grid",
    warmup: tuple[int, int] = (0, 0),
    feature_matching: float = 0.0,
    ema_decay: float | None = None,
) -> dict:
    """cGAN and L1-only generators per colour space, each trained once per seed (init, data
    order and crops); ``extra`` (gan loss, adversarial weight) pairs add cGAN rows in the first
    space; ``warmup`` (L1-only steps, ramp steps) adds a cGAN row whose adversarial weight is 0
    for the first steps, then rises linearly; ``feature_matching`` > 0 adds a cGAN row with that
    feature-matching weight; ``ema_decay`` scores every generator (cGAN and L1-only alike) by
    its exponential moving average of weights. Every row keeps its per-crop scores so that rows
    compare crop by crop (:func:`paired`)."""
    rows: dict = {}
    runs = [(space, "cgan", gan_loss, adversarial_weight, (0, 0), 0.0) for space in spaces]
    runs += [(space, "l1_only", gan_loss, 0.0, (0, 0), 0.0) for space in spaces]
    runs += [(spaces[0], f"cgan_{loss}_w{w:g}", loss, w, (0, 0), 0.0) for loss, w in extra]
    if any(warmup):
        name = f"cgan_warmup{warmup[0]}_ramp{warmup[1]}"
        runs += [(spaces[0], name, gan_loss, adversarial_weight, warmup, 0.0)]
    if feature_matching > 0:
        name = f"cgan_fm{feature_matching:g}"
        runs += [(spaces[0], name, gan_loss, adversarial_weight, (0, 0), feature_matching)]
    per_crop: dict[str, list[dict]] = {}
    for space, kind, loss, weight, (warm, ramp), matching in runs:
        key = f"{kind}_{space}"
        per_crop[key] = []
        for seed in seeds:
            torch.manual_seed(seed)
            data, module = build(
                compose(
                    _colour_config(space, size, seed, test_crops)
                    + [
                        f"model.adversarial_weight={weight}",
                        f"model.adversarial_warmup_steps={warm}",
                        f"model.adversarial_ramp_steps={ramp}",
                        f"model.feature_matching_weight={matching}",
                        f"model.gan_loss={loss}",
                        f"model.ema_decay={'null' if ema_decay is None else ema_decay}",
                    ]
                )
            )
            budget = fit(module, data, steps)
            batch = colour_test_batch(data, test_crops)
            with torch.no_grad():
                rgb = to_unit(module.eval().restore(batch["input"]))
            truth = to_unit(batch["truth"])
            per_crop[key].append({**budget, **_colour_scores(rgb, truth)})
            print(key, f"seed {seed}", _means(per_crop[key][-1]), flush=True)
        rows[key] = _summary(per_crop[key], seeds)
    # The luminance differs between colour spaces (BT.601 luma vs L*); the baseline uses the
    # first space's, as its generators see. It is deterministic: one "seed".
    base_data = build(compose(_colour_config(spaces[0], size, seeds[0], test_crops)))[0]
    base = colour_test_batch(base_data, test_crops)
    grey = to_unit(base["input"]).expand(-1, 3, -1, -1)
    truth = to_unit(base["truth"])  # the crops the grey copy was made from
    per_crop["grey_copy"] = [_colour_scores(grey, truth)]
    rows["grey_copy"] = _summary(per_crop["grey_copy"], [None])
    rows["truth"] = {"colourfulness": float(colourfulness(truth).mean())}
    rows["n_test_crops"] = int(truth.shape[0])
    rows["seeds"] = list(seeds)
    rows["ema_decay"] = ema_decay
    gated = f"cgan_{spaces[0]}"
    rows["paired"] = {
        f"{name}_vs_{other}": paired(per_crop[name], per_crop[other])
        for name in per_crop
        if name.startswith("cgan")
        for other in (f"l1_only_{spaces[0]}", "grey_copy")
    }
    rows["gate_row"] = gated
    rows["gate"] = {
        other: _beats(rows[gated], rows[other], rows["paired"][f"{gated}_vs_{other}"])
        for other in (f"l1_only_{spaces[0]}", "grey_copy")
    }
    rows["gate_met"] = bool(all(all(g.values()) for g in rows["gate"].values()))
    return rows


METRICS = ("delta_e", "ssim", "colourfulness")
LOWER_IS_BETTER = {"delta_e": True, "ssim": False}


def _means(scores: dict) -> dict:
    return {k: float(np.mean(v)) if k in METRICS else v for k, v in scores.items()}


def _summary(runs: list[dict], seeds: list) -> dict:
    """Mean and spread (sample std over seeds; 0 for one run) of each metric's crop mean."""
    out: dict = {"seeds": seeds, "per_seed": [_means(r) for r in runs]}
    for metric in METRICS:
        values = [float(np.mean(r[metric])) for r in runs]
        out[metric] = float(np.mean(values))
        out[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


def paired(runs: list[dict], others: list[dict]) -> dict:
    """Crop-by-crop comparison of two rows on the same test crops. Each row's per-crop score
    is averaged over its seeds (a deterministic row has one); then, per metric: the fraction
    of crops where ``runs`` is better, and the mean difference (runs - others) with its
    standard error over crops. Per seed as well when both rows have the same seeds."""
    out: dict = {}
    for metric, lower in LOWER_IS_BETTER.items():
        a = np.mean([r[metric] for r in runs], axis=0)
        b = np.mean([r[metric] for r in others], axis=0)
        diff = a - b
        out[metric] = {
            "mean_diff": float(diff.mean()),
            "se": float(diff.std(ddof=1) / np.sqrt(diff.size)),
            "fraction_better": float(np.mean(diff < 0 if lower else diff > 0)),
        }
        if len(runs) == len(others) > 1:
            out[metric]["per_seed_mean_diff"] = [
                float(np.mean(np.asarray(r[metric]) - np.asarray(o[metric])))
                for r, o in zip(runs, others, strict=True)
            ]
    return out


def _beats(row: dict, other: dict, pair: dict) -> dict:
    """Better on the mean over seeds by more than the larger seed spread of the two rows, and
    on the paired per-crop difference by more than two standard errors, for ΔE and SSIM."""
    out = {}
    for metric, lower in LOWER_IS_BETTER.items():
        gain = (other[metric] - row[metric]) if lower else (row[metric] - other[metric])
        spread = max(row[f"{metric}_std"], other[f"{metric}_std"])
        out[metric] = bool(
            gain > spread and abs(pair[metric]["mean_diff"]) > 2 * pair[metric]["se"]
        )
    return out


def _colour_config(space: str, size: int, seed: int, test_crops: str) -> list[str]:
    """Overrides of ``model=cgan_colorize`` for one colorization run: the colour space, crop
    size and data seed, a generator and discriminator of 16 channels (one layer fewer below
    64 px crops) seeing RGB, no discriminator LR schedule."""
    n_test = 36 if test_crops == "grid" else int(test_crops)
    return [
        "model=cgan_colorize",
        *BENCH,
        "model.discriminator_scheduler=null",
        f"data.pairing.color_space={space}",
        f"data.patch_size={size}",
        "data.n_val=4",
        f"data.n_test={n_test}",
        f"data.seed={seed}",
        "model.net.base_channels=16",
        "model.discriminator.base_channels=16",
        f"model.discriminator.n_layers={2 if size >= 64 else 1}",
        # The discriminator these tables were measured with (before issue 23, which made the
        # chroma one the default; bench_colorize_realism.py measures that).
        "model.discriminator_input=rgb",
        "model.discriminator.in_channels=4",
        "model.chroma_gain=1",
    ]


def _colour_scores(rgb: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per-crop lists: CIE76 ΔE (mean over pixels), SSIM, colourfulness."""
    return {
        "delta_e": delta_e76(rgb, truth).tolist(),
        "ssim": ssim_per_image(rgb, truth),
        "colourfulness": colourfulness(rgb).tolist(),
    }


def _sr_scores(hr: torch.Tensor, low: torch.Tensor, truth: torch.Tensor, pairing, lpips) -> dict:
    """``hr``, ``low``, ``truth`` in [0, 1] units."""
    redegraded = pairing.degrade(hr)
    scores = {
        "ssim": ssim_rgb(hr, truth),
        "consistency": float((redegraded - low).pow(2).mean().sqrt() / pairing.noise.sigma),
        "flux_error": float(
            (hr.sum((1, 2, 3)) / (low.sum((1, 2, 3)) * pairing.upscale_factor**2) - 1).abs().mean()
        ),
    }
    if lpips is not None:
        with torch.no_grad():
            scores["lpips"] = float(lpips(2 * hr - 1, 2 * truth - 1).mean())
    return scores


def _sr_config(model: str, size: int, extra: list[str] = ()) -> list[str]:
    """Overrides of ``model=<model>`` (``sr3``, ``sr_regression``) at ``size`` px low-resolution
    crops (x2), 16 validation and 16 test crops."""
    return [f"model={model}", *BENCH, *SR_FAST, f"data.patch_size={2 * size}", "data.n_val=16",
            "data.n_test=16", *extra]  # fmt: skip


def _sr3(target: str, prediction: str, size: int = 32) -> DiffusionModule:
    """An SR3 of the bench's size (no dropout, EMA 0.995, exported DDIM at 25 steps)."""
    torch.manual_seed(0)
    extra = [f"model.target={target}", f"model.prediction={prediction}", "model.net.dropout=0.0",
             "model.ema_decay=0.995", f"model.sample_steps={SR3_SAMPLE_STEPS}"]  # fmt: skip
    return build(compose(_sr_config("sr3", size, extra)))[1]


def _sample(module: DiffusionModule, cond: torch.Tensor, steps: int, sampler: str, seed: int = 0):
    return sr3_sample(module, cond, steps, sampler, seed)


def super_resolution(
    steps: int, size: int, variants: list[tuple[str, str]], extras: bool = True
) -> dict:
    # One data module for every model: they train on the same crops and noise stream.
    data = build(compose(_sr_config("sr3", size)))[0]
    pairing = data.pairing
    lpips = build_lpips(None)
    batch = test_batch(data)
    low, truth = to_unit(batch["input"]), to_unit(batch["truth"])
    cond = upsample(batch["input"], 2)
    val = held_out_batch(data, "val")
    val_cond = upsample(val["input"], 2)
    rows: dict = {"bicubic": _sr_scores(to_unit(cond), low, truth, pairing, lpips)}

    if extras:
        torch.manual_seed(0)
        dilations = ["model.net.dilations=[1,2]"]
        regression = build(compose(_sr_config("sr_regression", size, dilations)))[1]
        budget = fit(regression, data, steps)
        with torch.no_grad():
            out = to_unit(regression.eval().net(batch["input"]))
        rows["sr_regression"] = {**budget, **_sr_scores(out, low, truth, pairing, lpips)}
        print("sr_regression", rows["sr_regression"], flush=True)

    modules = {}
    for target, prediction in variants:
        module = _sr3(target, prediction, size)
        budget = fit(module, data, steps)
        module.eval()
        # The DDIM step count (<= 50) is chosen on the validation crops, then scored on test.
        val_ssim = {
            n: ssim_rgb(to_unit(_sample(module, val_cond, n, "ddim")), to_unit(val["truth"]))
            for n in DDIM_CHOICES
        }
        chosen = max(val_ssim, key=val_ssim.get)
        name = f"sr3_{target}_{prediction}"
        out = to_unit(_sample(module, cond, chosen, "ddim"))
        at_25 = to_unit(_sample(module, cond, SR3_SAMPLE_STEPS, "ddim"))
        rows[name] = {
            **budget,
            "ddim_steps": chosen,
            "val_ssim_by_steps": val_ssim,
            **_sr_scores(out, low, truth, pairing, lpips),
            f"at_{SR3_SAMPLE_STEPS}_steps": _sr_scores(at_25, low, truth, pairing, lpips),
        }
        print(name, rows[name], flush=True)
        modules[name] = module
    main_row = f"sr3_{variants[0][0]}_{variants[0][1]}"
    best = rows[main_row]
    rows["gate_row"] = f"{main_row}, DDIM {best['ddim_steps']} steps (chosen on validation)"
    rows["gate_met"] = bool(
        best["ssim"] > rows["bicubic"]["ssim"]
        and best["consistency"] <= 1.5
        and ("lpips" not in best or best["lpips"] < rows["bicubic"]["lpips"])
    )
    result = {"table": rows, "lpips": lpips is not None}
    if not extras:
        return result

    sr3 = modules[main_row]
    curve = []
    for sampler in ("ddim", "ancestral"):
        for n in CURVE_STEPS:
            out = to_unit(_sample(sr3, cond, n, sampler))
            curve.append(
                {"sampler": sampler, "steps": n, **_sr_scores(out, low, truth, pairing, lpips)}
            )
            print(curve[-1], flush=True)
    result.update(steps_curve=curve, timing=sampling_time(sr3), seams=seam_check(sr3, data))
    return result


def sampling_time(module: DiffusionModule, repeats: int = 3) -> list[dict]:
    """Seconds to sample one 128² output image, the fastest of ``repeats`` (the CPU is shared:
    the minimum is the least disturbed); the cost does not depend on the weights."""
    one = upsample(torch.zeros(1, 3, 64, 64), 2)
    timing = []
    for sampler in ("ddim", "ancestral"):
        for n in CURVE_STEPS:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                _sample(module, one, n, sampler)
                times.append(time.perf_counter() - start)
            timing.append({"sampler": sampler, "steps": n, "seconds_per_128px_image": min(times)})
            print(timing[-1], flush=True)
    return timing


def seam_check(module: DiffusionModule, data: HubbleDataModule) -> dict:
    """A 124² low-resolution frame (248² output: the held-out quarter is 250 px wide)
    super-resolved whole and in 48 px tiles (overlap 10) with one seed, and whole with a second
    seed: tiling should differ from the whole frame by no more than two seeds differ, with no
    step at tile edges."""
    image = hubble_image()
    x0 = held_out_start(image.shape[1])
    truth = torch.from_numpy(image[600:848, x0 : x0 + 248].transpose(2, 0, 1).copy())[None]
    generator = torch.Generator().manual_seed(1)
    pairing = data.pairing
    noise = pairing.noise.sigma * torch.randn(1, 3, 124, 124, generator=generator)
    low = pairing.degrade(truth) + noise
    low_np = low[0].permute(1, 2, 0).numpy()
    hp = module.hparams
    fn = SuperResolutionSampler(
        module.ema,
        2,
        SR3_SAMPLE_STEPS,
        "ddim",
        hp.prediction,
        module.schedule.config(),
        hp.target,
        hp.residual_scale,
    )
    restorer = Restorer(fn, data.normalizer, 3, 3, 2, 2, torch.device("cpu"), "sr3", "bench")
    whole = restore_image(low_np, restorer, 124, 0, 1, False, seed=0)
    other = restore_image(low_np, restorer, 124, 0, 1, False, seed=1)
    tiled = restore_image(low_np, restorer, 48, 10, 4, False, seed=0)
    truth_np = truth[0].permute(1, 2, 0).numpy()

    def rms(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sqrt(np.mean((a - b) ** 2)))

    def edge_step(out: np.ndarray) -> float:
        # 48 px tiles with 10 px overlap start at 0, 38, 76 of the 124 px input: they are
        # blended over input pixels [38, 48) and [76, 86), output [76, 96) and [152, 172).
        # Mean |gradient| across those bands over its mean elsewhere: ~1 means no seam.
        band = np.zeros(out.shape[1] - 1, dtype=bool)
        band[75:96] = band[151:172] = True
        across_x = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))
        across_y = np.abs(np.diff(out, axis=0)).mean(axis=(1, 2))
        profile = 0.5 * (across_x + across_y)
        return float(profile[band].mean() / profile[~band].mean())

    to_t = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy())[None]  # noqa: E731
    return {
        "rms_tiled_vs_whole": rms(tiled, whole),
        "rms_seed0_vs_seed1": rms(whole, other),
        "ssim_whole": ssim_rgb(to_t(whole), truth),
        "ssim_tiled": ssim_rgb(to_t(tiled), truth),
        "edge_step_tiled": edge_step(tiled),
        "edge_step_whole": edge_step(whole),
        "rms_tiled_vs_truth": rms(tiled, truth_np),
        "rms_whole_vs_truth": rms(whole, truth_np),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    sr = result["super_resolution"]
    for sampler in ("ddim", "ancestral"):
        pts = [c for c in sr["steps_curve"] if c["sampler"] == sampler]
        ax1.plot([p["steps"] for p in pts], [p["ssim"] for p in pts], "o-", label=f"SR3 {sampler}")
        tms = [t for t in sr["timing"] if t["sampler"] == sampler]
        ax2.plot(
            [t["steps"] for t in tms],
            [t["seconds_per_128px_image"] for t in tms],
            "o-",
            label=sampler,
        )
    ax1.axhline(sr["table"]["bicubic"]["ssim"], color="k", ls="--", label="bicubic")
    ax1.axhline(sr["table"]["sr_regression"]["ssim"], color="g", ls=":", label="sr_regression")
    ax1.set(xlabel="sampling steps", ylabel="SSIM (held-out Hubble)", xscale="log")
    ax2.set(xlabel="sampling steps", ylabel="s per 128² image (shared CPU)", xscale="log")
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training batches per model")
    parser.add_argument("--size", type=int, default=32, help="colour crop / SR low-res size")
    parser.add_argument("--color-spaces", default="ycbcr,rgb", help="first one is gated")
    parser.add_argument("--gan-loss", default="lsgan", choices=["vanilla", "lsgan", "hinge"])
    parser.add_argument(
        "--seeds", default="0,1,2", help="colorization: init and data seeds, one run per seed"
    )
    parser.add_argument(
        "--test-crops",
        default="grid",
        help="colorization: 'grid' (every non-overlapping crop of the held-out test region: 91 "
        "at 32 px) or a number of the data module's fixed crops (36 before)",
    )
    parser.add_argument(
        "--warmup",
        default="",
        help="colorization: add a cGAN row with L1-only warm-up then a linear adversarial "
        "ramp, as 'warmup_steps:ramp_steps' (e.g. 1000:500)",
    )
    parser.add_argument(
        "--adversarial-weight", type=float, default=0.3, help="colorization: the cGAN's"
    )
    parser.add_argument(
        "--feature-matching",
        type=float,
        default=0.0,
        help="colorization: add a cGAN row with this feature-matching weight (e.g. 10)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="colorization: every generator (cGAN and L1-only alike) is scored by the "
        "exponential moving average of its weights with this decay, as model=cgan_colorize "
        "exports (model.ema_decay, 0.999); 0: the trained weights themselves (the earlier tables)",
    )
    parser.add_argument(
        "--extra-cgan", default="", help="colorization: more cGAN rows, e.g. vanilla:1,hinge:0.5"
    )
    parser.add_argument(
        "--sr3-variants",
        default="residual:v,image:eps",
        help="target:prediction pairs; the first is the SR3 row (and its curves)",
    )
    parser.add_argument(
        "--parts", default="colorization,super_resolution", help="and/or timing (alone: fast)"
    )
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="SR: train only the SR3 variants (no regression, curves, timing, seams)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    add_output_options(
        parser, "2 steps, one seed, one colour space on 4 test crops, one SR3 variant, no extras"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cuda: train on one GPU (fp32); scoring, sampling and timing stay on the CPU",
    )
    args = parser.parse_args()
    global ACCELERATOR, OUT
    OUT = Path(args.out)
    if args.smoke:
        args.steps, args.seeds, args.color_spaces, args.test_crops = 2, "0", "ycbcr", "4"
        args.sr3_variants, args.no_extras = "residual:v", True
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here; run without --device")
        ACCELERATOR = "gpu"
    else:
        torch.set_num_threads(1)
    start = time.perf_counter()
    parts = args.parts.split(",")
    result: dict = {
        "budget": f"{args.steps} training steps (batches of 8) per model, "
        + ("1 CPU thread" if args.device == "cpu" else f"on {torch.cuda.get_device_name()}"),
        "size": args.size,
    }
    if "colorization" in parts:
        extra = [(v.split(":")[0], float(v.split(":")[1])) for v in args.extra_cgan.split(",") if v]
        if args.test_crops != "grid" and not args.test_crops.isdigit():
            parser.error(f"--test-crops={args.test_crops!r}: use 'grid' or a number of crops")
        if args.test_crops != "grid" and len(args.seeds.split(",")) > 1:
            # The data module's fixed crops depend on its seed: rows of several seeds would
            # not be compared crop by crop.
            parser.error("--test-crops N takes one seed (--seeds 0); use the grid for several")
        warmup = tuple(int(v) for v in args.warmup.split(":")) if args.warmup else (0, 0)
        result["colorization"] = colorization(
            args.steps,
            args.size,
            args.color_spaces.split(","),
            args.gan_loss,
            [int(v) for v in args.seeds.split(",")],
            extra,
            args.adversarial_weight,
            args.test_crops,
            warmup,
            args.feature_matching,
            args.ema_decay or None,
        )
    if "timing" in parts:
        # Timing alone (an untrained SR3 of the bench's size costs the same as a trained one);
        # redraws the plot of an earlier super-resolution run with these timings.
        result["timing"] = sampling_time(_sr3("residual", "v", args.size).eval())
        earlier = OUT / "generative_super_resolution.json"
        if "super_resolution" not in parts and earlier.is_file():
            previous = json.loads(earlier.read_text())
            previous["super_resolution"]["timing"] = result["timing"]
            plot(previous, OUT / "generative_steps.png")
    if "super_resolution" in parts:
        variants = [tuple(v.split(":")) for v in args.sr3_variants.split(",")]
        result["super_resolution"] = super_resolution(
            args.steps, args.size, variants, not args.no_extras
        )
    result["wall_seconds"] = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    full = set(parts) == {"colorization", "super_resolution"}
    suffix = ("" if full else f"_{'_'.join(parts)}") + (f"_{args.tag}" if args.tag else "")
    (OUT / f"generative{suffix}.json").write_text(json.dumps(result, indent=2))
    if "steps_curve" in result.get("super_resolution", {}):
        plot(result, OUT / "generative_steps.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
