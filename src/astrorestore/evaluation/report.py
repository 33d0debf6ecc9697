"""One call evaluates a restored frame like an astronomer would: sources, fluxes, shapes, residual.

``evaluate_image`` returns a JSON-ready dict. With a truth image (simulations) it measures
everything against it: quality, detection (P/R/F1, threshold sweep), photometry, completeness and
depth, star fidelity, astrometry and the residual. Without truth (real frames) it reports what
can be known: empty-sky noise before and after, bright-source fluxes and FWHMs before and after,
and the residual against the noise model. Per-source and per-threshold tables ride along under
``tables`` for :func:`~astrorestore.evaluation.writer.write_report`. ``cheap_metrics`` is the
fast subset a training callback can afford.
"""

from __future__ import annotations

import numpy as np

from astrorestore.errors import UserError
from astrorestore.evaluation import detection as det
from astrorestore.evaluation import photometry as phot
from astrorestore.evaluation import psf
from astrorestore.evaluation.against_truth import (
    Backgrounds,
    TruthSettings,
    evaluate_against_truth,
)
from astrorestore.evaluation.residual import residual_analysis


def _plane(name: str, image: np.ndarray | None) -> np.ndarray | None:
    if image is None:
        return None
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise UserError(f"{name} has shape {array.shape}: evaluate one 2-D plane at a time")
    return array


def _check_shapes(restored, noisy, truth, err, sky_map=None) -> None:
    named = (("noisy input", noisy), ("truth", truth), ("err map", err), ("sky map", sky_map))
    for name, image in named:
        if image is not None and image.shape != restored.shape:
            raise UserError(
                f"{name} shape {image.shape} differs from the restored output {restored.shape}: "
                "pass images of the same frame (same crop and binning)"
            )


def evaluate_image(
    restored: np.ndarray,
    noisy: np.ndarray,
    truth: np.ndarray | None = None,
    *,
    gain: float = 1.0,
    read_noise: float = 5.0,
    err: np.ndarray | None = None,
    fwhm: float = 2.5,
    threshold: float = 5.0,
    match_radius: float | None = None,
    name: str = "image",
    catalog: dict | None = None,
    thresholds: tuple[float, ...] = det.DEFAULT_THRESHOLDS,
    zeropoint: float = 0.0,
    n_bright: int = 10,
    unit: str = "e-",
    noise_model: str | None = None,
    sky_map: np.ndarray | None = None,
) -> dict:
    """Evaluate one restored frame (electrons) against its noisy input and, if given, its truth.

    ``match_radius`` defaults to ``max(1.5, 0.8 * fwhm)`` pixels; ``threshold`` is in units of
    each image's background sigma. ``catalog`` (dict with ``x``, ``y``, ``flux``, optional
    ``kind``) replaces detections on the truth as the reference list. Magnitudes are
    ``zeropoint - 2.5 log10(flux in e-)``. Problems that do not stop the evaluation (NaNs in
    the truth, no sources) are listed in ``warnings``; malformed input raises UserError.
    ``unit`` labels the values (a FITS frame's BUNIT); for frames not in electrons the residual
    analysis says that its gain/read-noise model does not apply, unless an ERR map is given or
    ``noise_model`` says where ``gain`` and ``read_noise`` (then in the frame's units) came
    from (``FrameNoise.describe()``: the frame's header, its ERR map or its pixels); the report
    states it.
    ``sky_map``: the noisy frame's sky map, where the restorer normalised around one
    (``data.normalizer.background=map``): the empty sky is then the truth's pixels near it.
    """
    restored, noisy = _plane("restored", restored), _plane("noisy", noisy)
    truth, err = _plane("truth", truth), _plane("err", err)
    sky_map = _plane("sky map", sky_map)
    _check_shapes(restored, noisy, truth, err, sky_map)
    if not np.isfinite(restored).any():
        raise UserError(f"{name}: the restored image has no finite pixels; check the restorer")
    radius = float(match_radius) if match_radius else max(1.5, 0.8 * fwhm)
    warnings: list[str] = []
    if truth is not None:
        restored, noisy, truth, warnings = _mask_missing(restored, noisy, truth)
    bkg_noisy, sig_noisy = det.background_stats(noisy)
    bkg_rest, sig_rest = det.background_stats(restored)
    result: dict = {
        "name": name,
        "shape": list(restored.shape),
        "has_truth": truth is not None,
        "settings": {
            "unit": unit,
            "gain": gain,
            "read_noise": read_noise,
            "noise_model": noise_model or f"given: gain {gain:g}, read noise {read_noise:g}",
            "fwhm": fwhm,
            "threshold_sigma": threshold,
            "match_radius_px": radius,
            "zeropoint": zeropoint,
            "err_map": err is not None,
        },
        "background": {
            "noisy": {"level": bkg_noisy, "sigma": sig_noisy},
            "restored": {"level": bkg_rest, "sigma": sig_rest},
            "sky_noise_ratio": sig_rest / sig_noisy if sig_noisy > 0 else None,
        },
    }
    tables: dict = {}
    if truth is None:
        source_xy = _without_truth(
            restored, noisy, fwhm, threshold, radius, n_bright, result, tables, warnings
        )
    else:
        scored = evaluate_against_truth(
            restored,
            noisy,
            truth,
            catalog,
            TruthSettings(fwhm, threshold, radius, thresholds, zeropoint, n_bright),
            Backgrounds(bkg_noisy, bkg_rest, sig_noisy, sky_map),
        )
        result.update(scored.sections)
        tables.update(scored.tables)
        warnings.extend(scored.warnings)
        source_xy = scored.source_xy
    residual, residual_tables, residual_warnings = _residual(
        noisy, restored, gain, read_noise, err, source_xy, fwhm, unit, noise_model
    )
    tables.update(residual_tables)
    warnings.extend(residual_warnings)
    result["residual"] = residual
    result["warnings"] = warnings
    result["tables"] = tables
    return result


