"""Evaluation against a truth image (simulations): the part of the report that needs the answer.

Reference sources are the catalog when one is given (with galaxies marked, recall is measured on
point sources since the detector is a star finder), else detections on the truth. Each image —
noisy, restored and the truth itself — is detected at its own background sigma (the truth at the
noisy frame's sigma, having none), swept over thresholds, matched, measured in apertures and
fitted. :func:`evaluate_against_truth` runs those stages in turn and returns the report sections
and tables that ``evaluate_image`` puts in its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class TruthSettings:
    """How a frame is scored against its truth (see ``evaluate_image``).

    fwhm: PSF FWHM (px); threshold: detection threshold (background sigmas); radius: match
    radius (px); thresholds: the detection sweep; zeropoint: of the magnitudes; n_bright: bright
    isolated stars for the PSF fidelity.
    """

    fwhm: float
    threshold: float
    radius: float
    thresholds: Sequence[float]
    zeropoint: float
    n_bright: int


@dataclass(frozen=True)
class Backgrounds:
    """Sky level of the noisy and the restored frame and the noisy frame's sky sigma."""

    noisy: float
    restored: float
    noisy_sigma: float
    #: the noisy frame's sky map where the restorer normalised around one (its empty sky is
    #: then measured around the map, not the median)
    noisy_map: np.ndarray | None = None


@dataclass
class TruthEvaluation:
    """What scoring against the truth gives: report sections (in report order), tables,
    warnings, and the reference positions (for the residual analysis)."""

    sections: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source_xy: np.ndarray | None = None


@dataclass(frozen=True)
class _Reference:
    """The reference sources and which of them count for recall, with their magnitudes."""

    sources: dict
    counted: np.ndarray
    mags: np.ndarray
    use_kind: bool
    border: int
    background: float


def evaluate_against_truth(
    restored: np.ndarray,
    noisy: np.ndarray,
    truth: np.ndarray,
    catalog: dict | None,
    settings: TruthSettings,
    backgrounds: Backgrounds,
) -> TruthEvaluation:
    """Simulations: everything against the truth, stage by stage (reference sources,
    quality, detection, depth, photometry, star fidelity, astrometry)."""
    out = TruthEvaluation()
    ref = _reference(truth, catalog, settings, backgrounds.noisy_sigma)
    xy = ref.sources["xy"]
    out.sections["quality"] = quality_metrics(
        restored, noisy, truth, fwhm=settings.fwhm, sky_map=backgrounds.noisy_map
    )
    images = {
        "noisy": (noisy, backgrounds.noisy, None),
        "restored": (restored, backgrounds.restored, None),
        "truth": (truth, ref.background, backgrounds.noisy_sigma),
    }
    detection, sweeps, matched = _detection(images, ref, catalog, settings)
    out.sections["detection"] = detection
    if len(xy) == 0:
        out.warnings.append(
            "no sources found in the truth: detection, photometry and depth are empty"
        )
    elif detection["restored"]["n_detected"] == 0:
        out.warnings.append(
            f"no sources detected in the restored image at {settings.threshold:g} sigma"
        )
    out.sections["depth"] = _depth(sweeps, ref)
    out.tables["sweep"] = {
        key: {k: v for k, v in sweeps[key].items() if k != "matched"} for key in sweeps
    }
    out.tables["sweep_matched"] = {
        key: [m[ref.counted] for m in sweeps[key]["matched"]] for key in sweeps
    }
    out.tables["reference_mag"] = ref.mags[ref.counted]
    photometry, completeness, fluxes = _photometry(
        {"noisy": noisy, "restored": restored}, truth, ref, matched, settings, backgrounds
    )
    out.sections["photometry"] = photometry
    out.sections["completeness"] = completeness
    bright = psf.bright_isolated(
        xy,
        ref.sources["flux"],
        ref.sources["kind"],
        settings.fwhm,
        settings.n_bright,
        shape=truth.shape,
        # Away from the edges by the fit stamp's half-width, so every chosen star can be fitted.
        margin=2.5 * settings.fwhm,
    )
    out.sections["psf"] = _star_fidelity(noisy, restored, truth, xy[bright], ref, settings,
                                         backgrounds)  # fmt: skip
    astrometry, offsets = _astrometry(noisy, restored, truth, ref, matched, bright, settings,
                                      backgrounds)  # fmt: skip
    out.sections["astrometry"] = astrometry
    out.tables["sources"] = {
        "x": xy[:, 0],
        "y": xy[:, 1],
        "kind": ref.sources["kind"],
        "counted": ref.counted,
        "mag": ref.mags,
        "flux_truth": fluxes["truth"],
        "flux_noisy": fluxes["noisy"],
        "flux_restored": fluxes["restored"],
        "found_noisy": matched["noisy"],
        "found_restored": matched["restored"],
        "found_truth": matched["truth"],
        "offset_noisy": offsets["noisy"],
        "offset_restored": offsets["restored"],
    }
    out.source_xy = xy
    return out


