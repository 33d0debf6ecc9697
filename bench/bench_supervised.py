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
   (:mod:`astrorestore.postprocess.psf_cores`, gain from the run's noise model).

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
from common import (
    add_output_options,
    compose,
    draw_noise,
    held_out_scene,
    psnr,
    star_fluxes,
)

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_SEED = 987_654


def train_default(overrides: list[str], results: Path) -> tuple[str, float, dict]:
    """``train.py logger=csv`` with ``overrides`` under ``results/train``: the best checkpoint,
    the wall time and the run summary."""
    root = results / "train"
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
    optimizer = instantiate(config["model"]["optimizer"])(net.parameters())
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
    from omegaconf import OmegaConf

    from astrorestore.inference.restorer import NetForward
    from astrorestore.inference.self_ensemble import SelfEnsemble
    from astrorestore.train import build

    cfg = OmegaConf.create(config)
    cfg.data = compose([f"data={data}"]).data
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


def seam_ratio(restorer, sky: float, noise, tile: int, overlap: int, size: int = 700) -> float:
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.tiling import tile_starts

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


def parse_args() -> argparse.Namespace:
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
    add_output_options(
        parser, "debug=tiny for one epoch unless --ckpt, 128 px held-out field and seam frames"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for training")
    args = parser.parse_args()
    if args.validate_only and not args.validate:
        parser.error("--validate-only needs --validate")
    return args


# Sizes of the held-out field, the seam frame, the seam tile and the throughput steps;
# ``--smoke`` shrinks them all (figures then only say the bench runs).
FULL = {"field": 512, "seam_frame": 700, "seam_tile": 128, "tile": 256, "steps": 20}
SMOKE = {"field": 128, "seam_frame": 160, "seam_tile": 64, "tile": 64, "steps": 2}
SMOKE_TRAINING = ["debug=tiny", "trainer.max_epochs=1", "data.patches_per_epoch=16", "test=false"]


def checkpoint_stage(args: argparse.Namespace, results: Path) -> tuple[str, dict]:
    """The checkpoint to score (``--ckpt``, or a training run of the default experiment) and
    the report's record of that training."""
    if args.ckpt:
        return args.ckpt, {}
    overrides = [*SMOKE_TRAINING, *args.overrides] if args.smoke else args.overrides
    ckpt, elapsed, summary = train_default(overrides, results)
    return ckpt, {
        "training": {
            "overrides": overrides,
            "wall_seconds": round(elapsed, 1),
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "best_validation": summary["best"],
        }
    }


def validation_stage(args: argparse.Namespace, ckpt: str, config: dict) -> dict:
    """``--validate``: val/psnr and val/ssim on each ``--validate-data``, one pass and the
    self-ensemble."""
    report = {}
    for data in args.validate_data.split(","):
        key = "validation_on_simulated" + ("" if data == "simulated" else f"_{data}")
        for n in sorted({1, args.self_ensemble}):
            name = key if n == 1 else f"{key}_self_ensemble{n}"
            report[name] = validate_on_simulated(ckpt, config, data, n)
            print(f"validation on data={data}, {n} pass(es):", report[name])
    return report


class HeldOutField:
    """The held-out field (a seed no training field uses) under the run's own noise model at
    exposure 1, and the figures of any image of it against its truth."""

    def __init__(self, config: dict, restorer, size: int, tile: int) -> None:
        from hydra.utils import instantiate

        from astrorestore.data.simulation.scene import render_field
        from astrorestore.inference.restore import restore_image

        self.scene = held_out_scene(dict(config["data"].get("scene") or {}))
        self.sky = float(self.scene.get("sky", 20.0))
        self.fwhm = float(self.scene.get("psf_fwhm", 2.5))
        self.noise = instantiate(config["data"]["pairing"]["noise"], exposure_range=[1.0, 1.0])
        self.read_noise = float(getattr(self.noise, "read_noise", 0.0))
        self.truth, self.catalog = render_field(
            size, np.random.default_rng(HELD_OUT_SEED), **self.scene
        )
        self.noisy = draw_noise(self.noise, self.truth, HELD_OUT_SEED)
        self.restored = restore_image(self.noisy, restorer, tile=tile, overlap=32, batch_size=4)
        normalizer = restorer.normalizer
        self.offset, self.scale = normalizer.stats(self._tensor(self.noisy))
        self.normalizer = normalizer
        self.empty_sky = np.abs(self.truth - self.sky) < 0.5
        self.sky_sigma = float(np.sqrt(self.sky + self.read_noise**2))

    @staticmethod
    def _tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))[None, None]

    def norm(self, image: np.ndarray) -> np.ndarray:
        """``image`` in the asinh space of the noisy frame's statistics."""
        return self.normalizer.forward(self._tensor(image), self.offset, self.scale)[0, 0].numpy()

    def detected(self, image: np.ndarray) -> dict:
        found, spurious = detections(image, self.catalog, self.sky_sigma, self.fwhm)
        return {"recovered": found, "spurious": spurious}

    def scores(self, image: np.ndarray) -> tuple[dict, np.ndarray]:
        """The figures of one image (restored, noisy, or after a stage), and its stars'
        relative aperture-flux errors."""
        truth, noisy, empty = self.truth, self.noisy, self.empty_sky
        relative, _ = aperture_errors(
            image, truth, self.catalog, self.sky, self.fwhm, self.read_noise
        )
        figures = {
            "psnr_electrons_dB": psnr(image, truth),
            "psnr_asinh_dB": psnr(self.norm(image), self.norm(truth)),
            "sky_residual_noise_ratio": float(
                np.std((image - truth)[empty]) / np.std((noisy - truth)[empty])
            ),
            "median_relative_flux_error": float(np.median(relative)),
            "median_abs_relative_flux_error": float(np.median(np.abs(relative))),
            "detections_5sigma": self.detected(image),
        }
        return figures, relative

    def report(self) -> tuple[dict, np.ndarray, np.ndarray]:
        """The report's ``held_out_field`` section, and the relative flux errors of the noisy
        and the restored image (for the plot)."""
        (restored, rel_restored), (noisy, rel_noisy) = (
            self.scores(self.restored),
            self.scores(self.noisy),
        )

        def both(key: str) -> dict:
            return {"restored": restored[key], "noisy_input": noisy[key]}

        z_truth = self.norm(self.truth)
        size = self.truth.shape[0]
        section = {
            "size": f"{size}x{size}",
            "psnr_electrons_dB": both("psnr_electrons_dB"),
            "psnr_electrons_data_range_e": float(self.truth.max() - self.truth.min()),
            "psnr_asinh_dB": both("psnr_asinh_dB"),
            "psnr_asinh_data_range": float(z_truth.max() - z_truth.min()),
            "empty_sky_pixels": int(self.empty_sky.sum()),
            "sky_residual_noise_ratio": restored["sky_residual_noise_ratio"],
            "stars_measured": int(rel_restored.size),
            "aperture_radius_px": 2 * self.fwhm,
            "median_relative_flux_error": both("median_relative_flux_error"),
            "median_abs_relative_flux_error": both("median_abs_relative_flux_error"),
            "catalogue_sources": len(self.catalog["x"]),
            "detections_5sigma": {
                "noisy": noisy["detections_5sigma"],
                "restored": restored["detections_5sigma"],
                "clean": self.detected(self.truth),
            },
        }
        return section, rel_noisy, rel_restored

    def with_psf_cores(self) -> dict:
        """``--psf-cores``: the figures after ``infer.py``'s PSF-core stage."""
        from astrorestore.postprocess.psf_cores import PSFCores

        stage = PSFCores(gain=float(getattr(self.noise, "gain", 1.0)))
        return {
            **self.scores(stage(self.noisy, self.restored))[0],
            "stage": {k: v for k, v in stage.info.items() if not isinstance(v, np.ndarray)},
        }


