"""Restore images with a trained checkpoint:
`python infer.py ckpt_path=<ckpt> input=<file|folder|glob> output=<file|folder>`."""

from pathlib import Path

from astrorestore.cli import run_hydra
from astrorestore.inference.restorer import load_restorer
from astrorestore.inference.runner import run_inference


def infer(cfg):
    return run_inference(cfg, load_restorer)


if __name__ == "__main__":
    run_hydra(infer, Path(__file__).resolve().parent / "configs", "infer")
