"""Speed of the training-data side: scene rendering, noise draws and augmentations.

The denoiser's data are rendered once per run and corrupted per batch, so these figures tell
whether the data pipeline can limit training: a 256x256 field's render time (default scene,
``scene/randomized.yaml`` and each PSF family of it), and the time of one noise draw and one
augmentation of a (16, 1, 128, 128) batch on the CPU and, where present, the GPU.

Usage: ``python bench/bench_simdata.py [--fields 40]``; prints a table (milliseconds).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from astrorestore.data.augment import Augment
from astrorestore.data.simulation.scene import render_field

REPO = Path(__file__).resolve().parents[1]


def _render_ms(scene: dict, n: int) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    render_field(256, rng, **scene)  # warm-up: imports, FFT plans, the Airy table
    times = []
    for _ in range(n):
        start = time.perf_counter()
        render_field(256, rng, **scene)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.mean(times)), 1e3 * float(np.max(times))


def _batch_ms(fn, *args, device: torch.device, repeats: int = 20, **kwargs) -> float:
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=40, help="fields per scene setting")
    args = parser.parse_args()

    default = dict(OmegaConf.load(REPO / "configs/scene/default.yaml"))
    randomized = dict(OmegaConf.load(REPO / "configs/scene/randomized.yaml"))
    print(f"{'256x256 field render':<26} mean ms   max ms")
    settings = {"default": default, "randomized": randomized}
    for family in ("moffat", "gaussian", "airy"):
        settings[f"randomized, {family} only"] = {**randomized, "psf": family}
    for name, scene in settings.items():
        mean, worst = _render_ms(scene, args.fields)
        print(f"{name:<26} {mean:7.1f} {worst:8.1f}")

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    configs = sorted((REPO / "configs/noise").glob("*.yaml"))
    print(f"\n{'(16, 1, 128, 128) batch':<26}" + "".join(f"{d.type:>8} ms" for d in devices))
    rows: dict[str, list[float]] = {}
    for device in devices:
        clean = torch.full((16, 1, 128, 128), 100.0, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        for path in configs:
            model = instantiate(OmegaConf.load(path))
            ms = _batch_ms(model, clean, generator, device=device)
            rows.setdefault(f"noise={path.stem}", []).append(ms)
        aug = Augment(rotation_degrees=10.0, translate_px=4, brightness_range=(0.9, 1.1))
        mask = clean > 50
        rows.setdefault("augment (all on)", []).append(
            _batch_ms(aug, clean, mask, rng=generator, device=device)
        )
        flips = Augment()
        rows.setdefault("augment (flips+rot90)", []).append(
            _batch_ms(flips, clean, rng=generator, device=device)
        )
    for name, values in rows.items():
        print(f"{name:<26}" + "".join(f"{v:11.1f}" for v in values))


if __name__ == "__main__":
    main()
