"""What can be known without truth: the residual ``input - output`` should be pure noise.

A restoration that only removes noise leaves a residual with zero mean, the variance the noise
model predicts (``sigma^2 = x / gain + read_noise^2``, or an ERR map), a flat power spectrum, and
nothing at the sources. Flux removed at stars, low-frequency power or a residual that is much
smaller than the noise (noise kept) are reported as warnings, each with its number.
"""

from __future__ import annotations

import numpy as np

from astrorestore.data.sources.fits_frames import is_electrons
from astrorestore.evaluation.photometry import aperture_fluxes

# Thresholds for warnings; each warning states the measured value, so these only decide when to
# speak up, not what is reported.
_SOURCE_SIGMA = 5.0
_SOURCE_FRACTION = 0.02
_LOW_FREQUENCY_EXCESS = 1.5
_VARIANCE_BAND = (0.5, 1.3)
# The residual is stacked on sources with an input aperture S/N above this, when at least
# _STACK_MIN of them are away from the edges; chi2/dof beyond 1 + _STACK_SIGMA * sqrt(2 / dof)
# is reported.
_STACK_SNR = 20.0
_STACK_MIN = 8
_STACK_SIGMA = 5.0


def noise_sigma(
    image: np.ndarray, *, gain: float, read_noise: float, err: np.ndarray | None = None
) -> np.ndarray:
    """Per-pixel noise sigma (electrons): the ERR map if given, else the Poisson-Gaussian model."""
    if err is not None:
        return np.asarray(err, float)
    return np.sqrt(np.clip(image, 0.0, None) / gain + read_noise**2)


def radial_power_spectrum(residual: np.ndarray, n_bins: int = 24) -> dict[str, list]:
    """Azimuthally averaged power spectrum, normalised so white noise of variance v reads v.

    Frequencies are in cycles per pixel (0 to 0.5); the zero frequency (the mean) is left out.
    """
    data = np.where(np.isfinite(residual), residual, 0.0)
    data = data - data.mean()
    power = np.abs(np.fft.fft2(data)) ** 2 / data.size
    fy = np.fft.fftfreq(data.shape[0])[:, None]
    fx = np.fft.fftfreq(data.shape[1])[None, :]
    radius = np.hypot(fy, fx)
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    freq, mean_power = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        ring = (radius > lo) & (radius <= hi)
        if ring.any():
            freq.append(float(0.5 * (lo + hi)))
            mean_power.append(float(power[ring].mean()))
    return {"frequency": freq, "power": mean_power}


def residual_analysis(
    noisy: np.ndarray,
    restored: np.ndarray,
    *,
    gain: float = 1.0,
    read_noise: float = 5.0,
    err: np.ndarray | None = None,
    source_xy: np.ndarray | None = None,
    fwhm: float = 2.5,
    unit: str = "e-",
    noise_source: str | None = None,
) -> dict:
    """Statistics of ``noisy - restored`` against the noise model, and warnings (values in
    ``unit``). ``noise_source`` says where ``gain``/``read_noise`` came from (the frame's
    header, ERR map or pixels: then they are in the frame's units, whatever ``unit`` is).

    Returns ``mean`` (electrons) and ``mean_in_sigma`` (mean / its standard error), the
    ``variance_ratio`` robust variance of residual / sigma (1 = removed exactly the
    noise, < 1 = noise kept), the radial ``power_spectrum`` of residual / sigma and its
    ``low_high_power_ratio`` (1 for white noise), per-source residual flux relative to the
    input's source flux (median, how many are beyond 5 sigma), and ``warnings``.
    """
    residual = np.asarray(noisy, float) - np.asarray(restored, float)
    # The restored image is the better estimate of the signal that sets the Poisson variance.
    sigma = noise_sigma(np.asarray(restored, float), gain=gain, read_noise=read_noise, err=err)
    finite = np.isfinite(residual) & np.isfinite(sigma) & (sigma > 0)
    warnings: list[str] = []
    mean = float(residual[finite].mean())
    standard_error = float(residual[finite].std() / np.sqrt(finite.sum()))
    # Robust (MAD) variance of residual / sigma: a few bright-star residuals must not pass for
    # noise, they are judged separately at the sources below.
    normalised = residual[finite] / sigma[finite]
    variance_ratio = float((1.4826 * np.median(np.abs(normalised - np.median(normalised)))) ** 2)
    spectrum = radial_power_spectrum(np.where(finite, residual / np.where(finite, sigma, 1), 0))
    power = np.array(spectrum["power"])
    freq = np.array(spectrum["frequency"])
    low, high = power[freq < 0.1], power[freq > 0.3]
    low_high = (
        float(low.mean() / high.mean()) if len(low) and len(high) and high.mean() > 0 else None
    )
    result = {
        "mean": mean,
        "mean_in_sigma": mean / standard_error if standard_error > 0 else 0.0,
        "std": float(residual[finite].std()),
        "variance_ratio": variance_ratio,
        "noise_reference": "ERR map"
        if err is not None
        else f"x/gain + read^2 (gain={gain:.4g}, read={read_noise:.4g}"
        + (f"; {noise_source})" if noise_source else ")"),
        "power_spectrum": spectrum,
        "low_high_power_ratio": low_high,
    }
    lo, hi = _VARIANCE_BAND
    if err is None and noise_source is None and not is_electrons(unit):
        # A gain/read-noise model in electrons says nothing about a frame in other units: say
        # so once instead of judging the residual's variance by it.
        warnings.append(
            f"the frame is in {unit}, not electrons: the residual's noise model "
            "(x/gain + read^2) is only right with eval.gain and eval.read_noise in these units "
            "(or convert the frame to electrons); flux ratios and sigma ratios do not depend on it"
        )
    elif not lo <= variance_ratio <= hi:
        what = (
            "noise left in the output" if variance_ratio < lo else "signal removed with the noise"
        )
        warnings.append(
            f"residual variance is {variance_ratio:.2f} x the noise model (expected ~1): {what}"
        )
    if abs(result["mean_in_sigma"]) > 5:
        warnings.append(
            f"residual mean {mean:.3g} {unit} is {result['mean_in_sigma']:.1f} sigma from 0"
        )
    if low_high is not None and low_high > _LOW_FREQUENCY_EXCESS:
        warnings.append(
            f"residual power at low frequencies is {low_high:.2f} x that at high ones: "
            "structure (not white noise) was removed"
        )
    result.update(_source_residuals(noisy, restored, residual, sigma, source_xy, fwhm, warnings))
    result["warnings"] = warnings
    return result


