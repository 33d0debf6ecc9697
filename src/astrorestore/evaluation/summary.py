"""summary.md: the page a person reads first — key numbers with their data ranges, goals, warnings."""

from __future__ import annotations


def _fmt(value, spec: str = ".3f", scale: float = 1.0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value * scale:{spec}}{suffix}"


def _get(tree: dict, path: str):
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


# (label, path under one image's result with {k} for noisy/restored, format, scale, suffix)
_ROWS = (
    ("PSNR (dB, {unit})", "quality.{k}.psnr", ".2f", 1.0, ""),
    ("SSIM ({unit})", "quality.{k}.ssim", ".4f", 1.0, ""),
    ("PSNR (dB, asinh space)", "quality.normalised.{k}.psnr", ".2f", 1.0, ""),
    ("F1 at threshold", "detection.{k}.f1", ".3f", 1.0, ""),
    ("precision (purity)", "detection.{k}.precision", ".3f", 1.0, ""),
    ("recall (completeness)", "detection.{k}.recall", ".3f", 1.0, ""),
    ("spurious rate", "detection.{k}.spurious_rate", ".2f", 100.0, " %"),
    ("best-F1 threshold (sigma)", "detection.{k}.best_threshold", ".0f", 1.0, ""),
    ("flux bias (median rel.)", "photometry.{k}.bias", "+.2f", 100.0, " %"),
    ("flux scatter (robust rel.)", "photometry.{k}.scatter", ".2f", 100.0, " %"),
    ("flux bias, S/N >= 20", "photometry.{k}.bias_bright", "+.2f", 100.0, " %"),
    ("flux scatter, S/N >= 20", "photometry.{k}.scatter_bright", ".2f", 100.0, " %"),
    ("depth (mag, 90 % compl., purity >= 90 %)", "depth.{k}.magnitude", ".2f", 1.0, ""),
    ("bright-star peak ratio (median)", "psf.{k}.peak_ratio_median", ".3f", 1.0, ""),
    ("bright-star peak ratio (5th pct)", "psf.{k}.peak_ratio_p5", ".3f", 1.0, ""),
    ("bright-star FWHM ratio", "psf.{k}.fwhm_ratio_median", ".3f", 1.0, ""),
    ("centroid offset, matched (px)", "astrometry.{k}.median_offset_px", ".3f", 1.0, ""),
    ("centroid offset, bright (px)", "astrometry.{k}.bright_median_offset_px", ".4f", 1.0, ""),
)


