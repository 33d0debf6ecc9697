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
4. Survey restoration (issue 24), side by side in one run: the host (NumPy) path of an earlier
   commit (``--baseline-ref``, checked out from git into a temporary folder) against this
   tree's device (torch) path, each in its own process, alternating: an identity network on
   ``--frame`` frames (the path around the network alone) and the default network on
   ``--net-frame`` frames, with the % of the measured conv peak; small frames (128², one tile
   each) of the default network restored one at a time and batched (``batch_frames``); then a
   ``--survey-frames`` folder run through ``infer.py`` killed halfway and rerun with the same
   command (frames written once, manifest complete).

``python bench/bench_speed.py [--frame 2048] [--steps 6] [--models supervised] [--device cuda]
[--out FOLDER]``; ``python bench/bench_speed.py --sections survey`` runs part 4 alone. Results
are printed and written to ``FOLDER/speed.json`` (default ``bench/results``; ``speed_cuda.json``
with ``--device cuda``, where every timing waits for the GPU to finish). ``--smoke``:
``model=supervised`` at ``debug=tiny``, a 128 px frame, the baseline inference only (does the
bench run?); ``--smoke --sections survey``: part 4 on small frames, one round, 4 survey frames.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import CONFIGS, REPO, RESULTS, add_output_options, compose
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.flop_counter import FlopCounterMode

from astrorestore.inference.acceleration import accelerate
from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import NetForward, Restorer
from astrorestore.train import build

DEVICE = torch.device("cpu")  # --device


def sync() -> None:
    """Wait for queued GPU work, so that a wall-clock timing covers it."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# Where composed configs say a run writes (nothing is written there by this bench); --out.
OUTPUT = RESULTS


def compose_model(model: str, overrides: list[str] | None = None):
    cfg = compose([f"model={model}", *(overrides or [])])
    with open_dict(cfg):
        cfg.paths.output_dir = str(OUTPUT / "speed_tmp")
    return cfg


def timed(fn, repeats: int, warm: bool = True) -> float:
    """Seconds per call: best of ``repeats`` after one warm-up call (least disturbed by others
    on a shared machine)."""
    if warm:
        fn()
        sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


class _StepTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        sync()
        self.seconds.append(time.perf_counter() - self._start)


def trainer_step_times(module, datamodule, steps: int, bf16: bool) -> tuple[float, float]:
    """(first, mean of the rest) seconds per training batch under a bare Lightning Trainer,
    for modules that step their optimisers themselves (manual optimisation)."""
    timer = _StepTimer()
    trainer = L.Trainer(
        accelerator="gpu" if DEVICE.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="bf16-mixed" if bf16 else "32-true",
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds[0], sum(timer.seconds[1:]) / max(1, len(timer.seconds) - 1)


def training_throughput(
    model: str, steps: int, overrides: list[str] | None = None, bf16: bool = False
) -> dict:
    """Patches/s of optimisation steps (forward, loss, backward, step); ``overrides`` are
    train.py overrides (e.g. ``speed.channels_last=true``), ``bf16`` runs them under bf16
    autocast as ``trainer.precision=bf16-mixed`` does."""
    cfg = compose_model(model, overrides)
    datamodule, module = build(cfg)  # as train.py builds them, speed switches included
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batch_size = datamodule.batch_size

    def next_batch():
        batch = next(loader)
        if DEVICE.type == "cuda":  # as Lightning does: to the device, then the transfer hook
            batch = module.transfer_batch_to_device(batch, DEVICE, 0)
        return datamodule.on_after_batch_transfer(batch, 0)

    data_s = timed(next_batch, steps)
    if module.automatic_optimization:
        first_s, step_s = loop_step_times(module, next_batch, steps, bf16)
    else:  # the GAN steps its own optimisers: it needs a Trainer
        first_s, step_s = trainer_step_times(module, datamodule, steps, bf16)
    return {
        "model": model,
        "variant": " ".join([*(overrides or []), *(["bf16 autocast"] if bf16 else [])]) or "fp32",
        "first_step_s": first_s,
        "batch": batch_size,
        "patch": int(cfg.data.get("patch_size", 0) or 0),
        "train_patches_per_s": batch_size / step_s,
        "data_patches_per_s": batch_size / data_s,
    }


def loop_step_times(module, next_batch, steps: int, bf16: bool) -> tuple[float, float]:
    """(first, mean of the rest) seconds per optimisation step of a plain loop (forward, loss,
    backward, step) without a Trainer, so the time is the model's own."""
    module.to(DEVICE)
    optimizer = module.configure_optimizers()["optimizer"]
    batches = [next_batch() for _ in range(steps + 1)]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    module.log = lambda *a, **k: None  # no trainer attached: logging is not what we time
    start = time.perf_counter()
    step(batches[0])  # warm-up; with speed.compile=true this is the compilation
    sync()
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    sync()
    return first_s, (time.perf_counter() - start) / steps


