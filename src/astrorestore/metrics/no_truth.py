"""What can be known about a restoration without a clean truth (real frames).

Both measures compare the restored frame with its own input, in physical units, per batch:

- ``sky_noise_ratio``: robust spread of the output over empty sky divided by that of the input
  (how much noise was removed; 1 = none);
- ``bright_flux_ratio``: flux above the sky within a few pixels of bright sources, output over
  input (a restoration must not move light: 1 = conserved).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_MAD_TO_SIGMA = 1.4826


def _robust_sigma(values: torch.Tensor) -> torch.Tensor:
    median = values.median()
    return _MAD_TO_SIGMA * (values - median).abs().median()


def _sky_and_sigma(before: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B, 1, 1, 1) sky level (median) and noise (MAD of pixel differences / √2)."""
    flat = before.flatten(1)
    sky = flat.median(dim=1).values
    diff = (before[..., :, 1:] - before[..., :, :-1]).flatten(1)
    centre = diff.median(dim=1, keepdim=True).values
    sigma = _MAD_TO_SIGMA * (diff - centre).abs().median(dim=1).values / 2**0.5
    return sky.view(-1, 1, 1, 1), sigma.clamp_min(1e-12).view(-1, 1, 1, 1)


def _near(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def sky_noise_ratio(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Median over images of robust σ(after) / robust σ(before) on empty-sky pixels."""
    sky, sigma = _sky_and_sigma(before)
    empty = ~_near(before > sky + 3 * sigma, 3)
    ratios = []
    for b in range(before.shape[0]):
        pixels = empty[b]
        if pixels.sum() < 16:
            continue
        ratios.append(
            _robust_sigma(after[b][pixels]) / _robust_sigma(before[b][pixels]).clamp_min(1e-12)
        )
    if not ratios:
        return torch.tensor(float("nan"), device=before.device)
    return torch.stack(ratios).median()


def bright_flux_ratio(
    before: torch.Tensor, after: torch.Tensor, threshold: float = 20.0
) -> torch.Tensor:
    """Σ(after − sky) / Σ(before − sky) within 2 px of pixels > sky + threshold·σ (whole batch).

    NaN when the batch has no bright source.
    """
    sky, sigma = _sky_and_sigma(before)
    region = _near(before > sky + threshold * sigma, 2)
    flux_before = ((before - sky) * region).sum()
    if not region.any() or flux_before <= 0:
        return torch.tensor(float("nan"), device=before.device)
    return ((after - sky) * region).sum() / flux_before


def no_truth_measures(before: torch.Tensor, after: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both measures of a batch by name, leaving out those the batch cannot inform (no empty
    sky, no bright source): what a module logs for frames without a truth."""
    measures = {
        "sky_noise_ratio": sky_noise_ratio(before, after),
        "bright_flux_ratio": bright_flux_ratio(before, after),
    }
    return {name: value for name, value in measures.items() if torch.isfinite(value)}
