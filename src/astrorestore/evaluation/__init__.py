"""Astronomy evaluation: detection, photometry, star fidelity, residuals, reports and baselines.

Procedures that use the metrics of :mod:`astrorestore.metrics` (PSNR/SSIM and the rest are
defined there, not here).

Pure numpy/astropy/photutils/scipy (no Lightning), so training callbacks, ``infer.py`` and the
benchmark harness all score restorations the same way.
"""

from astrorestore.evaluation.baselines import BASELINES, get_baseline
from astrorestore.evaluation.detection import (
    background_stats,
    detect_sources,
    detections_at_spurious_budget,
    match_catalogs,
    precision_recall,
    score_detections,
    threshold_sweep,
)
from astrorestore.evaluation.photometry import (
    aperture_fluxes,
    completeness_curve,
    depth_at_purity,
    flux_errors,
    magnitude_at_completeness,
    magnitudes,
)
from astrorestore.evaluation.psf import centroid_offsets, fit_star, peak_ratio
from astrorestore.evaluation.report import cheap_metrics, evaluate_image
from astrorestore.evaluation.residual import radial_power_spectrum, residual_analysis
from astrorestore.evaluation.writer import write_report

__all__ = [
    "BASELINES",
    "aperture_fluxes",
    "background_stats",
    "centroid_offsets",
    "cheap_metrics",
    "completeness_curve",
    "depth_at_purity",
    "detect_sources",
    "detections_at_spurious_budget",
    "evaluate_image",
    "fit_star",
    "flux_errors",
    "get_baseline",
    "magnitude_at_completeness",
    "magnitudes",
    "match_catalogs",
    "peak_ratio",
    "precision_recall",
    "radial_power_spectrum",
    "residual_analysis",
    "score_detections",
    "threshold_sweep",
    "write_report",
]
