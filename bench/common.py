"""What several benchmarks share, in one place: the shipped configs composed with overrides, the
held-out scene and noise of a run, the star photometry, checkpoint variants (``infer.py``'s
postprocess overrides).

Benchmarks import this as ``common`` (``python bench/<name>.py`` puts ``bench/`` on the path);
they never import one another.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RESULTS = REPO / "bench" / "results"


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The shipped ``configs/<config_name>.yaml`` with Hydra ``overrides``, as ``train.py`` sees
    it: a benchmark states only what it changes, never a copy of a default."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def held_out_scene(scene: dict) -> dict:
    """The run's training scene, or ``data=simulated``'s single-PSF scene when training drew
    sky, PSF or crowding per field (``data=simulated_randomized``, the default): the tables need
    one sky level and one PSF FWHM. PSF robustness is ``bench_psf_robustness.py``'s job."""
    ranges = ("star_flux_range", "galaxy_flux_range")
    if not any(isinstance(v, list | dict) for k, v in scene.items() if k not in ranges):
        return scene
    fixed = OmegaConf.load(CONFIGS / "data" / "simulated.yaml").scene
    return dict(OmegaConf.to_container(fixed))


def draw_noise(noise, truth: np.ndarray, seed: int) -> np.ndarray:
    """One realisation of the run's own noise model (exposure 1) on ``truth``."""
    rng = torch.Generator().manual_seed(seed)
    return noise.draw(torch.from_numpy(truth.astype(np.float32)), rng).numpy()


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """The package's PSNR: data range = the truth's max - min."""
    from astrorestore.metrics.image_quality import psnr_per_image

    def as_batch(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, np.float64))[None, None]

    return float(psnr_per_image(as_batch(pred), as_batch(truth))[0])


def star_fluxes(image, truth, catalog, sky, fwhm, read_noise):
    """(flux of image, true flux, true S/N) in r = 2 FWHM apertures of every catalogued star;
    the S/N is the noisy frame's (sky + read noise + the star's own shot noise)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    stars = catalog["kind"] == 0
    positions = np.column_stack([catalog["x"][stars], catalog["y"][stars]])
    aperture = CircularAperture(positions, r=2 * fwhm)
    area = aperture.area
    true_flux = aperture_photometry(truth, aperture)["aperture_sum"].data - sky * area
    flux = aperture_photometry(image, aperture)["aperture_sum"].data - sky * area
    noise = np.sqrt(area * (sky + read_noise**2) + np.clip(true_flux, 0, None))
    return flux, true_flux, true_flux / noise


def postprocess_overrides(overrides: str) -> dict:
    """``infer.py``'s ``postprocess`` config for comma-separated ``infer.py`` overrides (e.g.
    ``postprocess=none`` or ``postprocess=give_back,postprocess.give_back.footprint_scale=2``),
    composed from ``configs/`` as ``infer.py`` composes it; checked like its command line."""
    from astrorestore.cli import check_overrides
    from astrorestore.errors import UserError
    from astrorestore.postprocess import check_postprocess
    from astrorestore.postprocess.stages import renamed_key

    items = [item for item in overrides.split(",") if item]
    for item in items:
        key = item.partition("=")[0].lstrip("+~")
        if not key.startswith("postprocess"):
            hint = renamed_key(f"model.net.{key}") or "give postprocess=... overrides"
            raise SystemExit(f"--variant {item!r}: {hint}")
    try:
        check_overrides(CONFIGS, "infer", items)
    except UserError as exc:
        raise SystemExit(f"--variant {overrides!r}: {exc}") from None
    cfg = compose(items, config_name="infer")
    return check_postprocess(OmegaConf.to_container(cfg.postprocess, resolve=True))


def variant_spec(spec: str, ckpts: list[str]) -> tuple[str, tuple[str, dict]]:
    """``LABEL=BASE:OVERRIDES`` as ``(LABEL, (BASE's checkpoint path, postprocess))``: the
    ``--ckpt`` labelled BASE with ``infer.py``'s postprocess overrides laid over its own."""
    label, _, rest = spec.partition("=")
    base, _, overrides = rest.partition(":")
    paths = {c.rpartition("=")[0] or Path(c).stem: c.rpartition("=")[2] for c in ckpts}
    if base not in paths or not overrides:
        raise SystemExit(
            f"--variant {spec!r}: use LABEL=BASE:postprocess=... with BASE a --ckpt label"
        )
    return label, (paths[base], postprocess_overrides(overrides))


def variant_checkpoint(path: str, overrides: str, folder: Path) -> Path:
    """A copy of the checkpoint at ``path`` with ``infer.py``'s postprocess overrides
    (comma-separated) laid over its post-processing (for benches that run ``infer.py``)."""
    from astrorestore.checkpoint import read_checkpoint
    from astrorestore.postprocess import merge_postprocess

    checkpoint = read_checkpoint(path)
    record = checkpoint["astrorestore"]
    record["postprocess"] = merge_postprocess(
        record["postprocess"], postprocess_overrides(overrides)
    )
    out = folder / f"variant_{abs(hash((path, overrides)))}.ckpt"
    torch.save(checkpoint, out)
    return out


def bm3d_or_note(bench: str) -> bool:
    """Whether the optional ``bm3d`` package is importable; if not, one line says the BM3D rows
    are skipped (it is not a requirement and CI does not install it)."""
    try:
        import bm3d  # noqa: F401
    except ImportError:
        print(f"{bench}: bm3d not installed, no BM3D rows (pip install bm3d)")
        return False
    return True


def add_output_options(
    parser: argparse.ArgumentParser,
    smoke: str = "does the bench run?",
    out: Path = RESULTS,
    out_help: str = "results folder",
) -> None:
    """``--out`` (where the results go) and ``--smoke`` (the smallest budget, which only says
    that the bench runs: ``tests/integration/test_benches.py``), the same for every bench."""
    parser.add_argument("--out", default=str(out), help=out_help)
    parser.add_argument("--smoke", action="store_true", help=f"tiny budget: {smoke}")


def fit_steps(
    module, datamodule, steps: int, accelerator: str = "cpu", clip: float | None = 1.0
) -> dict:
    """Train ``module`` for ``steps`` Lightning steps with no validation, logging or
    checkpoints (a bench's budget is optimiser steps; ``clip``: the gradient norm clip, None
    for manual optimisation); returns the steps and the wall time."""
    import time

    import lightning as L

    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=100_000,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=accelerator,
        devices=1,
        gradient_clip_val=clip,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return {
        "train_steps": int(trainer.global_step),
        "train_wall_s": round(time.perf_counter() - start, 1),
    }


def sr3_sample(
    module,
    cond: torch.Tensor,
    steps: int,
    sampler: str = "ddim",
    seed: int = 0,
    low: torch.Tensor | None = None,
    back_projection: int | None = None,
):
    """One SR3 draw (normalised units) of a trained ``DiffusionModule`` (its exported weights)
    from the up-sampled inputs ``cond``, with ``seed``; given the inputs ``low``, with the
    module's back-projection (or ``back_projection`` steps)."""
    from astrorestore.diffusion.sampler import projection, sample

    hp = module.hparams
    iterations = hp.get("back_projection", 0) if back_projection is None else back_projection
    project = None
    if low is not None:
        project = projection(low, hp.scale, hp.get("psf_sigma", 0.0), iterations)
    with torch.no_grad():
        return sample(
            module.inference_net,
            cond,
            module.schedule,
            steps,
            sampler,
            hp.prediction,
            torch.Generator().manual_seed(seed),
            hp.target,
            hp.residual_scale,
            project,
        )
