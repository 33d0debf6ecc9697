"""How fast is training and inference, and how far from what this machine can do?

Measured side by side in one run, so the ratios hold even on a busy machine:

1. Training throughput (patches/s) of every ``configs/model/*.yaml`` at its default size
   (its own data, batch and patch size), over a few optimisation steps after a warm-up; next
   to it the data pipeline alone (crops + pairing + normalisation, no network): if the
   pipeline is not several times faster, the network is not what limits training.
2. Inference with ``infer.py``'s path (``restore_image``: normalise, tile, batch, blend) on a
   large simulated frame: megapixels/s, the network's FLOPs per pixel (counted with
   ``torch.utils.flop_counter`` on one tile, overlap included in the work done) and the
   achieved FLOP rate next to a measured peak: a large 3x3 convolution timed here.
3. Variants of the inference path (tile batch size, tile size, overlap, channels-last,
   thread count); the figures say which to keep.

``python bench/bench_speed.py [--frame 2048] [--steps 6] [--models supervised]``
Results are printed and written to ``bench/results/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.flop_counter import FlopCounterMode

from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import NetForward, Restorer
from astrorestore.train import resolve_monitor

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def compose_model(model: str, overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *(overrides or [])])
    with open_dict(cfg):
        cfg.paths.output_dir = str(RESULTS / "speed_tmp")
    return cfg


def timed(fn, repeats: int) -> float:
    """Seconds per call: best of ``repeats`` after one warm-up call (least disturbed by others
    on a shared machine)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def training_throughput(model: str, steps: int) -> dict:
    cfg = compose_model(model)
    datamodule = instantiate(cfg.data, _convert_="all")
    with open_dict(cfg):  # as train.py does: the scheduler needs the resolved mode
        cfg.monitor.metric, cfg.monitor.mode = resolve_monitor(
            cfg.monitor.metric, cfg.monitor.mode, datamodule.has_truth
        )
    parts = {key: instantiate(cfg.model[key]) for key in ("net", "loss") if key in cfg.model}
    module = instantiate(cfg.model, **parts, _convert_="all")
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batch_size = datamodule.batch_size

    def next_batch():
        return datamodule.on_after_batch_transfer(next(loader), 0)

    data_s = timed(next_batch, steps)
    optimizer = module.configure_optimizers()["optimizer"]
    batches = [next_batch() for _ in range(steps + 1)]

    def step(batch=None):
        batch = batch or batches[0]
        optimizer.zero_grad(set_to_none=True)
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    module.log = lambda *a, **k: None  # no trainer attached: logging is not what we time
    step()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    step_s = (time.perf_counter() - start) / steps
    return {
        "model": model,
        "batch": batch_size,
        "patch": int(cfg.data.get("patch_size", 0) or 0),
        "train_patches_per_s": batch_size / step_s,
        "data_patches_per_s": batch_size / data_s,
    }


def conv_peak(channels: int = 64, size: int = 256, batch: int = 4) -> float:
    """GFLOP/s of one large 3x3 convolution (2 FLOPs per multiply-add), best of a few."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    x = torch.randn(batch, channels, size, size)
    flops = 2 * batch * size * size * channels * channels * 9
    with torch.inference_mode():
        seconds = timed(lambda: conv(x), 5)
    return flops / seconds / 1e9


def flops_per_pixel(net: torch.nn.Module, tile: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 1, tile, tile))
    return counter.get_total_flops() / tile**2


def tiles_pixels(height: int, width: int, tile: int, overlap: int) -> int:
    """Pixels the network actually processes, overlaps counted each time."""
    from astrorestore.inference.tiling import tile_starts

    ny = len(tile_starts(height, tile, overlap))
    nx = len(tile_starts(width, tile, overlap))
    return ny * nx * tile * tile


def inference(frame: np.ndarray, variants: list[dict], repeats: int) -> list[dict]:
    cfg = compose_model("supervised")
    net = instantiate(cfg.model.net).eval()
    normalizer = instantiate(cfg.data.normalizer)
    rows = []
    for variant in variants:
        tile, overlap, batch = variant["tile"], variant["overlap"], variant["batch"]
        threads = variant.get("threads", torch.get_num_threads())
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        model = net.to(memory_format=torch.channels_last) if variant.get("channels_last") else net
        restorer = Restorer(
            fn=NetForward(model),
            normalizer=normalizer,
            in_channels=1,
            out_channels=1,
            scale=1,
            size_multiple=int(getattr(net, "size_multiple", 1)),
            device=torch.device("cpu"),
            name="supervised",
            ckpt_path="(bench)",
        )
        run = partial(restore_image, frame, restorer, tile, overlap, batch)
        seconds = timed(run, repeats)
        torch.set_num_threads(previous)
        net.to(memory_format=torch.contiguous_format)
        work = tiles_pixels(*frame.shape, tile, overlap) * flops_per_pixel(net, tile)
        rows.append(
            {
                **variant,
                "threads": threads,
                "mp_per_s": frame.size / seconds / 1e6,
                "gflop_per_s": work / seconds / 1e9,
                "flop_per_pixel": flops_per_pixel(net, tile),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=int, default=2048, help="side of the test frame")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per model")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=None, help="default: every model")
    args = parser.parse_args()
    torch.manual_seed(0)
    models = args.models or sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml"))
    results: dict = {"threads": torch.get_num_threads(), "training": [], "inference": []}

    print(f"torch threads: {results['threads']}")
    for model in models:
        try:
            row = training_throughput(model, args.steps)
        except Exception as exc:  # a model whose data are absent here is reported, not fatal
            print(f"{model}: skipped ({str(exc).splitlines()[0][:120]})")
            continue
        results["training"].append(row)
        print(
            f"train {model:>20}: {row['train_patches_per_s']:8.1f} patches/s "
            f"(batch {row['batch']}, patch {row['patch']}); data pipeline alone "
            f"{row['data_patches_per_s']:8.1f} patches/s"
        )

    peak = conv_peak()
    results["conv3x3_peak_gflop_per_s"] = peak
    print(f"peak: 3x3 conv 64->64 on 4x256x256: {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    frame = rng.normal(20.0, 5.0, (args.frame, args.frame)).astype(np.float32)
    baseline = {"tile": 256, "overlap": 32, "batch": 4}  # infer.yaml's defaults
    variants = [
        baseline,
        {**baseline, "batch": 1},
        {**baseline, "batch": 16},
        {**baseline, "tile": 512, "batch": 2},
        {**baseline, "overlap": 16},
        {**baseline, "channels_last": True},
        {**baseline, "tile": 512, "batch": 2, "channels_last": True},
    ]
    results["inference"] = inference(frame, variants, args.repeats)
    for row in results["inference"]:
        name = ", ".join(f"{k}={row[k]}" for k in ("tile", "overlap", "batch", "threads"))
        name += ", channels_last" if row.get("channels_last") else ""
        print(
            f"infer {args.frame}x{args.frame} [{name}]: {row['mp_per_s']:.3f} MP/s, "
            f"{row['flop_per_pixel'] / 1e3:.0f} kFLOP/px, {row['gflop_per_s']:.1f} GFLOP/s "
            f"= {100 * row['gflop_per_s'] / peak:.0f} % of the conv peak"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(results, indent=2))
    print(f"written: {RESULTS / 'speed.json'}")


if __name__ == "__main__":
    main()
