"""Two-axis evaluation of a generative restoration (super-resolution, colorization).

A per-pixel error is minimised by the conditional mean, which a regression learns and a sampler
does not aim for; a sampler's detail can be real or invented. So a generative method is judged
on both axes of the perception–distortion trade-off (Blau & Michaeli, 2018), plus two checks
that need no opinion on what "looks real":

- ``distortion``: PSNR and SSIM against the truth (:mod:`astrorestore.metrics.image_quality`,
  data range = the truth's) and, for RGB, CIE76 and CIEDE2000 ΔE (:mod:`astrorestore.metrics.colour`);
- ``realism``: output/truth power per frequency band, the sliced Wasserstein distance of small
  patches and, for RGB, the colourfulness ratio and the chroma-patch distance
  (:mod:`astrorestore.metrics.realism`);
- ``consistency``: the output degraded again by the forward model that made the input, against
  the input, in units of the input's noise (:mod:`astrorestore.metrics.consistency`);
- ``calibration`` (with samples): coverage of the truth by the samples' mean ± 1σ / 2σ, with
  the coverage a calibrated sampler reaches with this many samples
  (:mod:`astrorestore.metrics.calibration`);
- ``lpips`` under ``distortion`` only when a model with real weights is given.

:func:`generative_axes` is the one procedure ``infer.py ... truth= report=``, the validation
callback (:class:`astrorestore.callbacks.astro_metrics.AstroMetrics`) and
``bench/bench_generative_axes.py`` call. Colour measures take RGB in [0, 1]: callers bring
photographs to that scale first (infer.py divides by the file's full scale).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from astrorestore.colour import luminance
from astrorestore.data.normalization.photo import full_scale
from astrorestore.errors import UserError
from astrorestore.metrics.arrays import as_batch, check_same_shape
from astrorestore.metrics.calibration import moments_calibration, sample_mean_std
from astrorestore.metrics.colour import delta_e76, delta_e2000
from astrorestore.metrics.consistency import ForwardModel, consistency_error
from astrorestore.metrics.image_quality import psnr_per_image, ssim_per_image
from astrorestore.metrics.realism import (
    DEFAULT_BANDS,
    band_power_ratio,
    chroma_sliced_wasserstein,
    colourfulness_ratio,
    patch_sliced_wasserstein,
)

AXES = ("distortion", "realism", "consistency", "calibration")
#: A noiseless input (a clean grey frame to colourise) has no noise to measure consistency in:
#: it is then measured in 1/255 of the truth's range (8-bit levels for a [0, 1] photograph).
NOISELESS_FRACTION = 1e-4


def band_name(low: float, high: float) -> str:
    return f"power_{low:g}-{high:g}"


def forward_model_of(pairing: Any) -> ForwardModel | None:
    """The forward model that made a pairing's inputs from its truth, without the noise: blur +
    area down-sampling for super-resolution (``degrade``), the colour space's luminance for
    colorization (``color_space``); None for a pairing of another kind (denoising)."""
    degrade = getattr(pairing, "degrade", None)
    if callable(degrade):
        return degrade
    space = getattr(pairing, "color_space", None)
    if space is not None:
        return functools.partial(luminance, space=space)
    return None


def _filled(output: Tensor, truth: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels not finite in either image set to the truth's finite mean in both (no error,
    no spectral jump there); returns both and the validity mask."""
    valid = torch.isfinite(output) & torch.isfinite(truth)
    if not bool(valid.any()):
        raise UserError("output and truth share no finite pixel: nothing to score")
    fill = truth[valid].mean()
    return torch.where(valid, output, fill), torch.where(valid, truth, fill), valid


def input_noise(observed: Tensor, truth: Tensor, forward: ForwardModel) -> tuple[float, str]:
    """The input's noise sigma, measured as rms(input - forward(truth)) over finite pixels,
    and where it came from; 1/255 of the truth's range for a noiseless input."""
    with torch.no_grad():
        predicted = forward(torch.nan_to_num(truth))
    residual = (observed - predicted.to(observed.dtype)).flatten()
    residual = residual[torch.isfinite(residual)]
    sigma = float(residual.square().mean().sqrt()) if residual.numel() else 0.0
    finite = truth[torch.isfinite(truth)]
    span = float(finite.max() - finite.min()) if finite.numel() else 0.0
    if sigma > NOISELESS_FRACTION * span:
        return sigma, "measured: rms(input - forward(truth))"
    return max(span, 1e-12) / 255.0, "noiseless input: 1/255 of the truth's range"


