"""Which limits training on FITS folders: the data pipeline or the model's training step?

Measures, on this machine's CPU (or ``--device cuda``), patches per second of

- the data pipeline of ``data=jwst``: the data loader (random crops of the memory-mapped tile
  cache, validity rejection, flips/turns), the pairing (noise drawn per batch for deep frames;
  real exposure pairs with ``--pairs``) and the normalisation with the parent frame's statistics
  (or the crop's own after injected noise), i.e. everything up to the batch the module gets;
- one training step of the default model (``model=supervised``'s residual U-Net, L1 loss, as
  masks require): forward, backward, optimiser step, on batches the pipeline made.

Usage: ``python bench/bench_data_pipeline.py [--root FOLDER] [--batches 30] [--batch-size 16]
[--patch-size 64] [--num-workers 0] [--pairs] [--out FOLDER]``. Without ``--root`` the embedded
JWST-like demo frames are written to a temporary folder first. Prints the figures and writes
``FOLDER/data_pipeline.json`` (default ``bench/results``); ``--smoke``: 3 batches of 2 patches of
32 px (does the bench run?).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import add_output_options, compose
from hydra.utils import instantiate


def _config(args: argparse.Namespace, workdir: Path):
    mode = (
        ["pairing=noise2noise", "data.pairs=true"]
        if args.pairs
        else ["pairing=supervised", "data.deep_as_clean=true"]
    )
    overrides = [
        "data=jwst",
        "loss=l1",
        *mode,
        f"data.batch_size={args.batch_size}",
        f"data.patch_size={args.patch_size}",
        f"data.num_workers={args.num_workers}",
        f"data.patches_per_epoch={args.batch_size * args.batches}",
        f"data.demo_dir={workdir / 'demo'}",
        "data.progress=false",
        "data.val_patches=8",
    ]
    if args.root:
        overrides += [f"data.root={args.root}", f"data.cache_dir={workdir / 'cache'}"]
    return compose(overrides)


def _pipeline(datamodule, device: torch.device) -> tuple[float, list[dict]]:
    """Patches/s of loader + pairing + normalisation, and the batches it made."""
    batches, patches = [], 0
    loader = datamodule.train_dataloader()
    start = time.perf_counter()
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        batch = datamodule.on_after_batch_transfer(batch, 0)
        patches += batch["input"].shape[0]
        batches.append(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return patches / (time.perf_counter() - start), batches


def _training_steps(cfg, batches: list[dict], device: torch.device) -> float:
    net = instantiate(cfg.model.net).to(device)
    loss = instantiate(cfg.model.loss)
    optimizer = instantiate(cfg.model.optimizer)(params=net.parameters())

    def step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        total, _ = loss(net(batch["input"]), batch["target"], batch.get("loss_mask"))
        total.backward()
        optimizer.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(b["input"].shape[0] for b in batches[1:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder of FITS frames (default: demo)")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--pairs", action="store_true", help="real exposure pairs (Noise2Noise)")
    parser.add_argument("--device", default="cpu")
    add_output_options(parser)
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.batch_size, args.patch_size = 3, 2, 32
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, Path(tmp))
        datamodule = instantiate(cfg.data, _convert_="all")
        start = time.perf_counter()
        datamodule.prepare_data()
        datamodule.setup("fit")
        prepare_s = time.perf_counter() - start
        _pipeline(datamodule, device)  # warm-up: memory maps, first-touch page faults
        data_rate, batches = _pipeline(datamodule, device)
        step_rate = _training_steps(cfg, batches, device)

    mode = "exposure pairs" if args.pairs else "deep frames + injected noise"
    print(f"data=jwst ({mode}), {args.batch_size} x {args.patch_size}^2 patches, {device}, ")
    print(f"{args.num_workers} loader workers, {torch.get_num_threads()} torch threads")
    print(f"  first preparation (or cache hit): {prepare_s:.1f} s")
    print(f"  {'data pipeline (loader + pairing + normalisation)':<52} {data_rate:9.0f} patches/s")
    print(f"  {'training step (supervised residual U-Net, L1)':<52} {step_rate:9.0f} patches/s")
    limit = "the training step" if step_rate < data_rate else "the data pipeline"
    print(
        f"  -> {limit} limits training ({max(data_rate, step_rate) / min(data_rate, step_rate):.1f}x)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "mode": mode,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "num_workers": args.num_workers,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "prepare_s": prepare_s,
        "data_pipeline_patches_per_s": data_rate,
        "training_step_patches_per_s": step_rate,
    }
    (out / "data_pipeline.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