def _source_residuals(noisy, restored, residual, sigma, source_xy, fwhm, warnings) -> dict:
    """Residual aperture flux at sources, relative to the input's source flux and to its noise."""
    if source_xy is None or len(source_xy) == 0:
        return {"sources": {"n": 0}}
    radius = 1.5 * fwhm
    # Relative to the input's flux: a source the restoration erased reads 100 %, where dividing
    # by the (near-zero) restored flux would give an unbounded number.
    background = float(np.nanmedian(noisy))
    flux = aperture_fluxes(noisy, source_xy, radius, sky=background)
    removed = aperture_fluxes(residual, source_xy, radius, sky=0.0)
    noise = np.sqrt(aperture_fluxes(sigma**2, source_xy, radius, sky=0.0))
    ok = np.isfinite(flux) & np.isfinite(removed) & (flux > 0) & (noise > 0)
    if not ok.any():
        return {"sources": {"n": 0}}
    fraction = removed[ok] / flux[ok]
    significance = removed[ok] / noise[ok]
    # Only bright sources can show a few-per-cent residual above the noise; judge those.
    strong = np.abs(significance) > _SOURCE_SIGMA
    flagged = strong & (np.abs(fraction) > _SOURCE_FRACTION)
    summary = {
        "n": int(ok.sum()),
        "median_fraction": float(np.median(fraction)),
        "n_beyond_5sigma": int(strong.sum()),
        "n_flagged": int(flagged.sum()),
        "fraction": fraction,
        "significance": significance,
    }
    if flagged.any():
        warnings.append(
            f"structure at sources: {int(flagged.sum())} of {int(ok.sum())} sources have a residual "
            f"beyond {_SOURCE_SIGMA:g} sigma and {100 * _SOURCE_FRACTION:g} % of their flux "
            f"(median {100 * float(np.median(fraction[flagged])):+.1f} %)"
        )
    bright = np.asarray(source_xy, float)[ok][flux[ok] > _STACK_SNR * noise[ok]]
    summary["shape"] = stacked_residual(residual / sigma, bright, fwhm, warnings)
    return {"sources": summary}


def stacked_residual(
    normalised: np.ndarray, source_xy: np.ndarray, fwhm: float, warnings: list[str]
) -> dict:
    """The residual in noise units stacked on bright sources: has a source been reshaped?

    A restoration can keep every flux and still move light from a core into its wings (or fill
    an Airy ring); no pixel of one star shows it above the noise, but the mean over many stars
    does. Stamps of radius ``max(2, 1.5 FWHM)`` px around each source's nearest pixel are
    averaged; ``chi2_dof`` is the mean of ``(mean / standard error)^2`` over the stamp, with the
    standard error from the spread between stars (so a wrong noise model cannot fake it): ~1 when
    the residual at the sources is noise.
    """
    radius = max(2, int(np.ceil(1.5 * fwhm)))
    h, w = normalised.shape
    stamps = []
    for x, y in np.asarray(source_xy, float).reshape(-1, 2):
        col, row = int(round(x)), int(round(y))
        if radius <= row < h - radius and radius <= col < w - radius:
            stamp = normalised[row - radius : row + radius + 1, col - radius : col + radius + 1]
            if np.isfinite(stamp).all():
                stamps.append(stamp)
    if len(stamps) < _STACK_MIN:
        return {"n": len(stamps)}
    stack = np.stack(stamps)
    mean = stack.mean(axis=0)
    standard_error = stack.std(axis=0, ddof=1) / np.sqrt(len(stamps))
    chi2 = (mean / np.where(standard_error > 0, standard_error, np.inf)) ** 2
    dof = chi2.size
    chi2_dof = float(chi2.mean())
    worst = np.unravel_index(int(np.argmax(np.abs(mean))), mean.shape)
    result = {
        "n": len(stamps),
        "radius": radius,
        "chi2_dof": chi2_dof,
        "largest_mean_sigma": float(mean[worst]),
        "largest_at": [int(worst[1] - radius), int(worst[0] - radius)],
    }
    if chi2_dof > 1.0 + _STACK_SIGMA * np.sqrt(2.0 / dof):
        warnings.append(
            f"sources reshaped: the residual stacked on {len(stamps)} bright sources is not noise "
            f"(chi2/dof {chi2_dof:.1f} over {dof} pixels; mean {result['largest_mean_sigma']:+.2f} "
            f"sigma at dx, dy = {result['largest_at'][0]}, {result['largest_at'][1]} px); for star "
            "fields, infer.py postprocess=psf_cores refits the cores with the frame's own PSF"
        )
    return result
