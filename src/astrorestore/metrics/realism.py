"""Realism of a restoration against its truth: does the output look like the truth does?

A per-pixel error is minimised by the conditional mean, which is smooth and grey; these measures
look at the statistics a sharp, coloured truth has and a mean lacks (Blau & Michaeli, 2018):

- ``radial_power_spectrum`` / ``band_power_ratio``: the image's power per spatial frequency
  (cycles/pixel, 0 to 0.5) and the output's power over the truth's in frequency bands. A blurred
  or regressed output reads < 1 in the highest band; a sampler that invents texture reads > 1.
- ``colourfulness_ratio``: Hasler–Süsstrunk colourfulness (:mod:`astrorestore.metrics.colour`)
  of the output over the truth's: < 1 is washed out.
- ``patch_sliced_wasserstein`` / ``chroma_sliced_wasserstein``: a distance between the
  distributions of small patches of output and truth (0 for the same distribution; about ``d``
  for a shift of every pixel by ``d``), on pixel values or on chroma.

Spectra: invalid pixels (NaN/inf, or ``valid`` False) are replaced by the mean of the valid ones
and the mean is removed, so neither a hole nor the sky level puts power at low frequencies; a 2-D
Hann window then stops the jump between opposite edges (the FFT's periodic wrap) from leaking
power into every frequency. Power is normalised by the window's energy, so white noise of
variance ``v`` reads ``v`` at every frequency whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from astrorestore.colour import check_colour_space, chroma
from astrorestore.errors import UserError
from astrorestore.metrics.arrays import as_batch, check_same_shape
from astrorestore.metrics.colour import colourfulness

#: Frequency bands in cycles/pixel: large scales, intermediate, and the finest octave (up to the
#: Nyquist frequency 0.5), where bicubic up-sampling and L1/L2 regression lose most power.
DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.125), (0.125, 0.25), (0.25, 0.5))
_MAX_RADIUS = 0.5 * math.sqrt(2.0)  # the corner of the 2-D frequency plane

ArrayLike = Tensor | np.ndarray


def _filled(images: Tensor, valid: ArrayLike | None) -> Tensor:
    """Invalid pixels -> mean of the valid ones of the same image and channel; mean removed."""
    good = torch.isfinite(images)
    if valid is not None:
        good = good & as_batch(valid, "valid").to(images.device).bool().expand_as(images)
    count = good.sum((-2, -1), keepdim=True).clamp_min(1)
    mean = torch.where(good, images, 0.0).sum((-2, -1), keepdim=True) / count
    return torch.where(good, images, mean) - mean


def _hann(h: int, w: int, like: Tensor) -> Tensor:
    # Symmetric window (periodic=False): zero on both edges, so the wrap-around is continuous.
    rows = torch.hann_window(h, periodic=False, dtype=like.dtype, device=like.device)
    cols = torch.hann_window(w, periodic=False, dtype=like.dtype, device=like.device)
    return rows[:, None] * cols[None, :]


def _power_and_radius(images: ArrayLike, valid: ArrayLike | None, window: bool):
    """2-D power spectrum (B, C, H, W) of the filled, windowed images and |f| (H, W)."""
    batch = as_batch(images)
    h, w = batch.shape[-2:]
    if min(h, w) < 4:
        raise UserError(f"image of {h}x{w} px is too small for a power spectrum: use >= 4 px")
    data = _filled(batch, valid)
    taper = _hann(h, w, data) if window else torch.ones(h, w, dtype=data.dtype, device=data.device)
    power = torch.fft.fft2(data * taper).abs().square() / taper.square().sum()
    fy = torch.fft.fftfreq(h, dtype=data.dtype, device=data.device)
    fx = torch.fft.fftfreq(w, dtype=data.dtype, device=data.device)
    return power, torch.hypot(fy[:, None], fx[None, :])


def radial_power_spectrum(
    images: ArrayLike,
    n_bins: int = 32,
    *,
    valid: ArrayLike | None = None,
    window: bool = True,
) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectrum (RAPS) of each image and channel.

    Args:
        images: (H, W), (C, H, W) or (B, C, H, W), torch or numpy.
        n_bins: equal-width rings between 0 and 0.5 cycles/pixel (the zero frequency is left out;
            the corners beyond 0.5, sampled only along the diagonals, too).
        valid: optional mask broadcastable to the images (True = use the pixel).
        window: apply the 2-D Hann window (see the module docstring).

    Returns:
        ``(frequency, power)``: ring centres (n_bins,) in cycles/pixel and the mean power in
        each ring (B, C, n_bins), NaN for a ring with no frequency cell (tiny images).
    """
    power, radius = _power_and_radius(images, valid, window)
    edges = torch.linspace(0.0, 0.5, n_bins + 1, dtype=power.dtype, device=power.device)
    # Ring index of every frequency cell; DC and the corners fall outside [0, n_bins).
    ring = torch.bucketize(radius, edges, right=False) - 1
    inside = (radius > 0) & (radius <= 0.5)
    index = torch.where(inside, ring, n_bins).flatten()
    flat = power.flatten(-2)
    sums = flat.new_zeros(*flat.shape[:-1], n_bins + 1).index_add_(-1, index, flat)
    counts = torch.bincount(index, minlength=n_bins + 1).to(flat.dtype)
    mean = sums[..., :n_bins] / counts[:n_bins]
    mean = torch.where(counts[:n_bins] > 0, mean, torch.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def _check_bands(bands: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    checked = []
    for band in bands:
        lo, hi = (float(v) for v in band)
        if not 0.0 <= lo < hi <= _MAX_RADIUS:
            raise UserError(
                f"frequency band {band!r} is invalid: use (low, high) cycles/pixel with "
                f"0 <= low < high <= {_MAX_RADIUS:.3f}"
            )
        checked.append((lo, hi))
    return checked


def band_power(
    images: ArrayLike,
    bands: Sequence[Sequence[float]] = DEFAULT_BANDS,
    *,
    valid: ArrayLike | None = None,
    window: bool = True,
) -> Tensor:
    """Mean power per frequency cell with ``low < |f| <= high`` cycles/pixel, over channels.

    Returns (B, n_bands). Averaging the 2-D cells (not the radial bins) weights each band by its
    area in the frequency plane, so the result does not depend on a binning.
    """
    power, radius = _power_and_radius(images, valid, window)
    power = power.mean(1)  # over channels: one number per image, as a grey-level measure
    values = []
    for lo, hi in _check_bands(bands):
        cells = (radius > lo) & (radius <= hi)
        if not cells.any():
            raise UserError(f"frequency band ({lo}, {hi}) holds no frequency of this image size")
        values.append(power[:, cells].mean(-1))
    return torch.stack(values, dim=-1)


def band_power_ratio(
    output: ArrayLike,
    truth: ArrayLike,
    bands: Sequence[Sequence[float]] = DEFAULT_BANDS,
    *,
    valid: ArrayLike | None = None,
    window: bool = True,
) -> Tensor:
    """Output power over truth power in each band, per image (B, n_bands): 1 = as much detail
    as the truth at those scales, < 1 smoother, > 1 more texture (or noise) than the truth."""
    out, ref = as_batch(output, "output"), as_batch(truth, "truth")
    check_same_shape(out, ref, "output and truth")
    ref_power = band_power(ref, bands, valid=valid, window=window)
    return band_power(out, bands, valid=valid, window=window) / ref_power.clamp_min(1e-30)


def colourfulness_ratio(output: ArrayLike, truth: ArrayLike) -> Tensor:
    """Colourfulness of the output over the truth's, per image (B,); RGB in [0, 1].

    NaN where the truth is grey (colourfulness 0): no ratio exists there.
    """
    out, ref = as_batch(output, "output"), as_batch(truth, "truth")
    check_same_shape(out, ref, "output and truth")
    if out.shape[1] != 3:
        raise UserError(f"colourfulness needs RGB images (3 channels), got {out.shape[1]}")
    reference = colourfulness(ref)
    ratio = colourfulness(out) / reference.clamp_min(1e-12)
    return torch.where(reference > 0, ratio, torch.nan)


def _patches(images: Tensor, size: int) -> Tensor:
    """Non-overlapping ``size`` x ``size`` patches of every image and all channels, as rows
    (N, C * size * size); patches holding an invalid pixel are dropped."""
    if size < 1 or size > min(images.shape[-2:]):
        raise UserError(
            f"patch_size={size} is invalid for {images.shape[-2]}x{images.shape[-1]} px images: "
            f"use an integer in [1, {min(images.shape[-2:])}]"
        )
    rows = F.unfold(images, size, stride=size).transpose(1, 2).flatten(0, 1)
    return rows[torch.isfinite(rows).all(dim=1)]


def _quantiles(sorted_values: Tensor, n: int) -> Tensor:
    """Values at quantile levels (i + 0.5) / n of columns sorted along dim 0 (linear interp.)."""
    m = sorted_values.shape[0]
    if m == n:
        return sorted_values
    position = (torch.arange(n, dtype=sorted_values.dtype) + 0.5) * m / n - 0.5
    position = position.clamp(0, m - 1).to(sorted_values.device)
    low = position.floor().long()
    high = (low + 1).clamp_max(m - 1)
    weight = (position - low.to(position.dtype))[:, None]
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _subsample(rows: Tensor, limit: int, generator: torch.Generator) -> Tensor:
    if rows.shape[0] <= limit:
        return rows
    keep = torch.randperm(rows.shape[0], generator=generator)[:limit]
    return rows[keep.to(rows.device)]


def patch_sliced_wasserstein(
    output: ArrayLike,
    truth: ArrayLike,
    *,
    patch_size: int = 4,
    n_projections: int = 128,
    seed: int = 0,
    max_patches: int = 65536,
) -> Tensor:
    """Sliced 2-Wasserstein distance between the patch distributions of output and truth.

    All non-overlapping ``patch_size`` patches of the whole batch form each distribution (the
    images need not be the same size or number). Patches are projected on ``n_projections``
    random unit directions, drawn from ``seed`` so two calls compare alike; each projected
    distribution is matched quantile by quantile, and the result is the root mean square over
    projections of the quantile differences, in the images' units. A shift of every pixel by
    ``d`` reads about ``d`` (a random unit direction's components sum to 1 in mean square).
    At most ``max_patches`` patches per side are kept (a seeded random subset).
    """
    out, ref = as_batch(output, "output"), as_batch(truth, "truth")
    if out.shape[1] != ref.shape[1]:
        raise UserError(f"output has {out.shape[1]} channels and truth {ref.shape[1]}")
    dtype = torch.promote_types(out.dtype, ref.dtype)
    # Directions and each side's subset come from their own seeded generators, so the truth's
    # patches and the directions are the same whichever output it is compared with.
    rows_out = _subsample(_patches(out.to(dtype), patch_size), max_patches, _generator(seed))
    rows_ref = _subsample(_patches(ref.to(dtype), patch_size), max_patches, _generator(seed))
    if rows_out.shape[0] == 0 or rows_ref.shape[0] == 0:
        return torch.tensor(float("nan"), dtype=dtype)
    directions = torch.randn(
        rows_out.shape[1], n_projections, generator=_generator(seed), dtype=dtype
    )
    directions = (directions / directions.norm(dim=0, keepdim=True)).to(rows_out.device)
    proj_out = (rows_out @ directions).sort(dim=0).values
    proj_ref = (rows_ref @ directions).sort(dim=0).values
    n = min(proj_out.shape[0], proj_ref.shape[0])
    gap = _quantiles(proj_out, n) - _quantiles(proj_ref, n)
    return gap.square().mean().sqrt()


def chroma_sliced_wasserstein(
    output: ArrayLike,
    truth: ArrayLike,
    *,
    space: str = "ycbcr",
    patch_size: int = 4,
    n_projections: int = 128,
    seed: int = 0,
    max_patches: int = 65536,
) -> Tensor:
    """:func:`patch_sliced_wasserstein` on the chroma of RGB images in [0, 1] (brightness left
    out): how far the output's colours and colour textures are from the truth's. In ``ycbcr``
    chroma units (Cb, Cr in [-0.5, 0.5]) or a*/b* / 100 for ``lab``."""
    check_colour_space(space, "space")
    out, ref = as_batch(output, "output"), as_batch(truth, "truth")
    for name, batch in (("output", out), ("truth", ref)):
        if batch.shape[1] != 3:
            raise UserError(
                f"chroma needs RGB images (3 channels), but {name} has {batch.shape[1]}"
            )
    return patch_sliced_wasserstein(
        chroma(out, space),
        chroma(ref, space),
        patch_size=patch_size,
        n_projections=n_projections,
        seed=seed,
        max_patches=max_patches,
    )
