"""CAREamics' Noise2Void, N2V2 and Noise2Noise at a given budget, on arrays we hand it.

The peer rows of ``bench/bench_self_supervised.py``. CAREamics is optional and never a
requirement of astrorestore; its releases pin other torch versions than ours, so this script
depends only on numpy and careamics and runs in whatever Python has CAREamics installed
(``--careamics-python`` of the bench; e.g. a venv made with ``python -m venv /tmp/cvenv &&
/tmp/cvenv/bin/pip install careamics``). It trains each algorithm with CAREamics' own defaults
(mean/std normalisation, its U-Net, its masking) for ``--steps`` steps of ``--batch`` patches
of ``--patch`` px, predicts the test frames tile by tile, and writes for each algorithm
``<name>.npy`` (predictions in the input's units) plus ``careamics.json`` (seconds, patches/s,
versions). Scoring is the bench's job, so every method is scored by the same code.

    python bench/careamics_rows.py --train train.npy [--train2 train2.npy] --test test.npy \\
        --out DIR [--steps 200 --batch 8 --patch 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def train_and_predict(
    name: str, train: np.ndarray, train2: np.ndarray | None, test: np.ndarray, args
) -> tuple[np.ndarray, dict]:
    from careamics import CAREamist
    from careamics.config import create_n2n_config, create_n2v_config

    # CAREamics cuts an epoch from the arrays (about N * (H/patch) * (W/patch) patches), so the
    # budget is met with whole epochs of that length; the steps actually run are reported.
    per_epoch = max(
        1,
        (train.shape[0] * (train.shape[1] // args.patch) * (train.shape[2] // args.patch))
        // args.batch,
    )
    common = dict(
        data_type="array",
        axes="SYX",
        patch_size=[args.patch, args.patch],
        batch_size=args.batch,
        num_epochs=max(1, round(args.steps / per_epoch)),
    )
    if name == "n2n":
        config = create_n2n_config(experiment_name=f"bench_{name}", **common)
    else:
        config = create_n2v_config(
            experiment_name=f"bench_{name}", use_n2v2=name == "n2v2", **common
        )
    with tempfile.TemporaryDirectory() as work_dir:
        careamist = CAREamist(config, work_dir=work_dir, enable_progress_bar=False)
        start = time.perf_counter()
        if name == "n2n":
            careamist.train(train_data=train, train_data_target=train2)
        else:
            careamist.train(train_data=train)
        seconds = time.perf_counter() - start
        steps = int(careamist.trainer.global_step)
        predictions, _ = careamist.predict(
            test,
            axes="SYX",
            tile_size=(args.tile, args.tile),
            tile_overlap=(args.overlap, args.overlap),
            batch_size=1,
        )
    # One array per input source (here the whole stack), whatever singleton axes it keeps.
    out = np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in predictions])
    out = out.reshape(test.shape)
    return out, {
        "steps": steps,
        "train_seconds": seconds,
        "train_patches_per_s": steps * args.batch / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help=".npy (N, H, W) noisy training frames")
    parser.add_argument("--train2", default=None, help=".npy second noisy draws (Noise2Noise)")
    parser.add_argument("--test", required=True, help=".npy (N, H, W) noisy test frames")
    parser.add_argument("--out", required=True, help="folder for <name>.npy and careamics.json")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=48)
    parser.add_argument("--methods", default="n2v,n2v2,n2n")
    args = parser.parse_args()

    import careamics
    import torch

    train = np.load(args.train).astype(np.float32)
    train2 = np.load(args.train2).astype(np.float32) if args.train2 else None
    test = np.load(args.test).astype(np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"careamics": careamics.__version__, "torch": torch.__version__, "rows": {}}
    for name in args.methods.split(","):
        if name == "n2n" and train2 is None:
            print("careamics n2n skipped: no --train2 (second noisy draws)")
            continue
        predictions, stats = train_and_predict(name, train, train2, test, args)
        np.save(out / f"{name}.npy", predictions)
        record["rows"][name] = stats
        print(
            f"careamics {name}: {stats['steps']} steps, {stats['train_patches_per_s']:.1f} "
            "patches/s",
            flush=True,
        )
    (out / "careamics.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