def _reference(
    truth: np.ndarray, catalog: dict | None, settings: TruthSettings, noisy_sigma: float
) -> _Reference:
    """The reference sources, their magnitudes, and those recall is counted on."""
    background, _ = det.background_stats(truth)
    border = max(3, int(np.ceil(settings.fwhm)))
    ref = reference_sources(truth, catalog, settings.fwhm, noisy_sigma, background, border)
    mags = phot.magnitudes(ref["flux"], settings.zeropoint)
    # DAOStarFinder is a star finder: with a catalog that marks galaxies, recall, completeness and
    # depth are measured on point sources, while a detection of a galaxy still counts as real.
    stars = ref["kind"] == 0
    use_kind = catalog is not None and "kind" in catalog and stars.any()
    counted = ref["inside"] & stars if use_kind else ref["inside"]
    return _Reference(ref, counted, mags, bool(use_kind), border, background)


def _detection(
    images: dict, ref: _Reference, catalog: dict | None, settings: TruthSettings
) -> tuple[dict, dict, dict]:
    """Detections of each image at its own threshold, scored against the reference, and the
    threshold sweep: (the report section, the sweeps, the matched flags per image)."""
    xy = ref.sources["xy"]
    detection: dict = {
        "n_reference": len(xy),
        "reference": "catalog"
        if catalog
        else f"truth detections above {REFERENCE_THRESHOLD:g} noisy-frame sigma",
        "recall_on": ("point sources (kind 0)" if ref.use_kind else "all reference sources")
        + f" at least {ref.border} px from the edge",
    }
    sweeps: dict = {}
    matched: dict = {}
    for key, (image, background, sigma) in images.items():
        found = det.detect_sources(
            image, fwhm=settings.fwhm, threshold=settings.threshold, background=background,
            sigma=sigma,
        )  # fmt: skip
        score = det.score_detections(xy, found, settings.radius, ref.counted)
        detection[key] = {k: v for k, v in score.items() if not isinstance(v, np.ndarray)}
        sweeps[key] = det.threshold_sweep(
            image,
            xy,
            fwhm=settings.fwhm,
            radius=settings.radius,
            thresholds=settings.thresholds,
            background=background,
            sigma=sigma,
            counted=ref.counted,
        )
        detection[key]["best_threshold"] = sweeps[key]["best_threshold"]
        detection[key]["best_f1"] = sweeps[key]["best_f1"]
        matched[key] = score["matched"]
    return detection, sweeps, matched


