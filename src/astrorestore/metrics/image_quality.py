"""Image-quality metrics against a clean truth, with a stated data range.

Convention (used in logs, the README and the benchmark): metrics are computed per image in
the asinh-normalised space the network works in, and the data range of each image is the
range of *its clean truth* in that space (``max(truth) - min(truth)``). PSNR therefore reads
"how large is the error compared with the brightest structure above the sky", and does not
depend on an arbitrary constant. Averages are over images.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


def truth_data_range(truth: torch.Tensor) -> torch.Tensor:
    """Per-image data range (B,) of the clean truth, floored to avoid log(0)."""
    flat = truth.flatten(1)
    return (flat.amax(dim=1) - flat.amin(dim=1)).clamp_min(1e-6)


def psnr_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image, data range = that image's truth range."""
    ranges = truth_data_range(truth)
    return torch.stack(
        [
            peak_signal_noise_ratio(p[None], t[None], data_range=float(r))
            for p, t, r in zip(pred.float(), truth.float(), ranges, strict=False)
        ]
    )


def ssim_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """SSIM of each image, data range = that image's truth range (images shifted to >= 0)."""
    values = []
    for p, t, r in zip(pred.float(), truth.float(), truth_data_range(truth), strict=False):
        low = t.amin()
        values.append(
            structural_similarity_index_measure(
                (p - low)[None], (t - low)[None], data_range=float(r), kernel_size=7
            )
        )
    return torch.stack(values)


class RestorationMetrics(Metric):
    """Accumulates the mean per-image PSNR and SSIM over an epoch (DDP-safe sums)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "psnr_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "ssim_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        pred, truth = pred.detach(), truth.detach()
        self.psnr_sum += psnr_per_image(pred, truth).sum().double()
        self.ssim_sum += ssim_per_image(pred, truth).sum().double()
        self.count += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp_min(1)
        return {"psnr": (self.psnr_sum / count).float(), "ssim": (self.ssim_sum / count).float()}