def conv_peak(channels: int = 64, size: int = 256, batch: int = 4, bf16: bool = False) -> float:
    """GFLOP/s of one large 3x3 convolution (2 FLOPs per multiply-add), best of a few, in the
    faster of the two memory layouts (NCHW, channels-last), so that it is the machine's peak."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(DEVICE)
    x = torch.randn(batch, channels, size, size, device=DEVICE)
    flops = 2 * batch * size * size * channels * channels * 9
    best = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        conv, x = conv.to(memory_format=layout), x.contiguous(memory_format=layout)
        with torch.inference_mode(), torch.autocast(DEVICE.type, torch.bfloat16, enabled=bf16):
            best = min(best, timed(lambda: conv(x), 5))  # noqa: B023
    return flops / best / 1e9


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
    """infer.py's path (restore_image) per variant; switches as infer.py applies them."""
    cfg = compose_model("supervised")
    normalizer = instantiate(cfg.data.normalizer)
    state = instantiate(cfg.model.net).state_dict()
    rows = []
    for variant in variants:
        tile, overlap, batch = variant["tile"], variant["overlap"], variant["batch"]
        threads = variant.get("threads", torch.get_num_threads())
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        net = instantiate(cfg.model.net).eval()  # fresh: switches change the module in place
        net.load_state_dict(state)
        per_pixel = flops_per_pixel(net, tile)
        restorer = accelerate(
            Restorer(
                fn=NetForward(net).to(DEVICE),
                normalizer=normalizer,
                in_channels=1,
                out_channels=1,
                scale=1,
                size_multiple=int(getattr(net, "size_multiple", 1)),
                device=DEVICE,
                name="supervised",
                ckpt_path="(bench)",
            ),
            precision=variant.get("precision", "fp32"),
            channels_last=variant.get("channels_last", False),
            compile=variant.get("compile", False),
            batch_size=batch,
        )
        run = partial(restore_image, frame, restorer, tile, overlap, batch)
        start = time.perf_counter()
        run()  # warm-up; with compile this is the compilation
        first_s = time.perf_counter() - start
        seconds = timed(run, repeats, warm=False)
        torch.set_num_threads(previous)
        work = tiles_pixels(*frame.shape, tile, overlap) * per_pixel
        rows.append(
            {
                **variant,
                "threads": threads,
                "first_call_s": first_s,
                "mp_per_s": frame.size / seconds / 1e6,
                "gflop_per_s": work / seconds / 1e9,
                "flop_per_pixel": per_pixel,
            }
        )
    return rows