def _mask_missing(
    restored: np.ndarray, noisy: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A pixel missing from any of the three (the truth's holes, the input's bad pixels and
    chip gaps, which stay NaN in the output) is masked in all of them, so every figure compares
    the same pixels and none turns NaN. Returns the masked images and one warning per image
    that had missing pixels."""
    warnings = []
    bad = np.zeros(truth.shape, bool)
    for label, image in (("truth", truth), ("input", noisy), ("restored image", restored)):
        missing = ~np.isfinite(image)
        if missing.any():
            warnings.append(
                f"{label} has {int(missing.sum())} NaN/inf pixels "
                f"({100 * missing.mean():.2f} %): they are masked in every measurement"
            )
        bad |= missing
    if bad.any():
        truth = np.where(bad, np.nan, truth)
        restored, noisy = np.where(bad, np.nan, restored), np.where(bad, np.nan, noisy)
    return restored, noisy, truth, warnings


def _residual(
    noisy, restored, gain, read_noise, err, source_xy, fwhm, unit, noise_model=None
) -> tuple[dict, dict, list[str]]:
    """The residual analysis (input - output against the noise model): its report section, its
    tables (power spectrum, residual map) and its warnings."""
    residual = residual_analysis(
        noisy,
        restored,
        gain=gain,
        read_noise=read_noise,
        err=err,
        source_xy=source_xy,
        fwhm=fwhm,
        unit=unit,
        noise_source=noise_model,
    )
    tables = {
        "power_spectrum": residual.pop("power_spectrum"),
        "residual_map": (noisy - restored).astype(np.float32),
    }
    sources = residual["sources"]
    for key in ("fraction", "significance"):
        sources.pop(key, None)
    return residual, tables, residual.pop("warnings")


def _without_truth(
    restored, noisy, fwhm, threshold, radius, n_bright, result, tables, warnings
) -> np.ndarray:
    """Real frames: detections before/after and bright-source flux and FWHM before/after."""
    found_noisy = det.detect_sources(noisy, fwhm=fwhm, threshold=threshold)
    found_rest = det.detect_sources(restored, fwhm=fwhm, threshold=threshold)
    xy_noisy, xy_rest = det.positions(found_noisy), det.positions(found_rest)
    i_noisy, i_rest, _ = det.match_catalogs(xy_noisy, xy_rest, radius)
    result["detection"] = {
        "n_noisy": len(xy_noisy),
        "n_restored": len(xy_rest),
        "n_in_both": len(i_noisy),
    }
    if len(xy_noisy) == 0:
        warnings.append(f"no sources found in the noisy input at {threshold:g} sigma")
    table = {
        "x": [],
        "y": [],
        "flux_noisy": [],
        "flux_restored": [],
        "fwhm_noisy": [],
        "fwhm_restored": [],
    }
    if len(i_noisy):
        xy = xy_noisy[i_noisy]
        # Aperture 2 FWHM, sky annulus out to 3 apertures: all of it inside the frame.
        bright = psf.bright_isolated(
            xy,
            found_noisy["flux"][i_noisy],
            np.zeros(len(xy), int),
            fwhm,
            n_bright,
            shape=noisy.shape,
            margin=6 * fwhm,
        )
        xy = xy[bright]
        bkg_n, bkg_r = (
            result["background"]["noisy"]["level"],
            result["background"]["restored"]["level"],
        )
        table = {
            "x": xy[:, 0],
            "y": xy[:, 1],
            "flux_noisy": phot.aperture_fluxes(noisy, xy, 2 * fwhm),
            "flux_restored": phot.aperture_fluxes(restored, xy, 2 * fwhm),
            "fwhm_noisy": psf.fwhm_of_stars(noisy, xy, fwhm=fwhm, background=bkg_n),
            "fwhm_restored": psf.fwhm_of_stars(restored, xy, fwhm=fwhm, background=bkg_r),
        }
        flux_ratio = table["flux_restored"] / table["flux_noisy"]
        result["bright_sources"] = {
            "n": len(xy),
            "median_flux_ratio": phot.finite_median(flux_ratio),
            "median_fwhm_noisy": phot.finite_median(table["fwhm_noisy"]),
            "median_fwhm_restored": phot.finite_median(table["fwhm_restored"]),
        }
    tables["sources"] = table
    return xy_noisy


def cheap_metrics(
    restored: np.ndarray,
    truth: np.ndarray,
    noisy: np.ndarray,
    *,
    fwhm: float = 2.5,
    threshold: float = 5.0,
    n_bright: int = 5,
) -> dict[str, float | None]:
    """F1 of restored detections vs the truth's, median flux bias, bright-star peak ratio.

    Cheap enough for a validation callback: one detection pass per image, no fits, no sweep.
    Truth and restored are both thresholded at ``threshold`` times the *noisy* frame's sigma,
    i.e. at one level in electrons, so F1 asks "are the same sources above that level, and no
    others" and a perfect restoration scores 1. (``evaluate_image`` instead thresholds each
    image at its own sigma, to measure how deep each one can go.)
    """
    restored, truth, noisy = (
        _plane("restored", restored),
        _plane("truth", truth),
        _plane("noisy", noisy),
    )
    _check_shapes(restored, noisy, truth, None)
    _, sig_noisy = det.background_stats(noisy)
    bkg_truth, _ = det.background_stats(truth)
    reference = det.detect_sources(
        truth, fwhm=fwhm, threshold=threshold, background=bkg_truth, sigma=sig_noisy
    )
    xy = det.positions(reference)
    bkg_restored, _ = det.background_stats(restored)
    found = det.detect_sources(
        restored, fwhm=fwhm, threshold=threshold, background=bkg_restored, sigma=sig_noisy
    )
    score = det.score_detections(xy, found, max(1.5, 0.8 * fwhm))
    out: dict[str, float | None] = {"f1": score["f1"], "flux_bias": None, "peak_ratio": None}
    if len(xy) == 0:
        return out
    true_flux = phot.aperture_fluxes(truth, xy, 1.5 * fwhm, sky=bkg_truth)
    flux = phot.aperture_fluxes(restored, xy, 1.5 * fwhm, sky=bkg_truth)
    out["flux_bias"] = phot.flux_errors(flux, true_flux)["bias"]
    bright = np.argsort(true_flux)[::-1][:n_bright]
    out["peak_ratio"] = psf.peak_ratio(restored, truth, xy[bright], background=bkg_truth)["median"]
    return out


# The writer lives in its own module (files and plots); it is re-exported here so the report
# API is one import: evaluate_image, cheap_metrics, write_report.
from astrorestore.evaluation.writer import write_report  # noqa: E402

__all__ = ["cheap_metrics", "evaluate_image", "write_report"]
