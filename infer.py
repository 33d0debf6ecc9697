"""Restore images with a trained checkpoint:
`python infer.py ckpt_path=<ckpt> input=<file|folder|glob> output=<file|folder>`.

A folder or glob is a survey run: `<output>/manifest.json` lists every frame (done, skipped,
failed; time, MP/s, error), a bad frame is recorded and skipped, and the same command run
again restores only the frames not done yet (`overwrite=true` redoes them all). `trainer=gpu`,
`trainer=ddp` or `-m hydra/launcher=slurm trainer=ddp ...` split the frames over GPUs and nodes
with Lightning's predict loop."""

from pathlib import Path

from astrorestore.cli import run_hydra
from astrorestore.inference.restorer import load_restorer
from astrorestore.inference.runner import run_inference


def infer(cfg):
    return run_inference(cfg, load_restorer)


if __name__ == "__main__":
    run_hydra(infer, Path(__file__).resolve().parent / "configs", "infer")
