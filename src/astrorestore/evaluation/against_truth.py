"""Evaluation against a truth image (simulations): the part of the report that needs the answer.

Reference sources are the catalog when one is given (with galaxies marked, recall is measured on
point sources since the detector is a star finder), else detections on the truth. Each image —
noisy, restored and the truth itself — is detected at its own background sigma (the truth at the
noisy frame's sigma, having none), swept over thresholds, matched, measured in apertures and
fitted; the results fill the ``result`` and ``tables`` dicts of ``evaluate_image``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from astrorestore.evaluation import detection as det
from astrorestore.evaluation import photometry as phot
from astrorestore.evaluation import psf
from astrorestore.metrics.image_quality import quality_metrics

# Reference sources from a truth image are those above this many noisy-frame sigmas: low enough
# that a restoration reaching fainter than the noisy frame is credited, not called spurious.
REFERENCE_THRESHOLD = 1.0


def reference_sources(
    truth: np.ndarray,
    catalog: dict | None,
    fwhm: float,
    sigma: float,
    background: float,
    border: int,
) -> dict:
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


def evaluate_against_truth(
    restored: np.ndarray,
    noisy: np.ndarray,
    truth: np.ndarray,
    catalog: dict | None,
    fwhm: float,
    threshold: float,
    radius: float,
    thresholds: Sequence[float],
    zeropoint: float,
    n_bright: int,
    sig_noisy: float,
    bkg_noisy: float,
    bkg_rest: float,
    result: dict,
    tables: dict,
    warnings: list[str],
) -> np.ndarray:
    """Simulations: everything against the truth. Fills ``result``, ``tables`` and ``warnings``
    and returns the reference positions (for the residual analysis)."""
    bkg_truth, _ = det.background_stats(truth)
    border = max(3, int(np.ceil(fwhm)))
    ref = reference_sources(truth, catalog, fwhm, sig_noisy, bkg_truth, border)
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
    edges = phot.magnitude_edges(mags)
    completeness: dict = {}
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
            "residual_vs_mag": phot.binned_median(
                mags[matched], _relative(fluxes[key], true_flux)[matched], edges
            ),
        }
        completeness[key] = phot.completeness_curve(mags[counted], matched[counted], edges)
    result["photometry"] = photometry
    result["completeness"] = completeness

    # Star fidelity and astrometry.
    # Away from the edges by the fit stamp's half-width, so every chosen star can be fitted.
    bright = psf.bright_isolated(
        xy, ref["flux"], ref["kind"], fwhm, n_bright, shape=truth.shape, margin=2.5 * fwhm
    )
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
                "fwhm_ratio_median": phot.finite_median(widths / fwhm_truth),
            }
        star["fwhm_truth_median"] = phot.finite_median(fwhm_truth)
    result["psf"] = star
    astrometry = {}
    # Same centroid method on the truth, measured once, so its own bias cancels in the offsets.
    true_centroids = psf.centroids(truth, xy, fwhm=fwhm, background=bkg_truth)
    for key, image, background in (("noisy", noisy, bkg_noisy), ("restored", restored, bkg_rest)):
        here = psf.centroids(image, xy, fwhm=fwhm, background=background)
        offsets[key] = np.hypot(*(here - true_centroids).T) if len(xy) else np.zeros(0)
        matched = tables[f"matched_{key}"]
        astrometry[key] = {
            "median_offset_px": phot.finite_median(offsets[key][matched]),
            "bright_median_offset_px": phot.finite_median(offsets[key][bright]),
            "offset_vs_mag": phot.binned_median(mags[matched], offsets[key][matched], edges),
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


def _relative(flux: np.ndarray, true_flux: np.ndarray) -> np.ndarray:
    """(flux - true) / true, NaN where the true flux is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(true_flux > 0, (flux - true_flux) / true_flux, np.nan)