def bf16_change(ckpt: str, size: int = 256) -> dict:
    """How much bf16 moves a trained model's output, in units of each pixel's own noise."""
    from astrorestore.data.simulation.scene import render_field
    from astrorestore.inference.restorer import load_restorer

    truth, _ = render_field(size, np.random.default_rng(5), n_stars=40, n_galaxies=10)
    rng = np.random.default_rng(6)
    noisy = (rng.poisson(truth) + rng.normal(0, 5.0, truth.shape)).astype(np.float32)
    restorer = load_restorer(ckpt, DEVICE)
    exact = restore_image(noisy, restorer, 128, 16, 4)
    fast = restore_image(noisy, accelerate(restorer, precision="bf16"), 128, 16, 4)
    change = np.abs(fast - exact) / np.sqrt(np.clip(truth, 0, None) + 25.0)
    error = np.abs(exact - truth) / np.sqrt(np.clip(truth, 0, None) + 25.0)
    return {
        "change_p99_sigma": float(np.percentile(change, 99)),
        "change_max_sigma": float(change.max()),
        "restoration_error_rms_sigma": float(np.sqrt(np.mean(error**2))),
    }


# Times infer.py's restore_image in a fresh process, with whichever astrorestore is first on
# its path (this tree, or an earlier commit's): argv = frame side, "identity" | "default",
# repeats, device, configs folder, torch threads (0: torch's default). Prints {"seconds": best,
# "megapixels": ...} as JSON.
_PATH_TIMER = """
import json, sys, time
import numpy as np, torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from astrorestore.inference.acceleration import accelerate
from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import NetForward, Restorer
size, kind, repeats, device, configs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
if int(sys.argv[6]):
    torch.set_num_threads(int(sys.argv[6]))
with initialize_config_dir(configs, version_base="1.3"):
    cfg = compose("train", overrides=["model=supervised"])
torch.manual_seed(0)
net = torch.nn.Identity() if kind == "identity" else instantiate(cfg.model.net).eval()
restorer = Restorer(NetForward(net).to(device), instantiate(cfg.data.normalizer), 1, 1, 1,
                    int(getattr(net, "size_multiple", 8)), torch.device(device), kind, "(bench)")
restorer = accelerate(restorer, channels_last=True)  # infer.yaml's default
frame = np.random.default_rng(0).normal(20.0, 5.0, (size, size)).astype(np.float32)
frame[::97, ::89] = np.nan  # a few bad pixels, as real frames have
def run():
    restore_image(frame, restorer, 256, 32, 4)
    if device == "cuda":
        torch.cuda.synchronize()
run()
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter(); run(); best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best, "megapixels": frame.size / 1e6}))
"""


