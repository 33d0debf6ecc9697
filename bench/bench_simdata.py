"""Speed of the training-data side: scene rendering, noise draws and augmentations.

The denoiser's data are rendered once per run and corrupted per batch, so these figures tell
whether the data pipeline can limit training: a 256x256 field's render time (the scenes of
``data=simulated`` and ``data=simulated_randomized``, and each PSF family of the latter), and
the time of one noise draw (each ``noise=`` config) and one augmentation of a
(16, 1, 128, 128) batch on the CPU and, where present, the GPU.

It also draws what ``data=simulated_realistic`` trains on: a few of its fields, clean and with
the shipped ``noise=poisson_gaussian`` drawn on the photons that arrived (so an over-subtracted
sky is negative yet as noisy as the true one), in ``--figure`` (default
``FOLDER/realistic_fields.png``; the docs' picture is ``--figure docs/images/realistic_fields.png``).

Usage: ``python bench/bench_simdata.py [--fields 40] [--out FOLDER] [--figure PNG]``; prints a
table (milliseconds) and writes ``FOLDER/simdata.json`` (default ``bench/results``).
``--smoke``: one field, 64 px, 2 repeats (does the bench run?).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import CONFIGS, add_output_options, compose
from hydra.utils import instantiate
from omegaconf import OmegaConf

from astrorestore.data.augment import Augment
from astrorestore.data.simulation.scene import render_field


def _render_ms(scene: dict, n: int, size: int = 256) -> tuple[float, float]:
    rng = np.random.default_rng(12345)
    render_field(size, rng, **scene)  # warm-up: imports, FFT plans, the Airy table
    times = []
    for _ in range(n):
        start = time.perf_counter()
        render_field(size, rng, **scene)
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


def _scene(data: str) -> dict:
    """The scene of a shipped data config (``data=<data>``)."""
    return OmegaConf.to_container(compose([f"data={data}"]).data.scene)


def render_times(n: int, size: int) -> dict[str, tuple[float, float]]:
    """Mean and worst render time (ms) of each scene setting."""
    default, randomized = _scene("simulated"), _scene("simulated_randomized")
    settings = {"default": default, "randomized": randomized}
    for family in ("moffat", "gaussian", "airy"):
        settings[f"randomized, {family} only"] = {**randomized, "psf": family}
    settings["realistic"] = _scene("simulated_realistic")
    return {name: _render_ms(scene, n, size) for name, scene in settings.items()}


def _features(catalog: dict) -> dict[str, str]:
    """What a realistic field drew: ``{feature: label}``."""
    background, found = catalog["background"], {}
    if background["gradient"]:
        found["gradient"] = f"gradient {background['gradient']:.0%}"
    if background["vignetting"] < 1:
        found["vignetting"] = f"vignetting {background['vignetting']:.2f}"
    if background["nebulosity"]:
        found["nebulosity"] = "nebulosity"
    if catalog["pedestal"] > catalog["sky"]:
        found["negative sky"] = f"sky {catalog['sky'] - catalog['pedestal']:+.1f} e-"
    if catalog["extended"]:
        dust = any(g["dust_depth"] for g in catalog["extended"])
        found["large galaxy"] = f"{len(catalog['extended'])} large galaxy" + (
            " + dust" if dust else ""
        )
    if catalog["bleed"] and catalog["saturated"].any():
        found["bleed"] = f"bleed trails ({catalog['saturated'].sum()} cores)"
    return found


def realistic_figure(path: Path, size: int, panels: int = 4, tries: int = 16) -> None:
    """Clean (top) and noisy (bottom) ``data=simulated_realistic`` fields, chosen among the first
    ``tries`` seeds so that together they show every feature at least once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene = _scene("simulated_realistic")
    chosen, seen = [], set()
    for seed in range(tries):
        image, catalog = render_field(size, np.random.default_rng(seed), **scene)
        kinds = set(_features(catalog))
        if kinds - seen or tries - seed <= panels - len(chosen):
            chosen.append((image, catalog))
            seen |= kinds
        if len(chosen) == panels:
            break
    noise = instantiate(compose(["noise=poisson_gaussian"]).data.pairing.noise)
    noise.exposure_range = (1.0, 1.0)
    rng = torch.Generator().manual_seed(0)
    figure, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 6.6), squeeze=False)
    for column, (image, catalog) in enumerate(chosen):
        clean = torch.from_numpy(image)[None, None]
        pedestal = torch.full_like(clean, catalog["pedestal"])
        noisy = noise(clean, rng, pedestal=pedestal)[0][0, 0].numpy()
        # One asinh stretch per field (from its noisy frame) for both rows.
        low = float(np.percentile(noisy, 1))
        sigma = 1.4826 * float(np.median(np.abs(noisy - np.median(noisy))))
        high = np.arcsinh((np.percentile(noisy, 99.8) - low) / (3 * sigma))
        for row, data in enumerate((image, noisy)):
            axis = axes[row, column]
            axis.imshow(np.arcsinh((data - low) / (3 * sigma)), cmap="gray", vmin=0, vmax=high,
                        origin="lower")  # fmt: skip
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_title("\n".join(_features(catalog).values()) or "flat sky", fontsize=8)
    axes[0, 0].set_ylabel("clean (truth)")
    axes[1, 0].set_ylabel("noisy (poisson_gaussian)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=60)
    plt.close(figure)


def batch_times(devices: list[torch.device], side: int, repeats: int) -> dict[str, list[float]]:
    """Time (ms) of one draw of each noise config and of the augmentations, per device."""
    # Each noise config as the pairing gets it (noise=none has no model to time).
    names = sorted(path.stem for path in (CONFIGS / "noise").glob("*.yaml"))
    noises = {name: compose([f"noise={name}"]).data.pairing.noise for name in names}
    rows: dict[str, list[float]] = {}
    for device in devices:
        clean = torch.full((16, 1, side, side), 100.0, device=device)
        rng = torch.Generator(device=device).manual_seed(0)
        for name, config in noises.items():
            if config is None:
                continue
            model = instantiate(config)
            ms = _batch_ms(model, clean, rng, device=device, repeats=repeats)
            rows.setdefault(f"noise={name}", []).append(ms)
        aug = Augment(rotation_degrees=10.0, translate_px=4, brightness_range=(0.9, 1.1))
        mask = clean > 50
        rows.setdefault("augment (all on)", []).append(
            _batch_ms(aug, clean, mask, rng=rng, device=device, repeats=repeats)
        )
        flips = Augment()
        rows.setdefault("augment (flips+rot90)", []).append(
            _batch_ms(flips, clean, rng=rng, device=device, repeats=repeats)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=40, help="fields per scene setting")
    parser.add_argument(
        "--figure", help="PNG of realistic fields (default OUT/realistic_fields.png)"
    )
    add_output_options(parser)
    args = parser.parse_args()
    size, side, repeats = (64, 32, 2) if args.smoke else (256, 128, 20)
    fields = 1 if args.smoke else args.fields

    renders = render_times(fields, size)
    print(f"{f'{size}x{size} field render':<26} mean ms   max ms")
    for name, (mean, worst) in renders.items():
        print(f"{name:<26} {mean:7.1f} {worst:8.1f}")

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = batch_times(devices, side, repeats)
    print(f"\n{f'(16, 1, {side}, {side}) batch':<26}" + "".join(f"{d.type:>8} ms" for d in devices))
    for name, values in rows.items():
        print(f"{name:<26}" + "".join(f"{v:11.1f}" for v in values))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "field_size": size,
        "render_ms": {k: {"mean": m, "max": w} for k, (m, w) in renders.items()},
        "batch": [16, 1, side, side],
        "batch_ms": {
            k: dict(zip([d.type for d in devices], v, strict=True)) for k, v in rows.items()
        },
    }
    (out / "simdata.json").write_text(json.dumps(record, indent=1))
    figure = Path(args.figure) if args.figure else out / "realistic_fields.png"
    realistic_figure(figure, size, panels=2 if args.smoke else 4)
    print(f"\nrealistic fields: {figure}")


if __name__ == "__main__":
    main()
