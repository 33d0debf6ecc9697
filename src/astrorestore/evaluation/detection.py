"""Source detection and catalog matching: does a restoration find the same sources, and no others?

Detection uses photutils' DAOStarFinder with the threshold given in units of the image's own
background sigma (sigma-clipped, unless the caller knows it), so a restored frame with less noise
is allowed to reach fainter sources — and is charged for whatever spurious peaks its correlated
residual noise produces. Matching is one-to-one and closest-pairs-first, so two detections near
one true source count as one match and one spurious detection, never as two matches.

Comparing two images at one fixed threshold is unfair to whichever has less noise: a cleaner
frame could go deeper at the same cost in false detections. So completeness is also compared at
a matched false-positive budget (:func:`detections_at_spurious_budget`): each image is pushed to
the lowest threshold at which it still makes no more spurious detections than the reference
image (usually the noisy input) makes at its usual threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from astropy.stats import sigma_clipped_stats
from photutils.detection import DAOStarFinder
from photutils.utils.exceptions import NoDetectionsWarning
from scipy.spatial import cKDTree

from astrorestore.errors import UserError

DEFAULT_THRESHOLDS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)
# Fine grid for a matched false-positive budget: a restored frame with a fraction of the input's
# noise may legitimately go below 1 sigma of the INPUT's noise.
BUDGET_THRESHOLDS = tuple(float(t) for t in np.arange(0.5, 10.01, 0.25))


def background_stats(
    image: np.ndarray, mask: np.ndarray | None = None, sigma: float = 3.0
) -> tuple[float, float]:
    """``(background, sigma)`` of an image from sigma-clipped statistics (NaNs ignored)."""
    finite = np.isfinite(image)
    if mask is not None:
        finite &= ~mask
    if not finite.any():
        raise UserError("image has no finite pixels: check the input file (all NaN or masked)")
    _, median, std = sigma_clipped_stats(image[finite], sigma=sigma, maxiters=10)
    return float(median), float(std)


def detect_sources(
    image: np.ndarray,
    *,
    fwhm: float,
    threshold: float = 5.0,
    background: float | None = None,
    sigma: float | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """DAOStarFinder detections above ``threshold * sigma`` over ``background``.

    Returns a dict of arrays ``x``, ``y`` (centroids, pixels), ``peak`` (background-subtracted
    peak, electrons) and ``flux`` (DAOStarFinder's flux); empty arrays when nothing is found.
    ``sigma`` and ``background`` default to the image's sigma-clipped statistics.
    """
    if fwhm <= 0:
        raise UserError(f"fwhm={fwhm!r} is invalid: use the PSF FWHM in pixels (> 0)")
    if background is None or sigma is None:
        bkg, std = background_stats(image, mask)
        background = bkg if background is None else background
        sigma = std if sigma is None else sigma
    # A noiseless frame has sigma ~ 0: floor it so the threshold stays a positive number.
    sigma = max(float(sigma), 1e-6 * max(abs(float(background)), 1.0))
    data = np.where(np.isfinite(image), image - background, 0.0)
    finder = DAOStarFinder(threshold=threshold * sigma, fwhm=fwhm, exclude_border=True)
    with warnings.catch_warnings():
        # An empty result is reported by the caller (a warning in the report), not on stderr.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder(data, mask=mask)
    if found is None or len(found) == 0:
        empty = np.zeros(0)
        return {"x": empty, "y": empty, "peak": empty, "flux": empty}
    return {
        "x": np.asarray(found["x_centroid"], dtype=float),
        "y": np.asarray(found["y_centroid"], dtype=float),
        "peak": np.asarray(found["peak"], dtype=float),
        "flux": np.asarray(found["flux"], dtype=float),
    }


def positions(catalog: dict) -> np.ndarray:
    """``(N, 2)`` array of (x, y) from a catalog dict with ``x`` and ``y``."""
    return np.column_stack([np.asarray(catalog["x"], float), np.asarray(catalog["y"], float)])


def match_catalogs(
    reference: np.ndarray, detected: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one match of two ``(N, 2)`` position lists within ``radius`` pixels.

    Pairs are taken closest first, each source used at most once. Returns
    ``(reference_index, detected_index, distance)`` of the matched pairs.
    """
    reference = np.asarray(reference, float).reshape(-1, 2)
    detected = np.asarray(detected, float).reshape(-1, 2)
    none = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(reference) == 0 or len(detected) == 0:
        return none
    pairs = cKDTree(reference).sparse_distance_matrix(
        cKDTree(detected), radius, output_type="ndarray"
    )
    if len(pairs) == 0:
        return none
    pairs = pairs[np.argsort(pairs["v"], kind="stable")]
    used_ref = np.zeros(len(reference), bool)
    used_det = np.zeros(len(detected), bool)
    ref_index, det_index, distance = [], [], []
    for i, j, d in zip(pairs["i"], pairs["j"], pairs["v"], strict=True):
        if used_ref[i] or used_det[j]:
            continue
        used_ref[i] = used_det[j] = True
        ref_index.append(i)
        det_index.append(j)
        distance.append(d)
    return np.array(ref_index, int), np.array(det_index, int), np.array(distance, float)


def precision_recall(n_matched: int, n_detected: int, n_reference: int) -> dict[str, float]:
    """Precision (purity), recall (completeness) and F1; 0 (not NaN) when a count is zero."""
    precision = n_matched / n_detected if n_detected else 0.0
    recall = n_matched / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def score_detections(
    reference: np.ndarray,
    detections: dict[str, np.ndarray],
    radius: float,
    counted: np.ndarray | None = None,
) -> dict:
    """Match detections to a reference list; counts, P/R/F1, and which reference is found.

    A detection matching any reference source is a true detection (precision). ``counted``
    (boolean over the reference, default all) selects the sources recall is measured on — e.g.
    point sources only, when the detector is a star finder and galaxies are in the reference.
    """
    counted = np.ones(len(reference), bool) if counted is None else np.asarray(counted, bool)
    found = positions(detections)
    ref_index, det_index, distance = match_catalogs(reference, found, radius)
    matched = np.zeros(len(reference), bool)
    matched[ref_index] = True
    n_matched, n_detected = len(ref_index), len(found)
    n_recovered, n_counted = int((matched & counted).sum()), int(counted.sum())
    precision = n_matched / n_detected if n_detected else 0.0
    recall = n_recovered / n_counted if n_counted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_reference": len(reference),
        "n_counted": n_counted,
        "n_detected": n_detected,
        "n_matched": n_matched,
        "n_recovered": n_recovered,
        "n_spurious": n_detected - n_matched,
        "spurious_rate": (n_detected - n_matched) / n_detected if n_detected else 0.0,
        "matched": matched,
        "reference_index": ref_index,
        "detected_index": det_index,
        "distance": distance,
    }


