"""Train a restoration model: `python train.py [model=...] [data=...] [key=value ...]`."""

from pathlib import Path

from astrorestore.cli import run_hydra
from astrorestore.train import report_failed_jobs, train

if __name__ == "__main__":
    run_hydra(train, Path(__file__).resolve().parent / "configs", "train")
    report_failed_jobs()  # a multirun whose jobs failed exits 1, naming them