def _mean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def generative_axes(
    output: Tensor,
    truth: Tensor,
    observed: Tensor | None = None,
    forward: ForwardModel | None = None,
    *,
    samples: Tensor | None = None,
    sample_std: Tensor | None = None,
    n_samples: int | None = None,
    sigma: float | Tensor | None = None,
    bands: Sequence[Sequence[float]] = DEFAULT_BANDS,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    cheap: bool = False,
    seed: int = 0,
    window: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every axis of one restoration (batch means), as ``{axis: {measure: value}}``.

    Args:
        output: the restoration, (H, W), (C, H, W) or (B, C, H, W); with ``samples``, their mean.
        truth: the clean image of the output's shape.
        observed, forward: the input and the forward model that maps the output's shape to it
            (:func:`forward_model_of`); without them there is no ``consistency`` axis.
        samples: N >= 2 draws of the same restoration stacked on a first axis
            (``(N, *output.shape)``), for ``calibration``; or, when only their moments were
            kept, ``sample_std`` (the output's shape; ``output`` is then their mean) and
            ``n_samples``.
        sigma: the input's noise (scalar or map); None: measured from the truth
            (:func:`input_noise`).
        lpips: a ``(pred, truth) -> (B,)`` distance with real weights, or None (skipped).
        cheap: what validation logs each epoch: realism and consistency only (distortion is
            logged by the module; ΔE2000 runs on the CPU).
        seed: the sliced Wasserstein projections' seed (the same for every method compared).
        window: Hann-window the spectra (:func:`astrorestore.metrics.realism.band_power`).
    """
    out, ref = as_batch(output, "output"), as_batch(truth, "truth")
    check_same_shape(out, ref, "output and truth")
    truth_raw = ref.float()
    out, ref, valid = _filled(out.float(), ref.float())
    colour = out.shape[1] == 3
    result: dict[str, dict[str, Any]] = {}
    if not cheap:
        distortion = {
            "psnr": _mean(psnr_per_image(out, ref)),
            "ssim": _mean(ssim_per_image(out, ref)),
        }
        if colour:
            distortion["delta_e76"] = _mean(delta_e76(out, ref))
            distortion["delta_e2000"] = _mean(delta_e2000(out, ref))
        if lpips is not None:
            distortion["lpips"] = _mean(lpips(out, ref))
        result["distortion"] = distortion
    ratios = band_power_ratio(out, ref, bands, valid=valid, window=window).mean(0)
    realism = {band_name(*band): float(value) for band, value in zip(bands, ratios, strict=True)}
    realism["patch_swd"] = float(patch_sliced_wasserstein(out, ref, seed=seed))
    if colour:
        realism["colourfulness_ratio"] = _mean(colourfulness_ratio(out, ref))
        realism["chroma_swd"] = float(chroma_sliced_wasserstein(out, ref, seed=seed))
    result["realism"] = realism
    if observed is not None and forward is not None:
        result["consistency"] = _consistency(out, ref, as_batch(observed, "input"), forward, sigma)
    if samples is not None:
        draws = torch.as_tensor(samples).float()
        if tuple(draws.shape[1:]) != tuple(output.shape):
            raise UserError(
                f"samples of shape {tuple(draws.shape)} do not stack outputs of shape "
                f"{tuple(output.shape)}; pass (N, *output.shape)"
            )
        sample_std, n_samples = sample_mean_std(draws)[1], draws.shape[0]
    if sample_std is not None and not cheap:
        std = as_batch(sample_std, "sample_std")
        check_same_shape(std, out, "sample std and output")
        mean = as_batch(output, "output").float()  # unfilled: NaN pixels are left out
        result["calibration"] = moments_calibration(mean, std, int(n_samples or 0), truth_raw)
    return result


def _consistency(
    out: Tensor, ref: Tensor, observed: Tensor, forward: ForwardModel, sigma: Any
) -> dict[str, Any]:
    observed = observed.float()
    if sigma is None:
        sigma, source = input_noise(observed, ref, forward)
    else:
        source = "given"
    error = consistency_error(out, observed, forward, sigma)
    value = float(sigma) if not torch.is_tensor(sigma) or sigma.numel() == 1 else None
    return {"error_sigma": _mean(error), "input_sigma": value, "sigma_source": source}


def flat_measures(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"realism/power_0.25-0.5": ...}``: the numbers of :func:`generative_axes` under one
    level of keys (what validation logs as ``val/<key>`` and a report's table columns)."""
    return {
        f"{axis}/{name}": float(value)
        for axis, measures in result.items()
        for name, value in measures.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _as_batch_hwc(image: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) NumPy -> (1, C, H, W) float32 tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]


def score_frame(
    name: str,
    restored: np.ndarray,
    observed: np.ndarray,
    truth: np.ndarray,
    forward: ForwardModel | None = None,
    std: np.ndarray | None = None,
    n_samples: int = 1,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Any]:
    """:func:`generative_axes` of one frame of ``infer.py`` (``(H, W)`` or ``(H, W, 3)`` in the
    file's units): ``{"name", "full_scale", "axes"}``. A colour frame is divided by its full
    scale (1, 255 or 65535 from the truth's peak), as the colour measures take [0, 1]; the
    consistency axis is left out where the forward model does not give the input's shape
    (a colour input coloured anew). ``lpips``: see :func:`lpips_with_weights`."""
    out, ref, obs = (_as_batch_hwc(a) for a in (restored, truth, observed))
    spread = None if std is None else _as_batch_hwc(std)
    scale = 1.0
    if out.shape[1] == 3:
        scale = full_scale(float(np.nanmax(truth)))
        out, ref, obs = out / scale, ref / scale, obs / scale
        spread = None if spread is None else spread / scale
    note = None
    if forward is not None:
        with torch.no_grad():
            shape = tuple(forward(torch.zeros_like(ref)).shape)
        if shape != tuple(obs.shape):
            note = f"the forward model gives {shape}, the input is {tuple(obs.shape)}"
            forward = None
    axes = generative_axes(
        out,
        ref,
        obs,
        forward,
        sample_std=spread,
        n_samples=n_samples if spread is not None else None,
        lpips=lpips,
    )
    if note is not None or forward is None:
        axes["consistency"] = {"skipped": note or "no forward model in the checkpoint"}
    return {"name": name, "full_scale": scale, "axes": axes}


def lpips_with_weights() -> Callable[[Tensor, Tensor], Tensor] | None:
    """LPIPS (AlexNet) as a ``(pred, truth) -> (B,)`` distance where its real weights are
    installed; None otherwise (:func:`astrorestore.metrics.lpips_metric.build_lpips` says so
    once): no number from random weights is ever reported."""
    from astrorestore.metrics.lpips_metric import build_lpips, lpips_distance

    model = build_lpips()
    return None if model is None else functools.partial(lpips_distance, model)


def mean_measures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over frames of every measure of :func:`score_frame` rows (NaNs left out)."""
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in flat_measures(row["axes"]).items():
            columns.setdefault(key, []).append(value)
    return {
        key: _mean(torch.tensor(values, dtype=torch.float64)) for key, values in columns.items()
    }


#: How each axis reads, for the report's table.
_READING = {
    "distortion": "against the truth, pixel by pixel (PSNR/SSIM higher, ΔE lower is better)",
    "realism": "power_*: output/truth power per band (1 = the truth's detail, < 1 smoother, "
    "> 1 invented texture); colourfulness_ratio (1 = the truth's); *_swd: patch-distribution "
    "distance to the truth (0 = the same)",
    "consistency": "error_sigma: the output degraded again against the input, in units of the "
    "input's noise (~1 = consistent with its data; > 1 contradicts it)",
    "calibration": "coverage_*: fraction of truth pixels within k std of the mean of the "
    "samples; expected_*: what a calibrated sampler gives with this many samples",
}


def generative_markdown(rows: list[dict[str, Any]]) -> str:
    """summary.md's section of the two-axis rows: one table per axis, a row per frame and the
    mean."""
    means = mean_measures(rows)
    lines = ["", "## Generative outputs: distortion and realism axes", ""]
    for axis in AXES:
        keys = [k for k in means if k.startswith(f"{axis}/")]
        if not keys:
            continue
        names = [k.split("/", 1)[1] for k in keys]
        lines += [
            f"### {axis}",
            "",
            _READING[axis],
            "",
            "| image | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for row in [*rows, {"name": "mean", "axes": None}]:
            values = flat_measures(row["axes"]) if row["axes"] is not None else means
            cells = [f"{values[k]:.4g}" if k in values else "–" for k in keys]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