def threshold_sweep(
    image: np.ndarray,
    reference: np.ndarray,
    *,
    fwhm: float,
    radius: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    background: float | None = None,
    sigma: float | None = None,
    counted: np.ndarray | None = None,
) -> dict:
    """Detect and score at each threshold (in sigma); report the threshold with the best F1.

    Returns lists ``thresholds``, ``precision``, ``recall``, ``f1``, ``n_detected``,
    ``n_spurious``, ``n_recovered``, ``matched`` (one boolean array over the reference per threshold), and
    ``best_threshold`` / ``best_f1``.
    """
    if background is None or sigma is None:
        bkg, std = background_stats(image)
        background = bkg if background is None else background
        sigma = std if sigma is None else sigma
    rows: dict[str, list] = {
        k: []
        for k in ("precision", "recall", "f1", "n_detected", "n_spurious", "n_recovered", "matched")
    }
    for threshold in thresholds:
        found = detect_sources(
            image, fwhm=fwhm, threshold=threshold, background=background, sigma=sigma
        )
        score = score_detections(reference, found, radius, counted)
        for key in rows:
            rows[key].append(score[key])
    best = int(np.argmax(rows["f1"])) if len(thresholds) else 0
    return {
        "thresholds": [float(t) for t in thresholds],
        **rows,
        "best_threshold": float(thresholds[best]) if len(thresholds) else float("nan"),
        "best_f1": float(rows["f1"][best]) if len(thresholds) else 0.0,
    }


def detections_at_spurious_budget(
    image: np.ndarray,
    reference: np.ndarray,
    *,
    max_spurious: int,
    fwhm: float,
    radius: float,
    thresholds: Sequence[float] = BUDGET_THRESHOLDS,
    background: float | None = None,
    sigma: float | None = None,
    counted: np.ndarray | None = None,
) -> dict:
    """Detections at the lowest threshold whose spurious count stays within ``max_spurious``.

    Thresholds are in units of ``sigma`` (give the same ``sigma`` and ``background`` for every
    image compared, e.g. the noisy input's sky noise, so a threshold is the same in electrons).
    They are tried from the highest down and the sweep stops at the first one that makes more
    than ``max_spurious`` spurious detections: the answer is the last threshold before that
    (the lowest, when spurious counts only grow as the threshold falls, as they do for noise).

    Returns :func:`score_detections`' dict at that threshold plus ``threshold`` and
    ``within_budget``; if even the highest threshold exceeds the budget, ``within_budget`` is
    False and the scores are those at the highest threshold.
    """
    if max_spurious < 0:
        raise UserError(f"max_spurious={max_spurious!r} is invalid: use a count >= 0")
    if len(thresholds) == 0:
        raise UserError("thresholds is empty: give at least one detection threshold (in sigma)")
    if background is None or sigma is None:
        bkg, std = background_stats(image)
        background = bkg if background is None else background
        sigma = std if sigma is None else sigma
    best: dict | None = None
    for threshold in sorted((float(t) for t in thresholds), reverse=True):
        found = detect_sources(
            image, fwhm=fwhm, threshold=threshold, background=background, sigma=sigma
        )
        score = score_detections(reference, found, radius, counted)
        if score["n_spurious"] > max_spurious:
            if best is None:
                best = {**score, "threshold": threshold, "within_budget": False}
            break
        best = {**score, "threshold": threshold, "within_budget": True}
    assert best is not None
    return best
