"""A stand-in restorer for survey-run tests, and a command line that restores a folder with it
(``python -m tests.unit.survey_helpers <input> <output> [key=value ...]``), for tests that
kill a run and rerun it. ``delay=<s>`` makes each tile batch take that long."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from astropy.io import fits
from omegaconf import OmegaConf

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.inference.restorer import NetForward, Restorer


class Blur(torch.nn.Module):
    """A 3x3 box blur that optionally sleeps, so a run can be caught halfway."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return self.conv(x)


class BlurLoader:
    """``load_restorer`` stand-in: every checkpoint is the blur."""

    def __init__(self, delay: float = 0.0, **normalizer) -> None:
        self.delay = delay
        self.normalizer = normalizer  # AsinhNormalizer's options (background=map, box_size=)

    def __call__(self, ckpt_path: str, device: str, **options) -> Restorer:
        return Restorer(
            NetForward(Blur(self.delay).eval()),
            AsinhNormalizer(**self.normalizer),
            1,
            1,
            1,
            8,
            torch.device(device),
            "blur",
            ckpt_path,
        )


def write_frames(folder, count: int, shape=(48, 48)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        data = np.random.default_rng(i).normal(100.0, 10.0, shape).astype(np.float32)
        paths.append(folder / f"frame_{i:02d}.fits")
        fits.PrimaryHDU(data).writeto(paths[-1])
    return paths


def config(inputs, outputs, **over):
    cfg = {
        "ckpt_path": "/models/blur.ckpt",
        "input": str(inputs),
        "output": str(outputs),
        "tile_size": 32,
        "overlap": 8,
        "batch_size": 4,
        "device": "cpu",
        "progress": False,
        "workers": 0,
    }
    return OmegaConf.create(cfg | over)


if __name__ == "__main__":
    from astrorestore.inference.runner import run_inference

    inputs, outputs, *rest = sys.argv[1:]
    over = dict(arg.split("=", 1) for arg in rest)
    delay = float(over.pop("delay", 0.0))
    run_inference(config(inputs, outputs, **over), BlurLoader(delay))
