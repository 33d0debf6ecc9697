"""Frames, networks and settings whose restorations by the host (NumPy) path of commit 7517bec
are stored in ``data/host_path_outputs.npz``: the device (torch) path must reproduce them.

Regenerate (only if the cases change) with the old path first on the import path:
``git archive 7517bec src | tar -x -C /tmp/base && PYTHONPATH=/tmp/base/src:. python -m
tests.unit.host_reference_cases``. Only numpy, torch and the normaliser are imported here, so
the same cases run against either version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

STORED = Path(__file__).parent / "data" / "host_path_outputs.npz"


def box_blur() -> torch.nn.Module:
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
    return conv.eval()


class Upsample2(torch.nn.Module):
    """A x2 'super-resolution': nearest-neighbour enlargement plus a blur."""

    def forward(self, x):
        return box_blur()(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class GreyToColour(torch.nn.Module):
    """A '1 -> 3 colorizer': channels 1, 0.5 and 0.25 times the grey value."""

    def forward(self, x):
        return torch.cat([x, 0.5 * x, 0.25 * x], dim=1)


def star_frame(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Sky of 20 e- with Gaussian noise, a few bright stars and some bad pixels."""
    rng = np.random.default_rng(seed)
    frame = rng.normal(20.0, 5.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(6):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        frame += rng.uniform(1e2, 1e4) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.5)
    frame = frame.astype(np.float32)
    frame[rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5)] = np.nan
    frame[3, 4] = np.inf
    return frame


# name: (frame, network, in, out, scale, tile, overlap, batch)
def cases() -> dict[str, tuple]:
    grey = star_frame((96, 104), 1)
    rgb = np.stack([star_frame((64, 72), s) for s in (2, 3, 4)], -1)
    rgb = np.nan_to_num(rgb, nan=20.0, posinf=20.0)
    return {
        "blur": (grey, box_blur(), 1, 1, 1, 32, 8, 3),
        "identity": (grey, torch.nn.Identity(), 1, 1, 1, 32, 8, 4),
        "untiled_edges": (grey, box_blur(), 1, 1, 1, 32, 0, 2),
        "fitted_tile": (grey[:40, :56], box_blur(), 1, 1, 1, 64, 16, 4),
        "x2": (grey[:48, :64], Upsample2(), 1, 1, 2, 16, 4, 5),
        "colorize": (grey[:48, :64], GreyToColour(), 1, 3, 1, 16, 4, 4),
        "rgb_luma": (rgb, box_blur(), 1, 1, 1, 16, 4, 4),
    }


def restore_case(restore_image, restorer_type, forward_type, normalizer, case: tuple):
    """Restore one case with the given ``restore_image`` (old or new)."""
    frame, net, cin, cout, scale, tile, overlap, batch = case
    restorer = restorer_type(
        forward_type(net), normalizer, cin, cout, scale, 8, torch.device("cpu"), "ref", "ref"
    )
    return restore_image(frame, restorer, tile, overlap, batch)


if __name__ == "__main__":
    from astrorestore.data.normalization.asinh import AsinhNormalizer
    from astrorestore.inference.restore import restore_image
    from astrorestore.inference.restorer import NetForward, Restorer

    outputs = {
        name: restore_case(restore_image, Restorer, NetForward, AsinhNormalizer(), case)
        for name, case in cases().items()
    }
    STORED.parent.mkdir(exist_ok=True)
    np.savez_compressed(STORED, **outputs)
    print(f"written: {STORED} ({', '.join(outputs)})")
