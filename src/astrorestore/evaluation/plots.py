"""Report plots (matplotlib, Agg): detection, photometry, astrometry and the residual.

Sources of all images with a truth are pooled in one set of plots, so a folder of small frames
gives curves with enough sources to read; the residual map and its power spectrum are drawn for
the first image (and the spectra of all images overlaid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astrorestore.evaluation import photometry as phot

_COLOURS = {"noisy": "tab:gray", "restored": "tab:blue", "truth": "tab:green"}


def _pool(results: list[dict], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(r["tables"]["sources"][key], float) for r in results])


def _sweep_pooled(results: list[dict], image: str) -> dict[str, np.ndarray]:
    sweeps = [r["tables"]["sweep"][image] for r in results]
    n_det = np.sum([s["n_detected"] for s in sweeps], axis=0)
    n_spur = np.sum([s["n_spurious"] for s in sweeps], axis=0)
    n_counted = sum(r["detection"][image]["n_counted"] for r in results)
    n_recovered = np.sum([s["n_recovered"] for s in sweeps], axis=0)
    precision = np.where(n_det > 0, (n_det - n_spur) / np.maximum(n_det, 1), 0.0)
    recall = n_recovered / n_counted if n_counted else np.zeros_like(precision, dtype=float)
    total = precision + recall
    f1 = np.where(total > 0, 2 * precision * recall / np.where(total > 0, total, 1), 0.0)
    return {
        "threshold": np.array(sweeps[0]["thresholds"]),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def write_plots(folder: Path, results: list[dict]) -> list[str]:
    """Draw every plot the results support into ``folder``; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth_results = [r for r in results if r.get("has_truth") and "sweep" in r["tables"]]
    units = {r.get("settings", {}).get("unit", "e-") for r in results}
    unit = units.pop() if len(units) == 1 else "frame units"  # BUNIT; DN for photographs
    n_sources = sum(len(r["tables"]["sources"]["x"]) for r in truth_results)
    figures: list[tuple[object, str]] = []
    if truth_results and n_sources:
        figures += _detection_figures(plt, truth_results)
        figures += _source_figures(plt, truth_results, unit)
    figures.append((_residual_figure(plt, results), "residual.png"))
    written: list[str] = []
    for figure, name in figures:
        figure.tight_layout()
        figure.savefig(folder / name, dpi=80)
        plt.close(figure)
        written.append(name)
    return written


def _detection_figures(plt, truth_results: list[dict]) -> list[tuple[object, str]]:
    """Precision-recall over the threshold sweep, and precision/recall/F1 against threshold."""
    sweeps = {k: _sweep_pooled(truth_results, k) for k in ("noisy", "restored", "truth")}
    pr_figure, axis = plt.subplots(figsize=(5, 4.5))
    for key, sweep in sweeps.items():
        axis.plot(sweep["recall"], sweep["precision"], "o-", color=_COLOURS[key], label=key)
    axis.set(
        xlabel="recall (completeness)",
        ylabel="precision (purity)",
        title="precision-recall over thresholds",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
    )
    axis.legend()

    prf_figure, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for axis, metric in zip(axes, ("precision", "recall", "f1"), strict=True):
        for key, sweep in sweeps.items():
            axis.plot(sweep["threshold"], sweep[metric], "o-", color=_COLOURS[key], label=key)
        axis.set(xscale="log", xlabel="threshold (sigma)", title=metric)
        # Label the swept thresholds themselves; log minor labels would overlap.
        thresholds = sweeps["restored"]["threshold"]
        axis.set_xticks(thresholds, [f"{t:g}" for t in thresholds])
        axis.minorticks_off()
    axes[0].legend()
    return [(pr_figure, "precision_recall.png"), (prf_figure, "prf_vs_threshold.png")]


