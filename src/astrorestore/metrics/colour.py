"""Colour measures of a colorization: CIE76 colour error in Lab and colourfulness.

Both take RGB in [0, 1] (denormalised photographs). PSNR/SSIM say little about colour: a grey
output copied to three channels scores well on SSIM against a mostly dark, weakly coloured sky.
ΔE (Euclidean distance in CIE L*a*b*, ~2.3 is a just-noticeable difference) and the
Hasler–Süsstrunk colourfulness (0 for grey; > 0 grows with saturation) show what changed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def delta_e76(rgb: Tensor, reference: Tensor) -> Tensor:
    """Per-image mean CIE76 ΔE (B,) between two (B, 3, H, W) RGB batches in [0, 1]."""
    import kornia

    lab_a = kornia.color.rgb_to_lab(rgb.float().clamp(0.0, 1.0))
    lab_b = kornia.color.rgb_to_lab(reference.float().clamp(0.0, 1.0))
    return (lab_a - lab_b).pow(2).sum(1).clamp_min(1e-12).sqrt().flatten(1).mean(1)


def delta_e2000(rgb: Tensor, reference: Tensor) -> Tensor:
    """Per-image mean CIEDE2000 ΔE (B,) between two (B, 3, H, W) RGB batches in [0, 1]:
    CIE76 corrected for the eye's lower sensitivity to chroma differences in saturated colours
    and for the blue hue rotation (~1 is a just-noticeable difference). Lab from kornia,
    the formula from scikit-image (``skimage.color.deltaE_ciede2000``), on the CPU."""
    import kornia
    from skimage.color import deltaE_ciede2000

    lab_a = kornia.color.rgb_to_lab(rgb.float().clamp(0.0, 1.0)).cpu().double().numpy()
    lab_b = kornia.color.rgb_to_lab(reference.float().clamp(0.0, 1.0)).cpu().double().numpy()
    distance = deltaE_ciede2000(lab_a, lab_b, channel_axis=1)
    return torch.from_numpy(distance.reshape(distance.shape[0], -1).mean(1))


def colourfulness(rgb: Tensor) -> Tensor:
    """Per-image Hasler–Süsstrunk colourfulness (B,) on a 0–255 scale, RGB in [0, 1]."""
    x = 255.0 * rgb.float().clamp(0.0, 1.0)
    rg = (x[:, 0] - x[:, 1]).flatten(1)
    yb = (0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]).flatten(1)
    spread = torch.sqrt(rg.std(1) ** 2 + yb.std(1) ** 2)
    centre = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2)
    return spread + 0.3 * centre


def colour_measures(rgb: Tensor, reference: Tensor) -> dict[str, Tensor]:
    """Batch means of :func:`delta_e76` against ``reference`` and of :func:`colourfulness`
    (``delta_e``, ``colourfulness``): what a colorization module logs at validation."""
    return {
        "delta_e": delta_e76(rgb, reference).mean(),
        "colourfulness": colourfulness(rgb).mean(),
    }
