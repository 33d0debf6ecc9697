"""Benchmark the default supervised denoiser: quality on a held-out field, and speed.

Steps (all on whatever machine runs it; the figures are printed and written to
``bench/results/supervised.json`` with a plot ``supervised.png``):

1. Train the default experiment through ``train.py`` (``logger=csv``; pass extra Hydra
   overrides after ``--``) and time it; or score an existing checkpoint with ``--ckpt``.
2. Render a held-out 512x512 simulated field (a seed no training field uses), draw
   Poisson + read noise (exposure 1), restore it with ``infer``'s tiled path and report:
   - PSNR in electrons, data range = max - min of the clean truth (stated in the output),
     and PSNR in the asinh-normalised space (data range = truth range there), for the
     restored image and, as the baseline, for the noisy input;
   - residual noise in empty sky: std(restored - truth) / std(noisy - truth) over pixels
     where the truth is within 0.5 e- of the sky;
   - aperture photometry of catalogued stars (r = 2 FWHM, sky known): median relative flux
     error (restored - true) / true, and its median absolute value, restored vs noisy;
   - source detections (DAOStarFinder at 5 sigma) matched to the catalogue: recovered
     sources and spurious detections, in the noisy, restored and clean images.
3. Seams: on an empty 700x700 sky frame, the residual rms within 2 px of tile boundaries
   divided by the rms elsewhere, with the default overlap (32 px) and with none (~1 = no seam).
4. Training throughput (patches/s) over optimisation steps of the default network and batch,
   and inference speed (megapixels/s) of tiled restoration of a 1024x1024 frame.

5. With ``--validate``: the asinh-space ``val/psnr`` and ``val/ssim`` of the checkpoint on
   ``data=simulated``'s validation fields (``data.seed`` 0, the fields every default run was
   judged on), through ``Trainer.validate``, so runs trained on other data (the randomised
   default) are compared with earlier defaults on the same images. ``--validate-data
   simulated,simulated_randomized`` adds the randomised fields the default validates on (where
   a single-PSF model is the one out of its depth); ``--self-ensemble N`` adds rows for the
   mean of N flipped/rotated passes (``infer.py self_ensemble=N``).

6. With ``--psf-cores``: the held-out field's figures again after ``infer.py``'s PSF-core stage
   (:mod:`astrorestore.inference.psf_cores`, gain from the run's noise model).

Usage: ``python bench/bench_supervised.py [--ckpt CKPT] [--validate [--validate-only]]
[--validate-data ...] [--self-ensemble N] [--psf-cores] [-- hydra overrides...]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, draw_noise, held_out_scene, psnr, star_fluxes

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 987_654


def train_default(overrides: list[str]) -> tuple[str, float, dict]:
    root = RESULTS / "train"
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PROJECT_ROOT=str(root))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "logger=csv", *overrides],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-3000:]}")
    run_dir = max((root / "logs" / "train" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["best_checkpoint"], elapsed, summary


def training_throughput(config: dict, steps: int = 20) -> float:
    from hydra.utils import instantiate

    net = instantiate(config["model"]["net"])
    loss = instantiate(config["model"]["loss"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch, patch = config["data"]["batch_size"], config["data"]["patch_size"]
    x = torch.randn(batch, 1, patch, patch)
    y = torch.randn(batch, 1, patch, patch)

    def step() -> None:
        optimizer.zero_grad()
        loss(net(x), y)[0].backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def validate_on_simulated(
    ckpt: str, config: dict, data: str = "simulated", passes: int = 1
) -> dict[str, float]:
    """``val/psnr`` and ``val/ssim`` of a checkpoint on the validation fields of ``data``
    (``simulated``: the single-PSF fields every earlier default was judged on;
    ``simulated_randomized``: the default's own randomised fields), restored by the network
    the checkpoint exports, as the mean of ``passes`` flipped/rotated passes (``infer.py
    self_ensemble``; 1 = one pass)."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from astrorestore.inference.restorer import NetForward
    from astrorestore.inference.self_ensemble import SelfEnsemble
    from astrorestore.train import build

    cfg = OmegaConf.create(config)
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg.data = compose("train", overrides=[f"data={data}"]).data
    # the run's own pairing (noise model) and normaliser, on those fields
    cfg.data.pairing = config["data"]["pairing"]
    cfg.data.normalizer = config["data"]["normalizer"]
    datamodule, module = build(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    if passes > 1:
        name = module.exported_weights
        setattr(
            module, name, _PlainForward(SelfEnsemble(NetForward(getattr(module, name)), passes))
        )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    result = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    keys = ("val/psnr", "val/ssim", "val/input/psnr", "val/input/ssim")
    return {k: float(result[k]) for k in keys if k in result}


class _PlainForward(torch.nn.Module):
    """A restorer callable ``fn(x, generator)`` seen as a network ``net(x)``."""

    def __init__(self, fn: torch.nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def aperture_errors(image, truth, catalog, sky, fwhm, read_noise):
    """Relative aperture-flux errors of the stars at S/N > 10, and their number."""
    flux, true_flux, snr = star_fluxes(image, truth, catalog, sky, fwhm, read_noise)
    keep = snr > 10
    relative = (flux[keep] - true_flux[keep]) / true_flux[keep]
    return relative, int(keep.sum())


def detections(image, catalog, sky_sigma, fwhm, tolerance=2.0):
    from photutils.detection import DAOStarFinder

    finder = DAOStarFinder(threshold=5 * sky_sigma, fwhm=fwhm)
    found = finder(image - np.median(image))
    if found is None:
        return 0, 0
    names = (
        ("x_centroid", "y_centroid")
        if "x_centroid" in found.colnames
        else ("xcentroid", "ycentroid")
    )
    detected = np.column_stack([found[names[0]], found[names[1]]])
    truth = np.column_stack([catalog["x"], catalog["y"]])
    distance = np.hypot(*(detected[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
    matched_truth = (distance.min(axis=0) < tolerance).sum()
    spurious = (distance.min(axis=1) >= tolerance).sum()
    return int(matched_truth), int(spurious)


def seam_ratio(restorer, sky: float, noise, tile: int, overlap: int) -> float:
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.tiling import tile_starts

    size = 700
    truth = np.full((size, size), sky, dtype=np.float32)
    noisy = draw_noise(noise, truth, HELD_OUT_SEED + 1)
    residual = restore_image(noisy, restorer, tile=tile, overlap=overlap) - truth
    near = set()
    for start in tile_starts(size, tile, overlap)[1:]:
        for boundary in (start, start + overlap):
            near.update(range(boundary - 2, boundary + 3))
    columns = np.array(sorted(c for c in near if 0 <= c < size))
    others = np.setdiff1d(np.arange(size), columns)
    return float(residual[:, columns].std() / residual[:, others].std())


def main() -> None:
    from astrorestore.inference.self_ensemble import SIZES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ckpt", help="score this checkpoint instead of training")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="also report val/psnr and val/ssim on data=simulated's validation fields",
    )
    parser.add_argument(
        "--validate-data",
        default="simulated",
        help="with --validate: the data configs whose validation fields are used, comma-"
        "separated (simulated: single PSF; simulated_randomized: the default's own)",
    )
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="with --validate: stop after the validation figures (written to "
        "supervised_validation_<checkpoint>.json)",
    )
    parser.add_argument(
        "--self-ensemble",
        type=int,
        default=1,
        choices=SIZES,
        help="with --validate: also validate the mean of this many flipped/rotated passes "
        "(infer.py self_ensemble=N)",
    )
    parser.add_argument(
        "--psf-cores",
        action="store_true",
        help="also score the held-out field after infer.py's PSF-core stage (psf_cores)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for training")
    args = parser.parse_args()
    if args.validate_only and not args.validate:
        parser.error("--validate-only needs --validate")

    from hydra.utils import instantiate

    from astrorestore.data.simulation.scene import render_field
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.restorer import load_restorer, read_checkpoint

    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "machine": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    }
    if args.ckpt:
        ckpt = args.ckpt
    else:
        ckpt, elapsed, summary = train_default(args.overrides)
        report["training"] = {
            "overrides": args.overrides,
            "wall_seconds": round(elapsed, 1),
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "best_validation": summary["best"],
        }
    config = read_checkpoint(ckpt)["astrorestore"]["config"]
    restorer = load_restorer(ckpt, "cpu")
    report["checkpoint"] = ckpt
    if args.validate:
        for data in args.validate_data.split(","):
            key = "validation_on_simulated" + ("" if data == "simulated" else f"_{data}")
            passes = sorted({1, args.self_ensemble})
            for n in passes:
                name = key if n == 1 else f"{key}_self_ensemble{n}"
                report[name] = validate_on_simulated(ckpt, config, data, n)
                print(f"validation on data={data}, {n} pass(es):", report[name])
        if args.validate_only:
            out = RESULTS / f"supervised_validation_{Path(ckpt).stem}.json"
            out.write_text(json.dumps(report, indent=2))
            print(f"wrote {out}")
            return

    # held-out field (a seed no training field uses), the run's own noise model at exposure 1
    scene = held_out_scene(dict(config["data"].get("scene") or {}))
    report["held_out_scene"] = scene
    sky = float(scene.get("sky", 20.0))
    fwhm = float(scene.get("psf_fwhm", 2.5))
    noise = instantiate(config["data"]["pairing"]["noise"], exposure_range=[1.0, 1.0])
    read_noise = float(getattr(noise, "read_noise", 0.0))
    truth, catalog = render_field(512, np.random.default_rng(HELD_OUT_SEED), **scene)
    noisy = draw_noise(noise, truth, HELD_OUT_SEED)
    restored = restore_image(noisy, restorer, tile=256, overlap=32, batch_size=4)

    normalizer = restorer.normalizer
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    offset, scale = normalizer.stats(as_tensor(noisy))
    norm = lambda a: normalizer.forward(as_tensor(a), offset, scale)[0, 0].numpy()  # noqa: E731
    empty_sky = np.abs(truth - sky) < 0.5
    sky_sigma = float(np.sqrt(sky + read_noise**2))

    def detected(image: np.ndarray) -> dict:
        found, spurious = detections(image, catalog, sky_sigma, fwhm)
        return {"recovered": found, "spurious": spurious}

    def scores(image: np.ndarray) -> tuple[dict, np.ndarray]:
        """The held-out field's figures for one image (restored, noisy, or after a stage), and
        its stars' relative aperture-flux errors."""
        relative, _ = aperture_errors(image, truth, catalog, sky, fwhm, read_noise)
        figures = {
            "psnr_electrons_dB": psnr(image, truth),
            "psnr_asinh_dB": psnr(norm(image), norm(truth)),
            "sky_residual_noise_ratio": float(
                np.std((image - truth)[empty_sky]) / np.std((noisy - truth)[empty_sky])
            ),
            "median_relative_flux_error": float(np.median(relative)),
            "median_abs_relative_flux_error": float(np.median(np.abs(relative))),
            "detections_5sigma": detected(image),
        }
        return figures, relative

    (restored_scores, rel_restored), (noisy_scores, rel_noisy) = scores(restored), scores(noisy)
    both = lambda key: {"restored": restored_scores[key], "noisy_input": noisy_scores[key]}  # noqa: E731
    report["held_out_field"] = {
        "size": "512x512",
        "psnr_electrons_dB": both("psnr_electrons_dB"),
        "psnr_electrons_data_range_e": float(truth.max() - truth.min()),
        "psnr_asinh_dB": both("psnr_asinh_dB"),
        "psnr_asinh_data_range": float(norm(truth).max() - norm(truth).min()),
        "empty_sky_pixels": int(empty_sky.sum()),
        "sky_residual_noise_ratio": restored_scores["sky_residual_noise_ratio"],
        "stars_measured": int(rel_restored.size),
        "aperture_radius_px": 2 * fwhm,
        "median_relative_flux_error": both("median_relative_flux_error"),
        "median_abs_relative_flux_error": both("median_abs_relative_flux_error"),
        "catalogue_sources": len(catalog["x"]),
        "detections_5sigma": {
            "noisy": noisy_scores["detections_5sigma"],
            "restored": restored_scores["detections_5sigma"],
            "clean": detected(truth),
        },
    }

    if args.psf_cores:
        from astrorestore.inference.psf_cores import PSFCores

        stage = PSFCores(gain=float(getattr(noise, "gain", 1.0)))
        report["held_out_field"]["with_psf_cores"] = {
            **scores(stage(noisy, restored))[0],
            "stage": {k: v for k, v in stage.info.items() if not isinstance(v, np.ndarray)},
        }

    report["seams"] = {
        "edge_to_interior_rms_overlap32": seam_ratio(restorer, sky, noise, 256, 32),
        "edge_to_interior_rms_overlap0": seam_ratio(restorer, sky, noise, 128, 0),
    }

    # speed
    report["speed"] = {"train_patches_per_s": training_throughput(config)}
    big = np.tile(noisy, (2, 2))
    start = time.perf_counter()
    restore_image(big, restorer, tile=256, overlap=32, batch_size=4)
    report["speed"]["inference_megapixels_per_s"] = big.size / 1e6 / (time.perf_counter() - start)

    (RESULTS / "supervised.json").write_text(json.dumps(report, indent=2))
    plot(noisy, restored, truth, rel_noisy, rel_restored, RESULTS / "supervised.png", norm)
    print(json.dumps(report, indent=2))


def plot(noisy, restored, truth, rel_noisy, rel_restored, path, norm) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crop = (slice(128, 384), slice(128, 384))
    low, high = np.percentile(norm(truth)[crop], [0.5, 99.8])
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    for axis, (title, image) in zip(
        axes, (("noisy", noisy), ("restored", restored), ("truth", truth)), strict=False
    ):
        axis.imshow(norm(image)[crop], cmap="magma", vmin=low, vmax=high, origin="lower")
        axis.set_title(title + " (asinh)")
        axis.set_xticks([])
        axis.set_yticks([])
    bins = np.linspace(-0.2, 0.2, 41)
    axes[3].hist(rel_noisy, bins=bins, alpha=0.5, label="noisy")
    axes[3].hist(rel_restored, bins=bins, alpha=0.5, label="restored")
    axes[3].set_xlabel("relative aperture-flux error")
    axes[3].legend()
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
