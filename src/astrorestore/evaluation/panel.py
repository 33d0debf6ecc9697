"""Cheap astronomy measures of a batch of restored frames (a validation panel).

:func:`~astrorestore.evaluation.report.cheap_metrics` per frame, summarised by the median over
the frames where each value exists, so one patch without sources does not decide the figure.
"""

from __future__ import annotations

import warnings

import numpy as np

from astrorestore.evaluation.report import cheap_metrics

PANEL_MEASURES = ("f1", "flux_bias", "peak_ratio")


def panel_astro_metrics(
    restored: np.ndarray, truth: np.ndarray, observed: np.ndarray, **settings: float
) -> dict[str, float]:
    """Median F1, flux bias and peak ratio of (B, 1, H, W) frames in physical units; a measure
    no frame could give (no source in any patch) is left out. ``settings`` (``fwhm``,
    ``threshold``...) go to ``cheap_metrics`` as they are."""
    values: dict[str, list[float]] = {key: [] for key in PANEL_MEASURES}
    for out, true, noisy in zip(restored, truth, observed, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no sources in a patch is a normal case here
            measures = cheap_metrics(out[0], true[0], noisy[0], **settings)
        for key in PANEL_MEASURES:
            value = measures.get(key)
            if value is not None and np.isfinite(value):
                values[key].append(float(value))
    return {key: float(np.median(found)) for key, found in values.items() if found}
