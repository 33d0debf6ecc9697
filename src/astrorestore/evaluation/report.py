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
from astrorestore.evaluation.quality import quality_metrics
from astrorestore.evaluation.residual import residual_analysis

# Reference sources from a truth image are those above this many noisy-frame sigmas: low enough
# that a restoration reaching fainter than the noisy frame is credited, not called spurious.
REFERENCE_THRESHOLD = 1.0


def _plane(name: str, image: np.ndarray | None) -> np.ndarray | None:
    if image is None:
        return None
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise UserError(f"{name} has shape {array.shape}: evaluate one 2-D plane at a time")
    return array


def _check_shapes(restored, noisy, truth, err) -> None:
    for name, image in (("noisy input", noisy), ("truth", truth), ("err map", err)):
        if image is not None and image.shape != restored.shape:
            raise UserError(
                f"{name} shape {image.shape} differs from the restored output {restored.shape}: "
                "pass images of the same frame (same crop and binning)"
            )


def _reference(truth, catalog, fwhm, sigma, background, border) -> dict:
    """Reference source list: the catalog if given, else detections on the truth image."""
    if catalog is not None:
        xy = det.positions(catalog)
        flux = np.asarray(catalog["flux"], float)
        kind = np.asarray(catalog.get("kind", np.zeros(len(xy))), int)
    else:
        found = det.detect_sources(
            truth, fwhm=fwhm, threshold=REFERENCE_THRESHOLD, background=background, sigma=sigma
        )
        xy = det.positions(found)
        flux = phot.aperture_fluxes(truth, xy, 2 * fwhm, sky=background)
        kind = np.zeros(len(xy), int)
    h, w = truth.shape
    inside = (
        (xy[:, 0] >= border)
        & (xy[:, 0] <= w - 1 - border)
        & (xy[:, 1] >= border)
        & (xy[:, 1] <= h - 1 - border)
    )
    # Edge sources stay in the list (their detections are real, not spurious) but are not
    # counted for recall: the finder cannot centre its kernel on them.
    return {"xy": xy, "flux": flux, "kind": kind, "inside": inside}


def _bright_isolated(xy, flux, kind, fwhm, n) -> np.ndarray:
    """Indices of the ``n`` brightest stars with no other source within 4 FWHM."""
    if len(xy) == 0:
        return np.zeros(0, int)
    from scipy.spatial import cKDTree

    neighbours = cKDTree(xy).query_ball_point(xy, 4 * fwhm, return_length=True)
    candidates = np.nonzero((neighbours == 1) & (kind == 0) & (flux > 0))[0]
    return candidates[np.argsort(flux[candidates])[::-1][:n]]


def _nan_to_none(value):
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return float(value) if isinstance(value, np.floating) else value


