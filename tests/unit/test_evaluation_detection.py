"""Detection and matching on synthetic frames whose sources are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from astrorestore.errors import UserError
from astrorestore.evaluation import detection as det


def gaussian_stars(
    size: int, xy: np.ndarray, flux: np.ndarray, fwhm: float, sky: float = 100.0
) -> np.ndarray:
    """Noiseless frame of circular Gaussian stars (electrons) on a flat sky."""
    sigma = fwhm / 2.3548
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), sky)
    for (x, y), f in zip(xy, flux, strict=True):
        image += (
            f / (2 * np.pi * sigma**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        )
    return image


def grid_field(seed: int = 0, n_side: int = 5, size: int = 160):
    """Isolated stars on a jittered grid, flux 2e4 e-, with Gaussian noise of sigma 3 e-."""
    rng = np.random.default_rng(seed)
    step = size / n_side
    centres = (np.arange(n_side) + 0.5) * step
    xy = np.array([(x, y) for y in centres for x in centres]) + rng.uniform(-2, 2, (n_side**2, 2))
    clean = gaussian_stars(size, xy, np.full(len(xy), 2e4), fwhm=3.0)
    noisy = clean + rng.normal(0, 3.0, clean.shape)
    return noisy, clean, xy


def test_detects_every_isolated_star_and_nothing_else():
    noisy, _, xy = grid_field()
    found = det.detect_sources(noisy, fwhm=3.0, threshold=5.0)
    assert len(found["x"]) == len(xy) == 25
    score = det.score_detections(xy, found, radius=1.5)
    assert (score["n_matched"], score["n_spurious"]) == (25, 0)
    assert score["precision"] == score["recall"] == score["f1"] == 1.0
    # DAOStarFinder centroids of bright isolated stars are close to the truth.
    assert np.max(score["distance"]) < 0.2


def test_background_stats_recovers_sky_and_noise():
    noisy, _, _ = grid_field()
    level, sigma = det.background_stats(noisy)
    assert level == pytest.approx(100.0, abs=0.2)
    assert sigma == pytest.approx(3.0, rel=0.05)


def test_missing_and_spurious_sources_are_counted_exactly():
    noisy, _, xy = grid_field()
    found = det.detect_sources(noisy, fwhm=3.0, threshold=5.0)
    # Reference with 3 extra sources nobody can find, and 2 true stars removed from it.
    reference = np.vstack([xy[2:], [[-50, -50], [-60, -60], [-70, -70]]])
    score = det.score_detections(reference, found, radius=1.5)
    assert score["n_reference"] == 26
    assert score["n_matched"] == 23
    assert score["n_spurious"] == 2
    assert score["precision"] == pytest.approx(23 / 25)
    assert score["recall"] == pytest.approx(23 / 26)
    counted = np.arange(26) < 23  # recall only over the true stars
    assert det.score_detections(reference, found, 1.5, counted)["recall"] == 1.0


def test_matching_is_one_to_one_closest_first():
    reference = np.array([[10.0, 10.0], [13.0, 10.0]])
    detected = np.array([[11.2, 10.0], [10.1, 10.0], [30.0, 30.0]])
    ref_i, det_i, dist = det.match_catalogs(reference, detected, radius=2.0)
    # (0, 1) at 0.1 px goes first; detection 0 then matches reference 1 at 1.8 px.
    assert list(zip(ref_i, det_i, strict=True)) == [(0, 1), (1, 0)]
    assert dist == pytest.approx([0.1, 1.8])
    assert det.match_catalogs(reference, np.zeros((0, 2)), 2.0)[0].size == 0


def test_threshold_sweep_picks_best_f1_and_recall_falls_with_threshold():
    rng = np.random.default_rng(3)
    xy = rng.uniform(10, 150, (30, 2))
    flux = np.geomspace(40, 4000, 30)
    noisy = gaussian_stars(160, xy, flux, fwhm=3.0) + rng.normal(0, 3.0, (160, 160))
    sweep = det.threshold_sweep(noisy, xy, fwhm=3.0, radius=1.5, thresholds=(2, 5, 20, 80))
    assert np.all(np.diff(sweep["recall"]) <= 0)
    assert sweep["best_f1"] == max(sweep["f1"])
    assert sweep["best_threshold"] == sweep["thresholds"][int(np.argmax(sweep["f1"]))]
    assert sweep["n_spurious"][0] > sweep["n_spurious"][-1] == 0


def test_flat_frame_finds_nothing_and_scores_zero_not_nan():
    flat = np.random.default_rng(1).normal(50, 2, (64, 64))
    found = det.detect_sources(flat, fwhm=3.0, threshold=8.0)
    assert len(found["x"]) == 0
    score = det.score_detections(np.array([[30.0, 30.0]]), found, 1.5)
    assert score["f1"] == 0.0 and score["precision"] == 0.0


def test_bad_fwhm_and_all_nan_frame_are_user_errors():
    with pytest.raises(UserError, match="fwhm"):
        det.detect_sources(np.zeros((8, 8)), fwhm=0)
    with pytest.raises(UserError, match="no finite pixels"):
        det.background_stats(np.full((8, 8), np.nan))


def test_spurious_budget_picks_lowest_threshold_within_the_budget():
    # Noiseless frame, sigma = 1: a Gaussian of peak A is found below a threshold of ~0.8 A.
    # Catalogued stars of peak 100, 30 and 10; an uncatalogued blob of peak 20 (a spurious
    # detection whenever it is found, i.e. below ~16 sigma).
    fwhm = 3.0
    area = 2 * np.pi * (fwhm / 2.3548) ** 2
    xy = np.array([[20.0, 20.0], [60.0, 20.0], [20.0, 60.0], [60.0, 60.0]])
    image = gaussian_stars(80, xy, np.array([100.0, 30.0, 10.0, 20.0]) * area, fwhm, sky=0.0)
    reference = xy[:3]
    grid = (2.0, 4.0, 12.0, 20.0, 40.0)
    kwargs = dict(fwhm=fwhm, radius=2.0, thresholds=grid, background=0.0, sigma=1.0)

    none_allowed = det.detections_at_spurious_budget(image, reference, max_spurious=0, **kwargs)
    # 12 sigma would find the blob, so the sweep stops at 20 sigma: the two brightest stars.
    assert none_allowed["threshold"] == 20.0 and none_allowed["within_budget"]
    assert none_allowed["n_recovered"] == 2 and none_allowed["n_spurious"] == 0
    assert none_allowed["matched"].tolist() == [True, True, False]

    one_allowed = det.detections_at_spurious_budget(image, reference, max_spurious=1, **kwargs)
    assert one_allowed["threshold"] == 2.0
    assert one_allowed["n_recovered"] == 3 and one_allowed["n_spurious"] == 1

    # A blob brighter than every threshold: no threshold meets a budget of 0.
    over = det.detections_at_spurious_budget(
        image, reference, max_spurious=0, **{**kwargs, "thresholds": (2.0, 4.0, 12.0)}
    )
    assert not over["within_budget"] and over["threshold"] == 12.0
    with pytest.raises(UserError, match="max_spurious"):
        det.detections_at_spurious_budget(image, reference, max_spurious=-1, **kwargs)