def checkout(ref: str, into: Path) -> Path:
    """The ``src`` folder of commit ``ref``, extracted from git into ``into`` with its
    ``configs`` (an earlier tree may not read today's configs)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src", "configs"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def time_path(src: Path, size: int, kind: str, repeats: int, threads: int = 0) -> dict:
    """restore_image's best time in a fresh process importing astrorestore from ``src`` (and
    composing the configs beside it)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [str(size), kind, str(repeats), DEVICE.type, str(src.parent / "configs"), str(threads)]
    done = subprocess.run(
        [sys.executable, "-c", _PATH_TIMER, *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"path timer failed: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "mp_per_s": result["megapixels"] / result["seconds"]}


def host_vs_device(ref: str, frame: int, net_frame: int, repeats: int, rounds: int) -> list[dict]:
    """The earlier host path and this tree's device path, alternating ``rounds`` times (best
    of all kept): the identity network with torch's threads and with one (the path's own work,
    unaffected by other processes competing for the cores), and the default network."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"host path ({ref})": checkout(ref, Path(tmp)), "device path": REPO / "src"}
        for kind, size, threads in (("identity", frame, 0), ("identity", frame, 1),
                                    ("default", net_frame, 0)):  # fmt: skip
            best: dict[str, dict] = {}
            for _ in range(rounds):
                for name, src in trees.items():
                    row = time_path(src, size, kind, repeats, threads)
                    if name not in best or row["seconds"] < best[name]["seconds"]:
                        best[name] = row
            for name, row in best.items():
                rows.append(
                    {
                        "path": name,
                        "network": kind,
                        "frame": size,
                        "threads": threads or torch.get_num_threads(),
                        **row,
                    }
                )
    return rows


def kill_and_rerun(frames: int, size: int) -> dict:
    """A folder of ``frames`` through ``infer.py method=median``, killed once half the outputs
    exist, then the same command again: frames restored twice, missing, and manifest rows."""
    from astropy.io import fits

    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        for i in range(frames):
            data = np.random.default_rng(i).normal(20.0, 5.0, (size, size)).astype(np.float32)
            fits.PrimaryHDU(data).writeto(inputs / f"frame_{i:03d}.fits")
        command = [
            sys.executable, str(REPO / "infer.py"), "method=median", f"input={inputs}",
            f"output={outputs}", "progress=false",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        while len(list(outputs.glob("frame_*.fits"))) < frames // 2 and first.poll() is None:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        stamps = {p.name: p.stat().st_mtime_ns for p in outputs.glob("frame_*.fits")}
        start = time.perf_counter()
        second = subprocess.run(command, env=env, capture_output=True, text=True)
        rerun_s = time.perf_counter() - start
        after = {p.name: p.stat().st_mtime_ns for p in outputs.glob("frame_*.fits")}
        rows = json.loads((outputs / "manifest.json").read_text())["frames"]
        return {
            "frames": frames,
            "frame": size,
            "done_before_kill": len(stamps),
            "rerun_exit": second.returncode,
            "rerun_s": rerun_s,
            "outputs": len(after),
            "restored_twice": sum(after.get(n) != t for n, t in stamps.items()),
            "manifest_rows": len(rows),
            "manifest_skipped": sum(r["status"] == "skipped" for r in rows),
            "manifest_done": sum(r["status"] == "done" for r in rows),
            "manifest_failed": sum(r["status"] == "failed" for r in rows),
        }


def batched_frames(net: torch.nn.Module, count: int, size: int, repeats: int) -> dict:
    """``count`` small frames (``size``², one tile each) of the default network restored one
    at a time and together (``batch_frames``: ``restore_image`` of the list, 4 per pass)."""
    restorer = accelerate(
        Restorer(NetForward(net), instantiate(compose_model("supervised").data.normalizer),
                 1, 1, 1, int(getattr(net, "size_multiple", 8)), DEVICE, "default", "(bench)"),
        channels_last=True,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    frames = [rng.normal(20.0, 5.0, (size, size)).astype(np.float32) for _ in range(count)]
    alone = timed(lambda: [restore_image(f, restorer, 256, 32, 4) for f in frames], repeats)
    together = timed(lambda: restore_image(frames, restorer, 256, 32, 4), repeats)
    megapixels = count * size * size / 1e6
    return {
        "frames": count,
        "frame": size,
        "alone_mp_per_s": megapixels / alone,
        "together_mp_per_s": megapixels / together,
        "speedup": alone / together,
    }


def survey_section(args, results: dict) -> None:
    """Part 4 (see the module docstring): ratios and gates printed, rows in ``results``."""
    peak = results.get("conv3x3_peak_gflop_per_s") or conv_peak(size=32 if args.smoke else 256)
    results["conv3x3_peak_gflop_per_s"] = peak
    rounds = 1 if args.smoke else 2
    rows = host_vs_device(args.baseline_ref, args.frame, args.net_frame, args.repeats, rounds)
    cfg = compose_model("supervised")
    net = instantiate(cfg.model.net).eval()
    per_pixel = flops_per_pixel(net, 256)
    for row in rows:
        if row["network"] == "default":
            work = tiles_pixels(row["frame"], row["frame"], 256, 32) * per_pixel
            row["percent_of_peak"] = 100 * work / row["seconds"] / 1e9 / peak
        print(
            f"survey [{row['network']:>8} net, {row['frame']}^2, {row['threads']} thread(s), "
            f"{row['path']}]: "
            f"{row['mp_per_s']:.2f} MP/s"
            + (
                f" = {row['percent_of_peak']:.0f} % of the fp32 conv peak"
                if "percent_of_peak" in row
                else ""
            )
        )
    for kind, threads in sorted({(r["network"], r["threads"]) for r in rows}):
        host, device = (r for r in rows if (r["network"], r["threads"]) == (kind, threads))
        ratio = device["mp_per_s"] / host["mp_per_s"]
        results[f"survey_{kind}_{threads}threads_speedup"] = ratio
        print(f"survey [{kind} net, {threads} thread(s)]: device path / host path = {ratio:.2f}x")
    results["survey_paths"] = rows
    small = batched_frames(net, 8 if args.smoke else 32, 64 if args.smoke else 128, args.repeats)
    results["survey_batched_frames"] = small
    print(
        f"survey [default net, {small['frames']} frames of {small['frame']}^2]: one at a time "
        f"{small['alone_mp_per_s']:.2f} MP/s, batched {small['together_mp_per_s']:.2f} MP/s "
        f"({small['speedup']:.2f}x)"
    )
    kill = kill_and_rerun(args.survey_frames, args.survey_frame)
    results["survey_kill_and_rerun"] = kill
    print(
        f"survey [kill and rerun, {kill['frames']} frames of {kill['frame']}^2]: killed after "
        f"{kill['done_before_kill']}; rerun exit {kill['rerun_exit']} in {kill['rerun_s']:.1f} s, "
        f"{kill['outputs']} outputs, {kill['restored_twice']} restored twice, manifest "
        f"{kill['manifest_rows']} rows ({kill['manifest_skipped']} skipped, "
        f"{kill['manifest_done']} done, {kill['manifest_failed']} failed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=int, default=2048, help="side of the test frame")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per model")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=None, help="default: every model")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--ckpt", default=None, help="trained checkpoint for the bf16 accuracy")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    add_output_options(parser)
    parser.add_argument(
        "--sections", nargs="*", default=None, choices=["training", "inference", "survey"],
        help="default: all three (with --smoke: training and inference)",
    )  # fmt: skip
    parser.add_argument("--baseline-ref", default="7517bec", help="commit of the host path")
    parser.add_argument("--net-frame", type=int, default=1024, help="frame of the default net")
    parser.add_argument("--survey-frames", type=int, default=20)
    parser.add_argument("--survey-frame", type=int, default=1024)
    args = parser.parse_args()
    global DEVICE, OUTPUT
    OUTPUT = Path(args.out)
    if args.smoke:
        args.frame, args.steps, args.repeats = 128, 1, 1
        args.models = args.models or ["supervised"]
        args.net_frame, args.survey_frames, args.survey_frame = 256, 4, 128
        args.sections = args.sections or ["training", "inference"]
    args.sections = args.sections or ["training", "inference", "survey"]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device here; run without --device")
    DEVICE = torch.device(args.device)
    torch.manual_seed(0)
    models = args.models or sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
    results: dict = {"threads": torch.get_num_threads(), "training": [], "inference": []}
    results["device"] = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"
    print(f"device: {results['device']}")

    print(f"torch threads: {results['threads']}")
    size = ["debug=tiny"] if args.smoke else []
    jobs = [(model, size, False) for model in models]
    # The default model's switches, timed beside its baseline (the ratios are what count).
    if not args.smoke:
        jobs += [("supervised", ["speed.channels_last=false"], False), ("supervised", [], True)]
    if DEVICE.type == "cuda":  # trainer=gpu trains in bf16-mixed; small batches starve a GPU
        jobs += [(model, [], True) for model in models if model != "supervised"]
        jobs += [("supervised", ["data.batch_size=128", "data.patches_per_epoch=16384"], True)]
    if args.compile:
        jobs.append(("supervised", ["speed.compile=true"], False))
    if "training" not in args.sections:
        jobs = []
    for model, overrides, bf16 in jobs:
        try:
            row = training_throughput(model, args.steps, overrides, bf16)
        except Exception as exc:  # a model whose data are absent here is reported, not fatal
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            print(f"{model}: skipped ({reason})")
            continue
        results["training"].append(row)
        print(
            f"train {model:>14} [{row['variant']}]: {row['train_patches_per_s']:8.1f} patches/s "
            f"(batch {row['batch']}, patch {row['patch']}; first step {row['first_step_s']:.1f} s);"
            f" data pipeline alone {row['data_patches_per_s']:8.1f} patches/s"
        )

    if "inference" not in args.sections:
        if "survey" in args.sections:
            survey_section(args, results)
        write_results(results)
        return
    peak_size = 32 if args.smoke else 256
    peak = conv_peak(size=peak_size)
    peak_bf16 = conv_peak(size=peak_size, bf16=True)
    results["conv3x3_peak_gflop_per_s"] = peak
    results["conv3x3_peak_bf16_gflop_per_s"] = peak_bf16
    print(
        f"peak: 3x3 conv 64->64 on 4x{peak_size}x{peak_size}: {peak:.1f} GFLOP/s fp32, {peak_bf16:.1f} bf16"
    )
    rng = np.random.default_rng(0)
    frame = rng.normal(20.0, 5.0, (args.frame, args.frame)).astype(np.float32)
    # infer.yaml's defaults
    infer = compose(config_name="infer")
    baseline = {
        "tile": int(infer.tile_size),
        "overlap": int(infer.overlap),
        "batch": int(infer.batch_size),
        "channels_last": bool(infer.channels_last),
    }
    variants = [
        baseline,
        {**baseline, "channels_last": False},
        {**baseline, "batch": 1},
        {**baseline, "batch": 16},
        {**baseline, "tile": 512, "batch": 2},
        {**baseline, "overlap": 16},
        {**baseline, "precision": "bf16"},
        {**baseline, "precision": "bf16", "channels_last": False},
    ]
    if args.compile:
        variants.append({**baseline, "compile": True})
    if args.smoke:
        variants = [{**baseline, "tile": 64, "overlap": 16}]
    results["inference"] = inference(frame, variants, args.repeats)
    for row in results["inference"]:
        name = ", ".join(f"{k}={row[k]}" for k in ("tile", "overlap", "batch", "threads"))
        name += ", compile" if row.get("compile") else ""
        bf16 = row.get("precision") == "bf16"
        name += ", bf16" if bf16 else ""
        name += "" if row.get("channels_last") else ", NCHW"
        row["percent_of_peak"] = 100 * row["gflop_per_s"] / (peak_bf16 if bf16 else peak)
        print(
            f"infer {args.frame}x{args.frame} [{name}]: {row['mp_per_s']:.3f} MP/s, "
            f"{row['flop_per_pixel'] / 1e3:.0f} kFLOP/px, {row['gflop_per_s']:.1f} GFLOP/s "
            f"= {row['percent_of_peak']:.0f} % of the {'bf16' if bf16 else 'fp32'} conv peak"
            f" (first call {row['first_call_s']:.1f} s)"
        )
    if args.ckpt:
        results["bf16_change"] = bf16_change(args.ckpt)
        change = results["bf16_change"]
        print(
            f"bf16 vs fp32 output of {args.ckpt}: 99th percentile "
            f"{change['change_p99_sigma']:.3f} sigma, max {change['change_max_sigma']:.2f} sigma "
            f"(restoration error itself: rms {change['restoration_error_rms_sigma']:.3f} sigma)"
        )
    if "survey" in args.sections:
        survey_section(args, results)
    write_results(results)


def write_results(results: dict) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    out = OUTPUT / ("speed.json" if DEVICE.type == "cpu" else f"speed_{DEVICE.type}.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