def speed_stage(config: dict, restorer, noisy: np.ndarray, sizes: dict) -> dict:
    """Training patches/s of the run's network and megapixels/s of tiled restoration of a frame
    twice the held-out field's side."""
    from astrorestore.inference.restore import restore_image

    speed = {"train_patches_per_s": training_throughput(config, sizes["steps"])}
    big = np.tile(noisy, (2, 2))
    start = time.perf_counter()
    restore_image(big, restorer, tile=sizes["tile"], overlap=32, batch_size=4)
    speed["inference_megapixels_per_s"] = big.size / 1e6 / (time.perf_counter() - start)
    return speed


def main() -> None:
    from astrorestore.checkpoint import read_checkpoint
    from astrorestore.inference.restorer import load_restorer

    args = parse_args()
    sizes = SMOKE if args.smoke else FULL
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "machine": {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    }
    ckpt, training = checkpoint_stage(args, results)
    report |= training
    config = read_checkpoint(ckpt)["astrorestore"]["config"]
    restorer = load_restorer(ckpt, "cpu")
    report["checkpoint"] = ckpt
    if args.validate:
        report |= validation_stage(args, ckpt, config)
        if args.validate_only:
            out = results / f"supervised_validation_{Path(ckpt).stem}.json"
            out.write_text(json.dumps(report, indent=2))
            print(f"wrote {out}")
            return

    field = HeldOutField(config, restorer, sizes["field"], sizes["tile"])
    report["held_out_scene"] = field.scene
    report["held_out_field"], rel_noisy, rel_restored = field.report()
    if args.psf_cores:
        report["held_out_field"]["with_psf_cores"] = field.with_psf_cores()
    seam = (restorer, field.sky, field.noise)
    report["seams"] = {
        "edge_to_interior_rms_overlap32": seam_ratio(*seam, sizes["tile"], 32, sizes["seam_frame"]),
        "edge_to_interior_rms_overlap0": seam_ratio(
            *seam, sizes["seam_tile"], 0, sizes["seam_frame"]
        ),
    }
    report["speed"] = speed_stage(config, restorer, field.noisy, sizes)

    (results / "supervised.json").write_text(json.dumps(report, indent=2))
    plot(field, rel_noisy, rel_restored, results / "supervised.png")
    print(json.dumps(report, indent=2))


def plot(field: HeldOutField, rel_noisy, rel_restored, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy, restored, truth, norm = field.noisy, field.restored, field.truth, field.norm
    quarter = truth.shape[0] // 4
    crop = (slice(quarter, 3 * quarter), slice(quarter, 3 * quarter))
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