def _median(values) -> float | None:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


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
) -> dict:
    """Evaluate one restored frame (electrons) against its noisy input and, if given, its truth.

    ``match_radius`` defaults to ``max(1.5, 0.8 * fwhm)`` pixels; ``threshold`` is in units of
    each image's background sigma. ``catalog`` (dict with ``x``, ``y``, ``flux``, optional
    ``kind``) replaces detections on the truth as the reference list. Magnitudes are
    ``zeropoint - 2.5 log10(flux in e-)``. Problems that do not stop the evaluation (NaNs in
    the truth, no sources) are listed in ``warnings``; malformed input raises UserError.
    """
    restored, noisy = _plane("restored", restored), _plane("noisy", noisy)
    truth, err = _plane("truth", truth), _plane("err", err)
    _check_shapes(restored, noisy, truth, err)
    if not np.isfinite(restored).any():
        raise UserError(f"{name}: the restored image has no finite pixels; check the restorer")
    radius = float(match_radius) if match_radius else max(1.5, 0.8 * fwhm)
    warnings: list[str] = []
    if truth is not None and not np.isfinite(truth).all():
        bad = ~np.isfinite(truth)
        warnings.append(
            f"truth has {int(bad.sum())} NaN/inf pixels ({100 * bad.mean():.2f} %): "
            "they are masked in every measurement"
        )
        restored, noisy = np.where(bad, np.nan, restored), np.where(bad, np.nan, noisy)
    bkg_noisy, sig_noisy = det.background_stats(noisy)
    bkg_rest, sig_rest = det.background_stats(restored)
    result: dict = {
        "name": name,
        "shape": list(restored.shape),
        "has_truth": truth is not None,
        "settings": {
            "gain": gain,
            "read_noise": read_noise,
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
        source_xy = _with_truth(
            restored,
            noisy,
            truth,
            catalog,
            fwhm,
            threshold,
            radius,
            thresholds,
            zeropoint,
            n_bright,
            sig_noisy,
            bkg_noisy,
            bkg_rest,
            result,
            tables,
            warnings,
        )
    residual = residual_analysis(
        noisy, restored, gain=gain, read_noise=read_noise, err=err, source_xy=source_xy, fwhm=fwhm
    )
    tables["power_spectrum"] = residual.pop("power_spectrum")
    tables["residual_map"] = (noisy - restored).astype(np.float32)
    sources = residual["sources"]
    for key in ("fraction", "significance"):
        sources.pop(key, None)
    warnings.extend(residual.pop("warnings"))
    result["residual"] = residual
    result["warnings"] = warnings
    result["tables"] = tables
    return result


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
        bright = _bright_isolated(
            xy, found_noisy["flux"][i_noisy], np.zeros(len(xy), int), fwhm, n_bright
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
            "median_flux_ratio": _median(flux_ratio),
            "median_fwhm_noisy": _median(table["fwhm_noisy"]),
            "median_fwhm_restored": _median(table["fwhm_restored"]),
        }
    tables["sources"] = table
    return xy_noisy


def _with_truth(
    restored,
    noisy,
    truth,
    catalog,
    fwhm,
    threshold,
    radius,
    thresholds,
    zeropoint,
    n_bright,
    sig_noisy,
    bkg_noisy,
    bkg_rest,
    result,
    tables,
    warnings,
) -> np.ndarray:
    """Simulations: everything against the truth. Fills ``result`` and ``tables``."""
    bkg_truth, _ = det.background_stats(truth)
    border = max(3, int(np.ceil(fwhm)))
    ref = _reference(truth, catalog, fwhm, sig_noisy, bkg_truth, border)
    xy = ref["xy"]
    mags = phot.magnitudes(ref["flux"], zeropoint)
    # DAOStarFinder is a star finder: with a catalog that marks galaxies, recall, completeness and
    # depth are measured on point sources, while a detection of a galaxy still counts as real.
    stars = ref["kind"] == 0
    use_kind = catalog is not None and "kind" in catalog and stars.any()
    counted = ref["inside"] & stars if use_kind else ref["inside"]
    result["quality"] = quality_metrics(restored, noisy, truth, fwhm=fwhm)
    images = {
        "noisy": (noisy, bkg_noisy, None),
        "restored": (restored, bkg_rest, None),
        "truth": (truth, bkg_truth, sig_noisy),
    }
    detection: dict = {
        "n_reference": len(xy),
        "reference": "catalog"
        if catalog
        else f"truth detections above {REFERENCE_THRESHOLD:g} noisy-frame sigma",
        "recall_on": ("point sources (kind 0)" if use_kind else "all reference sources")
        + f" at least {border} px from the edge",
    }
    sweeps: dict = {}
    for key, (image, background, sigma) in images.items():
        found = det.detect_sources(
            image, fwhm=fwhm, threshold=threshold, background=background, sigma=sigma
        )
        score = det.score_detections(xy, found, radius, counted)
        detection[key] = {k: v for k, v in score.items() if not isinstance(v, np.ndarray)}
        sweeps[key] = det.threshold_sweep(
            image,
            xy,
            fwhm=fwhm,
            radius=radius,
            thresholds=thresholds,
            background=background,
            sigma=sigma,
            counted=counted,
        )
        detection[key]["best_threshold"] = sweeps[key]["best_threshold"]
        detection[key]["best_f1"] = sweeps[key]["best_f1"]
        tables[f"matched_{key}"] = score["matched"]
    result["detection"] = detection
    if len(xy) == 0:
        warnings.append("no sources found in the truth: detection, photometry and depth are empty")
    elif detection["restored"]["n_detected"] == 0:
        warnings.append(f"no sources detected in the restored image at {threshold:g} sigma")

    # Depth: deepest 90 % completeness over thresholds with purity >= 90 %.
    depth = {}
    for key in ("noisy", "restored", "truth"):
        sweep = sweeps[key]
        found = phot.depth_at_purity(
            mags[counted],
            [m[counted] for m in sweep["matched"]],
            sweep["n_detected"],
            sweep["n_spurious"],
        )
        index = found["threshold_index"]
        depth[key] = {
            "magnitude": found["magnitude"],
            "threshold": None if index is None else sweep["thresholds"][index],
        }
    gain_mag = (
        None
        if depth["noisy"]["magnitude"] is None or depth["restored"]["magnitude"] is None
        else depth["restored"]["magnitude"] - depth["noisy"]["magnitude"]
    )
    result["depth"] = {
        **depth,
        "gain_mag": gain_mag,
        "definition": "faintest mag with 90% completeness at a threshold whose purity >= 90%",
    }
    tables["sweep"] = {
        key: {k: v for k, v in sweeps[key].items() if k != "matched"} for key in sweeps
    }
    tables["sweep_matched"] = {key: [m[counted] for m in sweeps[key]["matched"]] for key in sweeps}
    tables["reference_mag"] = mags[counted]

    # Photometry of matched sources, at the reference positions, aperture-to-aperture vs truth.
    aperture = 1.5 * fwhm
    true_flux = phot.aperture_fluxes(truth, xy, aperture, sky=bkg_truth)
    photometry = {"aperture_radius_px": aperture, "sky": "known (truth background)"}
    # Sources at S/N >= 20 in the noisy aperture are found by every method, so their bias is
    # free of the detection selection (Eddington) bias that differs between methods.
    area = np.pi * aperture**2
    snr = true_flux / np.sqrt(area * sig_noisy**2 + np.clip(true_flux, 0, None))
    secure = snr >= 20
    photometry["bright_definition"] = "S/N >= 20 in the noisy aperture"
    fluxes = {"truth": true_flux}
    for key, image in (("noisy", noisy), ("restored", restored)):
        fluxes[key] = phot.aperture_fluxes(image, xy, aperture, sky=bkg_truth)
        matched = tables[f"matched_{key}"]
        errors = phot.flux_errors(fluxes[key][matched], true_flux[matched])
        bright = phot.flux_errors(fluxes[key][secure], true_flux[secure])
        photometry[key] = {
            "n": errors["n"],
            "bias": errors["bias"],
            "scatter": errors["scatter"],
            "n_bright": bright["n"],
            "bias_bright": bright["bias"],
            "scatter_bright": bright["scatter"],
        }
    result["photometry"] = photometry

    # Star fidelity and astrometry.
    bright = _bright_isolated(xy, ref["flux"], ref["kind"], fwhm, n_bright)
    star = {"n_bright": len(bright)}
    offsets = {}
    if len(bright):
        fwhm_truth = psf.fwhm_of_stars(truth, xy[bright], fwhm=fwhm, background=bkg_truth)
        for key, image, background in (
            ("noisy", noisy, bkg_noisy),
            ("restored", restored, bkg_rest),
        ):
            peaks = psf.peak_ratio(image, truth, xy[bright], background=bkg_truth)
            widths = psf.fwhm_of_stars(image, xy[bright], fwhm=fwhm, background=background)
            star[key] = {
                "peak_ratio_median": peaks["median"],
                "peak_ratio_p5": peaks["p5"],
                "fwhm_ratio_median": _median(widths / fwhm_truth),
            }
        star["fwhm_truth_median"] = _median(fwhm_truth)
    result["psf"] = star
    astrometry = {}
    # Same centroid method on the truth, measured once, so its own bias cancels in the offsets.
    true_centroids = psf.centroids(truth, xy, fwhm=fwhm, background=bkg_truth)
    for key, image, background in (("noisy", noisy, bkg_noisy), ("restored", restored, bkg_rest)):
        here = psf.centroids(image, xy, fwhm=fwhm, background=background)
        offsets[key] = np.hypot(*(here - true_centroids).T) if len(xy) else np.zeros(0)
        matched = tables[f"matched_{key}"]
        astrometry[key] = {
            "median_offset_px": _median(offsets[key][matched]),
            "bright_median_offset_px": _median(offsets[key][bright]),
        }
    result["astrometry"] = astrometry
    tables["sources"] = {
        "x": xy[:, 0],
        "y": xy[:, 1],
        "kind": ref["kind"],
        "counted": counted,
        "mag": mags,
        "flux_truth": true_flux,
        "flux_noisy": fluxes["noisy"],
        "flux_restored": fluxes["restored"],
        "found_noisy": tables.pop("matched_noisy"),
        "found_restored": tables.pop("matched_restored"),
        "found_truth": tables.pop("matched_truth"),
        "offset_noisy": offsets["noisy"],
        "offset_restored": offsets["restored"],
    }
    return xy


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