def _source_figures(plt, truth_results: list[dict], unit: str) -> list[tuple[object, str]]:
    """Per-source figures pooled over the images: measured against true flux, flux residual,
    completeness and centroid offset against magnitude."""
    mag = _pool(truth_results, "mag")
    truth_flux = _pool(truth_results, "flux_truth")
    figure_scatter, ax_scatter = plt.subplots(figsize=(5, 4.5))
    figure_resid, ax_resid = plt.subplots(figsize=(6, 4))
    figure_comp, ax_comp = plt.subplots(figsize=(6, 4))
    figure_cent, ax_cent = plt.subplots(figsize=(6, 4))
    edges = phot.magnitude_edges(mag)
    counted = _pool(truth_results, "counted").astype(bool)
    for key in ("noisy", "restored"):
        found = _pool(truth_results, f"found_{key}").astype(bool)
        flux = _pool(truth_results, f"flux_{key}")
        ok = found & (truth_flux > 0)
        ax_scatter.loglog(
            truth_flux[ok],
            np.clip(flux[ok], 1e-1, None),
            ".",
            color=_COLOURS[key],
            alpha=0.5,
            label=key,
        )
        relative = np.where(ok, (flux - truth_flux) / np.where(ok, truth_flux, 1), np.nan)
        binned = phot.binned_median(mag, relative, edges)
        ax_resid.errorbar(
            binned["center"],
            binned["median"],
            yerr=binned["scatter"],
            fmt="o-",
            color=_COLOURS[key],
            label=key,
            capsize=2,
        )
        curve = phot.completeness_curve(mag[counted], found[counted], edges)
        ax_comp.plot(curve["center"], curve["completeness"], "o-", color=_COLOURS[key], label=key)
        offset = np.where(found, _pool(truth_results, f"offset_{key}"), np.nan)
        binned = phot.binned_median(mag, offset, edges)
        ax_cent.plot(binned["center"], binned["median"], "o-", color=_COLOURS[key], label=key)
    found = _pool(truth_results, "found_truth").astype(bool)
    curve = phot.completeness_curve(mag[counted], found[counted], edges)
    ax_comp.plot(
        curve["center"], curve["completeness"], "--", color=_COLOURS["truth"], label="truth"
    )
    ax_comp.axhline(0.9, color="k", lw=0.8, ls=":")
    ax_comp.set(
        xlabel=f"magnitude (zeropoint - 2.5 log10 {unit})",
        ylabel="completeness",
        title="completeness at the report threshold",
    )
    ax_comp.legend()
    lo, hi = np.nanmin(truth_flux[truth_flux > 0], initial=1), np.nanmax(truth_flux, initial=10)
    ax_scatter.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax_scatter.set(
        xlabel=f"true aperture flux ({unit})",
        ylabel=f"measured aperture flux ({unit})",
        title="aperture photometry of matched sources",
    )
    ax_scatter.legend()
    ax_resid.axhline(0, color="k", lw=0.8)
    ax_resid.set(
        xlabel="magnitude",
        ylabel="median (measured - true) / true",
        title="flux residual vs magnitude (bars: robust scatter)",
    )
    ax_resid.legend()
    ax_cent.set(
        xlabel="magnitude",
        ylabel="median centroid offset vs truth (px)",
        yscale="log",
        title="astrometry of matched sources",
    )
    ax_cent.legend()
    return [
        (figure_scatter, "flux_scatter.png"),
        (figure_resid, "flux_residual_vs_mag.png"),
        (figure_comp, "completeness_vs_mag.png"),
        (figure_cent, "centroid_offset_vs_mag.png"),
    ]


def _residual_figure(plt, results: list[dict]):
    """The first image's residual map beside every image's residual power spectrum."""
    first = results[0]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    residual = first["tables"]["residual_map"]
    limit = float(np.nanpercentile(np.abs(residual), 99)) or 1.0
    shown = axes[0].imshow(residual, cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower")
    figure.colorbar(shown, ax=axes[0], label=f"input - output ({first['settings']['unit']})")
    axes[0].set_title(f"residual map: {first['name']}")
    for result in results:
        spectrum = result["tables"]["power_spectrum"]
        axes[1].plot(spectrum["frequency"], spectrum["power"], "-", alpha=0.7, label=result["name"])
    axes[1].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[1].set(
        xlabel="spatial frequency (cycles/px)",
        ylabel="power of residual / sigma",
        yscale="log",
        title="residual power spectrum (white noise: flat at 1)",
    )
    if len(results) <= 8:
        axes[1].legend(fontsize=7)
    return figure