def _depth(sweeps: dict, ref: _Reference) -> dict:
    """Depth: deepest 90 % completeness over thresholds with purity >= 90 %."""
    counted = ref.counted
    depth = {}
    for key in ("noisy", "restored", "truth"):
        sweep = sweeps[key]
        found = phot.depth_at_purity(
            ref.mags[counted],
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
    return {
        **depth,
        "gain_mag": gain_mag,
        "definition": "faintest mag with 90% completeness at a threshold whose purity >= 90%",
    }


def _photometry(
    images: dict,
    truth: np.ndarray,
    ref: _Reference,
    matched: dict,
    settings: TruthSettings,
    backgrounds: Backgrounds,
) -> tuple[dict, dict, dict]:
    """Photometry of matched sources, at the reference positions, aperture-to-aperture vs
    truth: (the photometry section, the completeness curves, the aperture fluxes)."""
    xy, mags, counted = ref.sources["xy"], ref.mags, ref.counted
    aperture = 1.5 * settings.fwhm
    true_flux = phot.aperture_fluxes(truth, xy, aperture, sky=ref.background)
    photometry = {"aperture_radius_px": aperture, "sky": "known (truth background)"}
    # Sources at S/N >= 20 in the noisy aperture are found by every method, so their bias is
    # free of the detection selection (Eddington) bias that differs between methods.
    area = np.pi * aperture**2
    snr = true_flux / np.sqrt(area * backgrounds.noisy_sigma**2 + np.clip(true_flux, 0, None))
    secure = snr >= 20
    photometry["bright_definition"] = "S/N >= 20 in the noisy aperture"
    fluxes = {"truth": true_flux}
    edges = phot.magnitude_edges(mags)
    completeness: dict = {}
    for key, image in images.items():
        fluxes[key] = phot.aperture_fluxes(image, xy, aperture, sky=ref.background)
        found = matched[key]
        errors = phot.flux_errors(fluxes[key][found], true_flux[found])
        bright = phot.flux_errors(fluxes[key][secure], true_flux[secure])
        photometry[key] = {
            "n": errors["n"],
            "bias": errors["bias"],
            "scatter": errors["scatter"],
            "n_bright": bright["n"],
            "bias_bright": bright["bias"],
            "scatter_bright": bright["scatter"],
            "residual_vs_mag": phot.binned_median(
                mags[found], _relative(fluxes[key], true_flux)[found], edges
            ),
        }
        completeness[key] = phot.completeness_curve(mags[counted], found[counted], edges)
    return photometry, completeness, fluxes


def _star_fidelity(
    noisy: np.ndarray,
    restored: np.ndarray,
    truth: np.ndarray,
    bright_xy: np.ndarray,
    ref: _Reference,
    settings: TruthSettings,
    backgrounds: Backgrounds,
) -> dict:
    """Peak and FWHM ratios of the bright isolated stars, restored and noisy against truth."""
    fwhm = settings.fwhm
    star: dict = {"n_bright": len(bright_xy)}
    if not len(bright_xy):
        return star
    fwhm_truth = psf.fwhm_of_stars(truth, bright_xy, fwhm=fwhm, background=ref.background)
    for key, image, background in (
        ("noisy", noisy, backgrounds.noisy),
        ("restored", restored, backgrounds.restored),
    ):
        peaks = psf.peak_ratio(image, truth, bright_xy, background=ref.background)
        widths = psf.fwhm_of_stars(image, bright_xy, fwhm=fwhm, background=background)
        star[key] = {
            "peak_ratio_median": peaks["median"],
            "peak_ratio_p5": peaks["p5"],
            "fwhm_ratio_median": phot.finite_median(widths / fwhm_truth),
        }
    star["fwhm_truth_median"] = phot.finite_median(fwhm_truth)
    return star


def _astrometry(
    noisy: np.ndarray,
    restored: np.ndarray,
    truth: np.ndarray,
    ref: _Reference,
    matched: dict,
    bright: np.ndarray,
    settings: TruthSettings,
    backgrounds: Backgrounds,
) -> tuple[dict, dict]:
    """Centroid offsets from the truth's (the section, and the offsets per image)."""
    xy, fwhm = ref.sources["xy"], settings.fwhm
    edges = phot.magnitude_edges(ref.mags)
    # Same centroid method on the truth, measured once, so its own bias cancels in the offsets.
    true_centroids = psf.centroids(truth, xy, fwhm=fwhm, background=ref.background)
    astrometry, offsets = {}, {}
    for key, image, background in (
        ("noisy", noisy, backgrounds.noisy),
        ("restored", restored, backgrounds.restored),
    ):
        here = psf.centroids(image, xy, fwhm=fwhm, background=background)
        offsets[key] = np.hypot(*(here - true_centroids).T) if len(xy) else np.zeros(0)
        found = matched[key]
        astrometry[key] = {
            "median_offset_px": phot.finite_median(offsets[key][found]),
            "bright_median_offset_px": phot.finite_median(offsets[key][bright]),
            "offset_vs_mag": phot.binned_median(ref.mags[found], offsets[key][found], edges),
        }
    return astrometry, offsets


def _relative(flux: np.ndarray, true_flux: np.ndarray) -> np.ndarray:
    """(flux - true) / true, NaN where the true flux is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(true_flux > 0, (flux - true_flux) / true_flux, np.nan)
