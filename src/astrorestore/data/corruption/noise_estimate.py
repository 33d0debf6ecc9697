"""A frame's noise model, read from the frame: header keys, ERR/VAR maps, or its own pixels.

Training, the bound, the evaluation and the noise-model self-supervised losses all need the
frame's gain and read noise. They come, in this order, from values the caller passes, from the
header, from ERR/VAR maps, and otherwise from a mean-variance fit on the frame's own pixels;
every value records where it came from so a report can say so. There is no default: a frame
whose noise cannot be told is a UserError.

Units. ``gain`` is electrons per frame unit (the header's GAIN/ATODGAIN/CCDGAIN, e-/DN, for a
frame in DN; 1 for a frame in electrons); ``read_noise`` is in frame units (headers give it in
electrons: RDNOISE/READNOIS/RDNOISE*/READNSE*, divided by the gain here). The variance of a
pixel of expected level ``m`` (frame units, above the zero of the Poisson counts) is
``m / gain + read_noise^2``.

The fit (Foi et al. 2008 in spirit): in boxes of ``box`` px, the level is the box median and the
noise is the robust (MAD) spread of a high-pass residual ``x - mean(4 neighbours)``, which removes
smooth structure and whose variance is 1.25 times the pixel variance for white noise; boxes with
texture (curvature beyond the noise in more than 3 % of their pixels) are left out. Boxes are
binned by level; the median variance per bin is fitted with a straight line weighted by the
expected scatter of a variance (proportional to its square). The fit's intercept is the
variance at level 0: read noise plus the Poisson noise of any sky that was subtracted, so on a
sky-subtracted frame ``read_noise`` is an effective figure, stated as such in ``describe()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from astrorestore.errors import UserError

GAIN_KEYS = ("GAIN", "ATODGAIN", "CCDGAIN", "EGAIN")
READ_NOISE_KEYS = ("RDNOISE", "READNOIS", "READNOISE", "RON")
#: Per-amplifier read noises (HST ACS/WFC3 READNSEA..D, IRAF RDNOISE1..4): their mean is used.
READ_NOISE_PREFIXES = ("RDNOISE", "READNSE")
_ELECTRON_UNITS = {"electron", "electrons", "e-", "e"}
_MAD_TO_SIGMA = 1.4826
#: Variance of ``x - mean(4 neighbours)`` over the pixel variance, for white noise.
_HIGHPASS_GAIN = 1.25


@dataclass(frozen=True)
class FrameNoise:
    """Gain, read noise and (optionally) a per-pixel sigma map, each with its source."""

    gain: float
    read_noise: float
    gain_source: str
    read_noise_source: str
    sigma_map_given: np.ndarray | None = None
    sigma_map_source: str | None = None
    #: relative 1-sigma uncertainty of the fitted gain (None when not fitted)
    gain_uncertainty: float | None = None

    @property
    def read_noise_electrons(self) -> float:
        return self.read_noise * self.gain

    def variance(self, level: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Per-pixel variance (frame units^2) at expected level ``level``, or the given map.

        Levels below zero add no Poisson variance (the read noise is the floor).
        """
        if self.sigma_map_given is not None:
            if tuple(level.shape[-2:]) != self.sigma_map_given.shape:
                raise UserError(
                    f"the noise map is {self.sigma_map_given.shape} but the image is "
                    f"{tuple(level.shape[-2:])}: pass the ERR/VAR map of this frame"
                )
            var = self.sigma_map_given.astype(np.float64) ** 2
            if isinstance(level, torch.Tensor):
                return torch.from_numpy(var).to(level.device, level.dtype).expand_as(level)
            return np.broadcast_to(var, level.shape).copy()
        if isinstance(level, torch.Tensor):
            return level.clamp_min(0) / self.gain + self.read_noise**2
        return np.maximum(np.asarray(level, np.float64), 0.0) / self.gain + self.read_noise**2

    def sigma(self, level: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Per-pixel 1-sigma noise at ``level`` (see :meth:`variance`)."""
        var = self.variance(level)
        return var.sqrt() if isinstance(var, torch.Tensor) else np.sqrt(var)

    def describe(self) -> str:
        """One line for reports: the values and where each came from."""
        if self.sigma_map_source and self.gain_source.startswith("not needed"):
            # The map is the whole model (its own units): no gain or read noise to state.
            return f"per-pixel sigma from {self.sigma_map_source} (in the frame's units)"
        gain = f"gain {self.gain:.4g} e-/unit ({self.gain_source}"
        if self.gain_uncertainty is not None:
            gain += f", +-{100 * self.gain_uncertainty:.0f} %"
        text = (
            f"{gain}), read noise {self.read_noise_electrons:.4g} e- = {self.read_noise:.4g} "
            f"units ({self.read_noise_source})"
        )
        if self.sigma_map_source:
            text += f", per-pixel sigma from {self.sigma_map_source}"
        return text


def _header_value(header: Mapping[str, Any] | None, keys: tuple[str, ...]) -> tuple[float, str]:
    if header is None:
        return math.nan, ""
    for key in keys:
        value = _positive(header.get(key))
        if value is not None:
            return value, key
    return math.nan, ""


def _header_read_noise(header: Mapping[str, Any] | None) -> tuple[float, str]:
    value, key = _header_value(header, READ_NOISE_KEYS)
    if key or header is None:
        return value, key
    amps = sorted(
        k
        for k in header.keys()
        if str(k).upper().startswith(READ_NOISE_PREFIXES) and _positive(header.get(k)) is not None
    )
    if not amps:
        return math.nan, ""
    return float(np.mean([_positive(header.get(k)) for k in amps])), "mean of " + "/".join(amps)


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _as_numpy(x: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _boxes(shape: tuple[int, ...], usable: np.ndarray, box: int):
    """Windows of whole ``box`` x ``box`` blocks with at least half their pixels usable."""
    for r in range(shape[0] // box):
        for c in range(shape[1] // box):
            window = (slice(r * box, (r + 1) * box), slice(c * box, (c + 1) * box))
            use = usable[window]
            if use.sum() >= box * box // 2:
                yield window, use


def _laplacian_noise_gain(smooth: float) -> float:
    """Std of the Laplacian of the ``smooth``-px Gaussian-smoothed white noise of unit sigma."""
    from scipy import ndimage

    impulse = np.zeros((8 * int(np.ceil(smooth)) + 9,) * 2)
    impulse[impulse.shape[0] // 2, impulse.shape[1] // 2] = 1.0
    return float(np.sqrt(np.sum(ndimage.laplace(ndimage.gaussian_filter(impulse, smooth)) ** 2)))


def box_levels_and_variances(
    frame: np.ndarray,
    valid: np.ndarray | None = None,
    box: int = 16,
    max_textured: float = 0.03,
    smooth: float = 1.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Per smooth box: the median level and the robust pixel variance of the high-pass residual.

    A box is textured, and left out, when more than ``max_textured`` of its pixels have a
    curvature (Laplacian of the ``smooth``-px smoothed frame) beyond 3 sigma of what the box's
    own noise gives: crowded stars and galaxy edges inflate the residual beyond the noise, and
    on real frames they sit at the bright levels that set the slope. Measured with
    ``bench/bench_real_frames.py``'s frames (injected Poisson + 3 e-, true gain 1): without the
    test the fit gives 0.59 (M13) and 0.66 (XDF); with ``max_textured`` 0.1 the XDF gives 0.71
    and 0.74 (r = 3, 5), with 0.03 it gives 0.91 +- 0.22 and 0.79 +- 0.17, and the crowded M13
    keeps too few smooth boxes, so the fit refuses (a UserError) instead of answering wrong.
    """
    from scipy import ndimage

    data = np.asarray(frame, np.float64)
    good = np.isfinite(data) if valid is None else (np.isfinite(data) & np.asarray(valid, bool))
    filled = np.where(good, data, 0.0)
    neighbours = (filled[:-2, 1:-1] + filled[2:, 1:-1] + filled[1:-1, :-2] + filled[1:-1, 2:]) / 4.0
    residual = filled[1:-1, 1:-1] - neighbours
    ok = good[1:-1, 1:-1] & good[:-2, 1:-1] & good[2:, 1:-1] & good[1:-1, :-2] & good[1:-1, 2:]
    inner = data[1:-1, 1:-1]
    curvature = ndimage.laplace(ndimage.gaussian_filter(filled, smooth))[1:-1, 1:-1]
    curvature_gain = _laplacian_noise_gain(smooth)
    levels, variances = [], []
    for window, use in _boxes(residual.shape, ok, box):
        res = residual[window][use]
        variance = (_MAD_TO_SIGMA * np.median(np.abs(res - np.median(res)))) ** 2 / _HIGHPASS_GAIN
        bend = curvature[window][use]
        textured = np.abs(bend - np.median(bend)) > 3.0 * curvature_gain * np.sqrt(variance)
        if textured.mean() > max_textured:
            continue
        levels.append(np.median(inner[window][use]))
        variances.append(variance)
    return np.asarray(levels), np.asarray(variances)


def fit_mean_variance(
    levels: np.ndarray, variances: np.ndarray, bins: int = 24, min_boxes: int = 40
) -> tuple[float, float, float]:
    """``(slope, intercept, slope_rel_error)`` of variance = slope * level + intercept.

    Boxes are binned by level (equal counts); the median variance of each bin is fitted with
    weights 1 / variance^2, then bins more than 4 robust sigma off the line (textured boxes:
    star cores, galaxy edges) are dropped and the line refitted. Raises ValueError with the
    reason when the boxes cannot constrain a slope.
    """
    finite = np.isfinite(levels) & np.isfinite(variances) & (variances > 0)
    levels, variances = levels[finite], variances[finite]
    if levels.size < min_boxes:
        raise ValueError(f"only {levels.size} usable boxes (need {min_boxes})")
    order = np.argsort(levels)
    groups = np.array_split(order, min(bins, levels.size // 10))
    x = np.array([np.median(levels[g]) for g in groups])
    y = np.array([np.median(variances[g]) for g in groups])

    def line(keep: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        w = 1.0 / np.maximum(y[keep], 1e-30) ** 2
        design = np.stack([x[keep], np.ones(keep.sum())], axis=1)
        normal = design.T @ (design * w[:, None])
        slope, intercept = np.linalg.solve(normal, design.T @ (w * y[keep]))
        return float(slope), float(intercept), w, normal

    keep = np.ones(x.size, bool)
    for _ in range(3):
        slope, intercept, w, normal = line(keep)
        scaled = (y - (slope * x + intercept)) / np.maximum(slope * x + intercept, 1e-30)
        spread = _MAD_TO_SIGMA * np.median(np.abs(scaled[keep])) + 1e-12
        new_keep = np.abs(scaled) < 4 * spread
        if new_keep.sum() < 4 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    else:
        # The last pass dropped bins: the line (and its weights) must be of the kept ones.
        slope, intercept, w, normal = line(keep)
    residuals = y[keep] - (slope * x[keep] + intercept)
    dof = max(int(keep.sum()) - 2, 1)
    scale = float(np.sum(w * residuals**2) / dof)
    cov = np.linalg.inv(normal) * scale
    slope_error = float(np.sqrt(max(cov[0, 0], 0.0)) / abs(slope)) if slope != 0 else math.inf
    spread = float(x[keep].max() - x[keep].min())
    if not slope > 0 or spread <= 0:
        raise ValueError(f"the variance does not grow with the level (slope {slope:.3g})")
    return float(slope), float(intercept), slope_error


def estimate_frame_noise(
    frame: np.ndarray | torch.Tensor,
    header: Mapping[str, Any] | None = None,
    *,
    err: np.ndarray | torch.Tensor | None = None,
    var: np.ndarray | torch.Tensor | None = None,
    valid: np.ndarray | None = None,
    gain: float | None = None,
    read_noise_electrons: float | None = None,
    box: int = 16,
    max_gain_error: float = 0.3,
) -> FrameNoise:
    """The frame's noise model; see the module docstring for the order of the sources.

    ``err``: a 1-sigma map, ``var``: a variance map (e.g. VAR_POISSON + VAR_RNOISE), both in
    frame units; either becomes the per-pixel sigma. ``gain`` (e-/unit) and
    ``read_noise_electrons`` override the header. A fitted gain whose relative error exceeds
    ``max_gain_error`` (a frame whose levels span too little) counts as a failed fit.
    """
    data = _as_numpy(frame)
    if data is None or data.ndim != 2:
        raise UserError(f"the noise model is read from one 2-D frame; got {np.shape(data)}")
    sigma_map, sigma_source = _noise_map(data.shape, err, var)
    gain_source = read_source = ""
    if gain is not None:
        gain_source = "given"
    elif header is not None and str(header.get("BUNIT", "")).strip().lower() in _ELECTRON_UNITS:
        gain, gain_source = 1.0, "BUNIT electrons"
    else:
        value, key = _header_value(header, GAIN_KEYS)
        if key:
            gain, gain_source = value, f"header {key} (e-/DN)"
    read_e = read_noise_electrons
    if read_e is not None:
        read_source = "given (e-)"
    else:
        value, key = _header_read_noise(header)
        if key:
            read_e, read_source = value, f"header {key} (e-)"

    fit_error: float | None = None
    if gain is None or read_e is None:
        # Fit on the pixels, or on the map itself when one is given (it has no noise of its own).
        if sigma_map is not None:
            levels, variances = box_levels_from_map(data, sigma_map**2, valid, box)
            how = f"mean-variance fit on the {sigma_source}"
        else:
            levels, variances = box_levels_and_variances(data, valid, box)
            how = "mean-variance fit on the frame's pixels"
        try:
            slope, intercept, fit_error = fit_mean_variance(levels, variances)
            if fit_error > max_gain_error:
                raise ValueError(
                    f"the fitted gain is uncertain by {100 * fit_error:.0f} % "
                    f"(levels span {np.ptp(levels):.3g} units)"
                )
        except ValueError as error:
            missing = " and ".join(
                name for name, value in (("gain", gain), ("read noise", read_e)) if value is None
            )
            raise UserError(
                f"cannot tell this frame's {missing}: no GAIN/ATODGAIN/CCDGAIN or "
                f"RDNOISE/READNOIS keys, and the mean-variance fit failed ({error}); pass "
                "gain=<e-/unit> and read_noise=<e-> (or an ERR/VAR map)"
            ) from None
        if gain is None:
            gain, gain_source = 1.0 / slope, how
        else:
            fit_error = None
        if read_e is None:
            # Keep the fitted line where the gain was fitted; with a known gain only the
            # intercept is taken from the fit (variance at level 0 = read^2 in frame units).
            read_e = math.sqrt(max(intercept, 0.0)) * gain
            read_source = how + " (effective: read noise + Poisson noise of any subtracted sky)"
    return FrameNoise(
        gain=float(gain),
        read_noise=float(read_e) / float(gain),
        gain_source=gain_source,
        read_noise_source=read_source,
        sigma_map_given=sigma_map,
        sigma_map_source=sigma_source,
        gain_uncertainty=fit_error,
    )


def _noise_map(
    shape: tuple[int, ...],
    err: np.ndarray | torch.Tensor | None,
    var: np.ndarray | torch.Tensor | None,
) -> tuple[np.ndarray | None, str | None]:
    for name, given in (("ERR map", err), ("VAR map", var)):
        array = _as_numpy(given)
        if array is None:
            continue
        if array.shape != shape:
            raise UserError(
                f"the {name} is {array.shape} but the frame is {shape}: pass the map of this "
                "frame (same HDU size)"
            )
        # Negative errors or variances are flags, not noise: they become NaN (not usable).
        usable = np.where(array >= 0, array, np.nan)
        return (np.sqrt(usable) if name == "VAR map" else usable), name
    return None, None


def box_levels_from_map(
    frame: np.ndarray, variance: np.ndarray, valid: np.ndarray | None, box: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per box: the frame's median level and the variance map's median (no noise to remove)."""
    good = np.isfinite(frame) & np.isfinite(variance)
    if valid is not None:
        good &= np.asarray(valid, bool)
    levels, variances = [], []
    for window, use in _boxes(frame.shape, good, box):
        levels.append(np.median(frame[window][use]))
        variances.append(np.median(variance[window][use]))
    return np.asarray(levels), np.asarray(variances)