def _image_section(result: dict) -> list[str]:
    lines = [f"## {result['name']} ({result['shape'][0]}x{result['shape'][1]})", ""]
    background = result["background"]
    unit = result["settings"].get("unit", "e-")
    lines.append(
        f"- background sigma: noisy {background['noisy']['sigma']:.3g} {unit}, restored "
        f"{background['restored']['sigma']:.3g} {unit} "
        f"(ratio {_fmt(background['sky_noise_ratio'])})"
    )
    if result["settings"].get("noise_model"):
        lines.append(f"- noise model: {result['settings']['noise_model']}")
    if result["has_truth"]:
        quality = result["quality"]
        lines.append(
            f"- PSNR/SSIM data range: {quality['data_range_e']:.4g} {unit} "
            f"({quality['data_range_definition']}); asinh space: "
            f"{quality['normalised']['data_range']:.3f} ({quality['normalised']['definition']})"
        )
        lines.append(
            f"- empty-sky noise ratio std(restored-truth)/std(noisy-truth): "
            f"{_fmt(quality['empty_sky_noise_ratio'])} over {quality['empty_sky_pixels']} px"
        )
        detection = result["detection"]
        lines.append(
            f"- reference: {detection['n_reference']} sources ({detection['reference']}); "
            f"threshold {result['settings']['threshold_sigma']:g} sigma, match radius "
            f"{result['settings']['match_radius_px']:.2f} px"
        )
        lines.append(f"- depth gain: {_fmt(result['depth']['gain_mag'], '+.2f', 1, ' mag')}")
        lines += ["", "| measure | noisy | restored |", "|---|---|---|"]
        for label, path, spec, scale, suffix in _ROWS:
            a = _get(result, path.format(k="noisy"))
            b = _get(result, path.format(k="restored"))
            if a is None and b is None:
                continue
            label = label.format(unit=unit)  # the frame's unit (BUNIT; DN for photographs)
            lines.append(
                f"| {label} | {_fmt(a, spec, scale, suffix)} | {_fmt(b, spec, scale, suffix)} |"
            )
        lines.append("")
    else:
        detection = result["detection"]
        lines.append(
            f"- detections: noisy {detection['n_noisy']}, restored {detection['n_restored']}, "
            f"in both {detection['n_in_both']}"
        )
        bright = result.get("bright_sources")
        if bright:
            lines.append(
                f"- {bright['n']} bright isolated sources: flux restored/noisy "
                f"{_fmt(bright['median_flux_ratio'], '.4f')}, FWHM noisy "
                f"{_fmt(bright['median_fwhm_noisy'], '.2f')} px -> restored "
                f"{_fmt(bright['median_fwhm_restored'], '.2f')} px"
            )
    residual = result["residual"]
    lines.append(
        f"- residual (input - output): mean {residual['mean']:.3g} {unit} "
        f"({residual['mean_in_sigma']:.1f} sigma), variance / noise model "
        f"{residual['variance_ratio']:.3f} ({residual['noise_reference']}), low/high-frequency "
        f"power {_fmt(residual['low_high_power_ratio'], '.2f')} (1 = white)"
    )
    shape = residual.get("sources", {}).get("shape", {})
    if "chi2_dof" in shape:
        lines.append(
            f"- residual stacked on {shape['n']} bright sources (noise units): chi2/dof "
            f"{shape['chi2_dof']:.2f} (1 = noise; > 1 = sources reshaped), largest mean "
            f"{shape['largest_mean_sigma']:+.2f} sigma at dx, dy = {shape['largest_at'][0]}, "
            f"{shape['largest_at'][1]} px"
        )
    lines += ["", "Warnings:" if result["warnings"] else "No warnings."]
    lines += [f"- {w}" for w in result["warnings"]]
    return lines + [""]


def summary_markdown(title: str, results: list[dict], aggregate: dict, goals: dict) -> str:
    """Markdown text of the summary: aggregate and goals first, then one section per image."""
    lines = [f"# {title}", "", f"{len(results)} image(s).", ""]
    pooled = aggregate["pooled"]
    if "restored" in pooled:
        noisy, restored = pooled["noisy"], pooled["restored"]
        gain = pooled["depth_gain_mag"]
        lines += [
            "## Pooled over all images",
            "",
            "| measure | noisy | restored | goal |",
            "|---|---|---|---|",
            f"| depth (mag) | {_fmt(noisy['depth_mag'], '.2f')} | "
            f"{_fmt(restored['depth_mag'], '.2f')} | gain >= +{goals['depth_gain_mag']} mag "
            f"(now {_fmt(gain, '+.2f')}) |",
            f"| spurious rate | {_fmt(noisy['spurious_rate'], '.2f', 100, ' %')} | "
            f"{_fmt(restored['spurious_rate'], '.2f', 100, ' %')} | "
            f"<= {100 * goals['spurious_rate']:g} % |",
            f"| flux bias | {_fmt(noisy['flux_bias'], '+.2f', 100, ' %')} | "
            f"{_fmt(restored['flux_bias'], '+.2f', 100, ' %')} | "
            f"abs <= {100 * goals['abs_flux_bias']:g} % |",
            f"| flux scatter | {_fmt(noisy['flux_scatter'], '.2f', 100, ' %')} | "
            f"{_fmt(restored['flux_scatter'], '.2f', 100, ' %')} | |",
            f"| recall at threshold | {_fmt(noisy['recall'], '.3f')} | "
            f"{_fmt(restored['recall'], '.3f')} | |",
            "",
        ]
        met = [
            gain is not None and gain >= goals["depth_gain_mag"],
            restored["spurious_rate"] <= goals["spurious_rate"],
            restored["flux_bias"] is not None
            and abs(restored["flux_bias"]) <= goals["abs_flux_bias"],
        ]
        lines += [f"Goals met: {sum(met)} of 3.", ""]
    for result in results:
        lines += _image_section(result)
    return "\n".join(lines)
