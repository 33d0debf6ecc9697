"""Does the cGAN's adversarial term earn its place? Distortion and realism of colorization.

Trains ``model=cgan_colorize`` (the cGAN, as shipped) and the same generator with
``model.adversarial_weight=0`` (the L1-only generator) once per seed, at the shipped budget
(``trainer.max_epochs`` of ``data.patches_per_epoch`` patches) or ``--epochs``, then colours the
whole held-out test region of the Hubble Deep Field (the bottom half of the right quarter,
cropped to the generator's size multiple) and scores it against the truth:

- distortion: CIEDE2000 ΔE (scikit-image, mean over pixels), PSNR and SSIM on RGB in [0, 1];
- realism: colourfulness of the output over the truth's, and the sliced Wasserstein distance
  between the 4x4 chroma patches (YCbCr) of output and truth
  (:mod:`astrorestore.metrics.realism`).

Gate (issue 23): cGAN colourfulness ratio >= 0.8, chroma distance below the L1-only
generator's, ΔE <= the L1-only's + 0.1; means over the seeds. Writes
``colorize_realism.json``, ``colorize_realism.md`` (the table) and ``colorize_realism.png``
(grey input, L1-only, cGAN, truth on one held-out crop, seed of ``--seeds``' first).

Usage: ``python bench/bench_colorize_realism.py [--seeds 0,1,2] [--epochs N]
[--variant LABEL=OVERRIDE,OVERRIDE ...] [--out FOLDER] [--smoke]``. ``--variant`` adds a row
trained with those overrides of ``model=cgan_colorize`` (e.g. an ablation).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import RESULTS, add_output_options, compose

from astrorestore.colour import from_unit, luminance
from astrorestore.data.sources.hubble import held_out_start, hubble_image
from astrorestore.metrics.image_quality import photo_ssim
from astrorestore.metrics.realism import chroma_sliced_wasserstein, colourfulness_ratio
from astrorestore.train import build

OUT = RESULTS / "colorize_realism"
# The bench's own settings, every row alike: no LPIPS network, no validation panel.
BENCH = ["model=cgan_colorize", "model.compute_lpips=false", "model.n_panel_images=0"]
ROWS = {"cgan": [], "l1_only": ["model.adversarial_weight=0"]}
PANEL = (slice(40, 168), slice(40, 168))  # the crop of the test region the PNG shows


def test_region(multiple: int = 32) -> torch.Tensor:
    """The held-out test region (1, 3, H, W) in [0, 1], cropped to ``multiple`` (416 x 224 px):
    generators down to a 32-fold size multiple colour it whole."""
    image = hubble_image()
    h, w = image.shape[:2]
    region = image[h // 2 :, held_out_start(w) :]
    rh, rw = (s - s % multiple for s in region.shape[:2])
    return torch.from_numpy(np.ascontiguousarray(region[:rh, :rw].transpose(2, 0, 1)))[None]


def delta_e2000(rgb: torch.Tensor, truth: torch.Tensor) -> float:
    from skimage.color import deltaE_ciede2000, rgb2lab

    def lab(x: torch.Tensor) -> np.ndarray:
        return rgb2lab(x[0].clamp(0, 1).permute(1, 2, 0).double().numpy())

    return float(deltaE_ciede2000(lab(rgb), lab(truth)).mean())


def scores(rgb: torch.Tensor, truth: torch.Tensor) -> dict:
    mse = float((rgb.clamp(0, 1) - truth).square().mean())
    return {
        "delta_e2000": delta_e2000(rgb, truth),
        "colourfulness_ratio": float(colourfulness_ratio(rgb.clamp(0, 1), truth)[0]),
        "chroma_swd": float(chroma_sliced_wasserstein(rgb.clamp(0, 1), truth)),
        "psnr": 10 * float(np.log10(1.0 / max(mse, 1e-12))),
        "ssim": float(photo_ssim(rgb.clamp(0, 1), truth)),
    }


def train(overrides: list[str], seed: int, epochs: int | None) -> tuple:
    cfg = compose(BENCH + [f"seed={seed}", f"data.seed={seed}", *overrides])
    L.seed_everything(seed, verbose=False)
    data, module = build(cfg)
    trainer = L.Trainer(
        max_epochs=epochs if epochs is not None else cfg.trainer.max_epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=None,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    budget = {
        "epochs": trainer.current_epoch,
        "batches": module.batches_trained(),
        "batch_size": cfg.data.batch_size,
        "patch_size": cfg.data.patch_size,
        "train_wall_s": round(time.perf_counter() - start, 1),
    }
    return module.eval(), budget, data


def diagnose(module, data) -> dict:
    """How much the adversarial term can act, on one training batch after training: the
    discriminator's mean logits on true and generated pairs and the fraction of patches where
    the true one scores higher (0.5 = chance), and the norm of the adversarial term's gradient
    at the generator's output over the L1 term's."""
    from astrorestore.modules.adversarial import generator_gan_loss

    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    condition, real = batch["input"], batch["target"]
    hp = module.hparams
    with torch.no_grad():
        fake = module.net.train()(condition)
        true_logits, fake_logits = module.judge(condition, real), module.judge(condition, fake)
    fake.requires_grad_(True)
    pixel = hp.reconstruction_weight * module.loss(fake, real, None)[0]
    (l1_grad,) = torch.autograd.grad(pixel, fake)
    adversarial = generator_gan_loss(module.judge(condition, fake), hp.gan_loss)
    (gan_grad,) = torch.autograd.grad(hp.adversarial_weight * adversarial, fake)
    module.eval()
    return {
        "d_logit_true": float(true_logits.mean()),
        "d_logit_generated": float(fake_logits.mean()),
        "d_fraction_true_higher": float((true_logits > fake_logits).float().mean()),
        "gradient_ratio_adversarial_to_l1": float(gan_grad.norm() / l1_grad.norm()),
    }


def run_one(
    name: str, overrides: list[str], seed: int, epochs: int | None, space: str, why: bool = False
) -> dict:
    """Train one row at one seed and colour the held-out region (a process pool's job);
    ``why``: add :func:`diagnose`'s figures to its scores (cGAN rows)."""
    module, budget, data = train(overrides, seed, epochs)
    rgb = colourise(module, test_region(), space)
    out = {"scores": scores(rgb, test_region()), "budget": budget, "rgb": rgb}
    if why and module.hparams.adversarial_weight > 0:
        out["scores"].update(diagnose(module, data))
    print(name, seed, budget, out["scores"], flush=True)
    return out


def colourise(module, truth: torch.Tensor, space: str) -> torch.Tensor:
    grey = from_unit(luminance(truth, space))
    with torch.no_grad():
        return module.inference_net(grey) * 0.5 + 0.5


def summarise(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if isinstance(runs[0][k], float)]
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out.update(
        {f"{k}_std": float(np.std([r[k] for r in runs], ddof=1)) for k in keys}
        if len(runs) > 1
        else {}
    )
    out["per_seed"] = runs
    return out


COLUMNS = {
    "delta_e2000": "ΔE2000",
    "colourfulness_ratio": "colourfulness / truth",
    "chroma_swd": "chroma SWD",
    "psnr": "PSNR dB",
    "ssim": "SSIM",
    "d_fraction_true_higher": "D: true > generated",
    "gradient_ratio_adversarial_to_l1": "‖∇ adv‖ / ‖∇ L1‖",
}


def table(result: dict) -> str:
    cols = [c for c in COLUMNS if any(c in row for row in result["rows"].values())]
    lines = [
        "| row | " + " | ".join(COLUMNS[c] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, row in result["rows"].items():
        cells = []
        for c in cols:
            std = row.get(f"{c}_std")
            cell = f"{row[c]:.4g}" if c in row else "–"
            cells.append(cell + (f" ± {std:.2g}" if std is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def panel(images: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.2))
    for ax, (name, rgb) in zip(axes, images.items(), strict=True):
        ax.imshow(rgb[0, :, PANEL[0], PANEL[1]].clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: the shipped budget")
    parser.add_argument("--variant", action="append", default=[], help="LABEL=OVERRIDES")
    parser.add_argument("--rows", default="cgan,l1_only", help="which shipped rows to train")
    parser.add_argument(
        "--common", default="", help="overrides for every row (a reduced budget), comma-separated"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="add the discriminator's separation and the adversarial/L1 gradient ratio",
    )
    add_output_options(parser, out=OUT)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {name: ROWS[name] for name in args.rows.split(",") if name}
    for spec in args.variant:
        label, _, overrides = spec.partition("=")
        rows[label] = [o for o in overrides.split(",") if o]
    extra = [o for o in args.common.split(",") if o]
    if args.smoke:
        seeds, args.epochs = seeds[:1], 1
        extra += ["data.patches_per_epoch=16", "data.batch_size=8", "data.patch_size=32"]
        extra += ["model.net.base_channels=8", "model.discriminator.base_channels=8"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = compose(BENCH).data.pairing.color_space
    result: dict = {"seeds": seeds, "common": extra, "rows": {}, "budget": {}}
    jobs = [
        (name, rows[name] + extra, seed, args.epochs, space, args.diagnose)
        for name in rows
        for seed in seeds
    ]
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            done = list(pool.map(run_one, *zip(*jobs, strict=True)))
    else:
        done = [run_one(*job) for job in jobs]
    shown: dict[str, torch.Tensor] = {}
    for name in rows:
        runs = [d for (n, *_), d in zip(jobs, done, strict=True) if n == name]
        result["rows"][name] = summarise([d["scores"] for d in runs])
        result["budget"][name] = runs[0]["budget"]
        shown[name] = runs[0]["rgb"]  # the first seed's
    truth = test_region()
    grey = luminance(truth, space).expand(-1, 3, -1, -1)
    result["rows"]["grey_copy"] = scores(grey, truth)
    if {"cgan", "l1_only"} <= set(result["rows"]):
        gan, l1 = result["rows"]["cgan"], result["rows"]["l1_only"]
        result["gate"] = {
            "colourfulness_ratio>=0.8": gan["colourfulness_ratio"] >= 0.8,
            "chroma_swd<l1_only": gan["chroma_swd"] < l1["chroma_swd"],
            "delta_e2000<=l1_only+0.1": gan["delta_e2000"] <= l1["delta_e2000"] + 0.1,
        }
        result["gate_met"] = all(result["gate"].values())
    (out / "colorize_realism.json").write_text(json.dumps(result, indent=1))
    (out / "colorize_realism.md").write_text(table(result))
    order = sorted(shown, key=lambda name: (name != "l1_only", name != "cgan"))
    images = {"grey input": grey, **{name: shown[name] for name in order}, "truth": truth}
    panel(images, out / "colorize_realism.png")
    print(table(result))


if __name__ == "__main__":
    main()
