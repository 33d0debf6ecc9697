"""Real images with injected noise: do restorations keep what a real frame holds?

Every other bench scores frames the project simulated. Here the truth is a real image that
ships inside an installed package, scaled to electrons; Poisson noise plus 3 e- read noise is
injected, so the original is the truth. Frames (both legal to use, both shipped in wheels):

- ``m13``: astropy's test file ``io/fits/hdu/compressed/tests/data/m13.fits`` (300x300 int16, a
  SkyView cut-out of the globular cluster M13 from a photographic sky survey): a crowded star
  field. Part of astropy (BSD-3-Clause).
- ``xdf``: scikit-image's ``data.hubble_deep_field()`` (872x1000 RGB JPEG of the Hubble eXtreme
  Deep Field, NASA, public domain as its docstring states): extended galaxies of every size;
  the mean of the three channels is used as one band.
- ``xdf_vig``: made from the real ``xdf``: its truth in electrons on a 160 e- sky, all of it
  multiplied by a cos^4 vignetting (1 at the centre, 0.1 in the corners), so the corners (~18 e-)
  lie ~5 noise sigma below the frame's median sky (~59 e-), as in issue 25's galaxy frame whose
  dark corners a learned method brightened. The worst 16x16 bias is the measure it is for.

``--frames m13,xdf,xdf_vig`` (the default) picks them; the first noisy draws come from one
generator in that order, so a frame's draw depends on the frames before it.

Electrons. The values are assumed proportional to photons above a pedestal ``P`` = the frame's
minimum - 1: ``truth = k (value - P)``. Real frames already carry noise; its sigma ``s`` is
estimated (robust MAD of neighbour differences) and the scale ``k`` of each noise level is
chosen so that the injected noise at the median sky is ``r`` times the frame's own noise
there: ``k S + 3^2 = r^2 k^2 s^2`` with ``S`` the sky above the pedestal. Levels ``r = 3`` and
``r = 5`` (the frame's own noise is 11 % and 4 % of the variance at the sky; relatively less on
sources, where the injected Poisson noise grows).

Methods: ``noisy``; ``gaussian`` (sigma 1 px); ``bm3d_vst`` (generalised Anscombe, BM3D at unit
sigma, exact-unbiased inverse; row skipped with a note without the ``bm3d`` package); any
``--ckpt LABEL=PATH``, restored by ``python infer.py ckpt_path=... input=... output=...`` in a
subprocess (the noisy frame written as FITS in electrons, BUNIT, GAIN=1, RDNOISE=3).

``--ckpt pretrained`` (or ``LABEL=pretrained``) restores with the default denoiser shipped with
the package (``infer.py`` without ``ckpt_path``). ``--adapt METHOD`` adds an "adapted" row:
for each noisy frame, the ``--adapt-from`` weights (default: the shipped ones) are fine-tuned on
that frame alone by ``python train.py model=METHOD data=fits data.root=<folder holding the one
frame> init_from=... init_net=checkpoint`` for ``--adapt-epochs`` epochs of
``--adapt-patches`` crops (a self-supervised METHOD: n2v, n2v2, ...), then restored by
``infer.py`` with the run's best checkpoint (by its validation loss on held-out bands of the
frame). The row against the pretrained row is what adapting on the target frame gains.
``--adapt`` repeats, and takes ``METHOD:FROM`` to name the start per row; ``FROM=scratch``
trains METHOD from random weights on the frame alone (the "self-supervised on the frame itself"
row), e.g. ``--adapt r2r --adapt r2r:scratch``.

N2N where pairs can be made: ``--adapt n2n:scratch`` injects a second, independent draw of the
same truth (its own generator per frame and level, so no other row changes), writes the two
draws as two registered exposures of one field (header OBJECT, ``data.pairs=true
data.pair_key=OBJECT``) and trains ``model=n2n`` from random weights on that pair alone with the
same budget as the other ``--adapt`` rows; the first draw, the one every method restores, is
restored and scored. The pair holds twice the photons a single-frame method sees.

Metrics (truth in electrons): PSNR and SSIM with data range p0.5..p99.5 of the truth; the rms
error left in source-free sky (background map and source mask of the noisy frame) against the noisy
frame's; the worst mean bias over a grid of 16x16 regions in units of the noisy frame's MAD
sigma (noise alone scores ~3/16 on a large frame); for the 30 brightest isolated compact sources
of the truth (peak above 10 sigma, no brighter neighbour within 6 px, not at the frame's
maximum), the median aperture-flux bias (r = 3 px, the noisy frame's sky map subtracted) and the
median peak ratio restored/true (above the sky map, at the truth's peak pixel); galaxy
surface-brightness profiles: for the 3 largest extended galaxies of the truth (photutils
segmentation at 2 sigma, second-moment semi-major sigma >= 3 px), the mean in elliptical annuli
(catalog shape, other sources left out) out to where the truth falls to 1 noisy sigma above the
sky map, as the median and the worst relative bias (restored - truth) / (truth - sky) over the
annuli (``astrorestore.evaluation.profiles``; relative, since the denominator stays >= 1 sigma).

``--figures DIR`` writes ``DIR/<frame>_r<level>.png`` per frame and level: for each method a row
noisy | output | truth | output - truth | noisy - output, the differences on +-3 noisy MAD
sigma: a residual noisy - output that is noise looks like grain, one that carries sources or the
sky's shape shows them.

``--variant LABEL=BASE:OVERRIDES`` restores a ``--ckpt``'s weights with other infer.py settings
(e.g. ``raw=pretrained:postprocess=none``: the network without its stored post-processing).

Usage: ``python bench/bench_real_frames.py [--ckpt default=path.ckpt] [--ckpt pretrained]
[--variant raw=pretrained:postprocess=none] [--adapt n2v [--adapt-epochs 4] [--adapt-patches 256]] [--adapt n2n:scratch]
[--frames m13,xdf,xdf_vig] [--figures DIR] [--smoke] [--out bench/results/real_frames]``;
writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
READ_NOISE = 3.0
SCRATCH = "scratch"  # --adapt METHOD:scratch: no init_from
RATIOS = (3.0, 5.0)
SEED = 2025
APERTURE = 3.0
STARS = 30
#: A bright source peaks this many noisy-frame sigma above the sky (its photometry is clean).
PEAK_SNR = 10.0
FRAMES = ("m13", "xdf", "xdf_vig")
#: xdf_vig: the vignetting at the frame's corners (cos^4 law, 1 at the centre), and the sky
#: (e-, before vignetting) under the XDF's light.
VIGNETTE_CORNER = 0.1
VIGNETTED_SKY_E = 160.0
#: Methods trained on a pair of exposures (two injected draws of the truth), not on one frame.
PAIRED = {"n2n"}
#: The header keyword that names the field of the pair's two exposures (data.pair_key).
PAIR_KEY = "OBJECT"
#: Galaxies whose surface-brightness profiles are measured, the largest extended ones.
GALAXIES = 3


def load_frame(name: str) -> tuple[np.ndarray, str]:
    """The frame's values (float64, 2-D) and a one-line description with its source (xdf_vig:
    the XDF's values; its sky and vignetting are applied to the truth, ``vignetted``)."""
    if name == "m13":
        from astropy.io import fits
        from astropy.utils.data import get_pkg_data_filename

        path = get_pkg_data_filename("io/fits/hdu/compressed/tests/data/m13.fits", "astropy")
        return fits.getdata(path).astype(np.float64), "M13, astropy test data (DSS plate)"
    if name in ("xdf", "xdf_vig"):
        from skimage import data

        values = data.hubble_deep_field().astype(np.float64).mean(axis=-1)
        if name == "xdf":
            return values, "Hubble XDF, scikit-image data (mean of RGB)"
        return values, (
            f"Hubble XDF + {VIGNETTED_SKY_E:g} e- sky, vignetted (cos^4, "
            f"{VIGNETTE_CORNER:g} at the corners)"
        )
    raise ValueError(f"unknown frame {name!r}: use {', '.join(FRAMES)}")


def vignetted(name: str, truth: np.ndarray, full_shape: tuple[int, int], crop) -> np.ndarray:
    """xdf_vig's truth: the XDF's truth on a ``VIGNETTED_SKY_E`` sky, all of its light
    multiplied by the vignetting of the whole frame (``crop``: the part of it kept); other
    frames as they are. The XDF picture's own sky is a few e- (~1 noise sigma), so vignetting
    it alone would dim nothing the noise does not hide; with the added sky the frame's median
    is ~59 e- (the issue's frame: 63 e-) and its corners ~18 e-, ~5 noise sigma below it."""
    if name != "xdf_vig":
        return truth
    return (truth + VIGNETTED_SKY_E) * vignetting(full_shape)[crop]


def vignetting(shape: tuple[int, int], corner: float = VIGNETTE_CORNER) -> np.ndarray:
    """The natural cos^4 falloff, ``(1 + (r/f)^2)^-2``: 1 at the centre, ``corner`` at the
    corners (``f`` chosen so)."""
    h, w = shape
    y, x = np.mgrid[:h, :w]
    r2 = (y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2
    f2 = r2.max() / (corner**-0.5 - 1.0)
    return (1.0 + r2 / f2) ** -2


def electrons_scale(sky_above_pedestal: float, own_sigma: float, ratio: float) -> float:
    """``k`` with ``k S + read^2 = ratio^2 k^2 s^2``: injected sigma = ratio x own sigma at sky."""
    a = ratio**2 * own_sigma**2
    return float(
        (sky_above_pedestal + np.sqrt(sky_above_pedestal**2 + 4 * a * READ_NOISE**2)) / (2 * a)
    )


def inject(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(np.clip(truth, 0, None)).astype(np.float64) + rng.normal(
        0.0, READ_NOISE, truth.shape
    )


def bright_sources(truth: np.ndarray, sky: np.ndarray, sigma: float, count: int = STARS):
    """(N, 2) x, y of the brightest isolated compact peaks of ``truth - sky``."""
    from scipy import ndimage

    excess = truth - sky
    peaks = (excess == ndimage.maximum_filter(excess, size=13)) & (excess > PEAK_SNR * sigma)
    peaks &= excess < 0.98 * excess.max()  # saturated or clipped plateaus are not stars
    margin = 8
    peaks[:margin], peaks[-margin:], peaks[:, :margin], peaks[:, -margin:] = (False,) * 4
    ys, xs = np.nonzero(peaks)
    order = np.argsort(excess[ys, xs])[::-1][:count]
    return np.stack([xs[order], ys[order]], axis=1).astype(float)


def star_fidelity(restored: np.ndarray, truth: np.ndarray, sky: np.ndarray, xy: np.ndarray):
    """Median aperture-flux bias and median peak ratio of ``restored`` against ``truth``."""
    from astrorestore.evaluation.photometry import aperture_fluxes

    if len(xy) == 0:
        return float("nan"), float("nan")
    true_flux = aperture_fluxes(truth, xy, APERTURE, sky=sky)
    flux = aperture_fluxes(restored, xy, APERTURE, sky=sky)
    # The peak is read at the truth's peak pixel: a maximum over a window would pick up the
    # noise (a noisy frame's 10-sigma sources would show peaks ~10 % too high).
    columns, rows = xy.astype(int).T
    ratios = (restored - sky)[rows, columns] / (truth - sky)[rows, columns]
    return float(np.median(flux / true_flux - 1.0)), float(np.median(ratios))


def score(restored, truth, noisy, sky_map, sky_mask, sigma, xy, annuli=()) -> dict:
    from astrorestore.evaluation.profiles import profile_bias_summary
    from astrorestore.metrics.bias import worst_region_bias
    from astrorestore.metrics.electrons import psnr_electrons, sky_error_rms, ssim_electrons

    bias = worst_region_bias(restored, truth, sigma)
    flux_bias, peak_ratio = star_fidelity(restored, truth, sky_map, xy)
    profile = profile_bias_summary(restored, truth, list(annuli))
    return {
        "psnr": psnr_electrons(restored, truth),
        "ssim": ssim_electrons(restored, truth),
        "sky_rms": sky_error_rms(restored, truth, sky_mask),
        "sky_rms_ratio": sky_error_rms(restored, truth, sky_mask)
        / sky_error_rms(noisy, truth, sky_mask),
        "worst_bias_sigma": bias["worst"],
        "worst_bias_signed": bias["worst_signed"],
        "worst_bias_xy": [bias["x"], bias["y"]],
        "star_flux_bias": flux_bias,
        "star_peak_ratio": peak_ratio,
        "stars": len(xy),
        "profile_bias_median": profile["median"],
        "profile_bias_worst": profile["worst"],
    }


def write_noisy(noisy: np.ndarray, path: Path, **cards) -> Path:
    """The noisy frame as FITS in electrons, with its noise model (and ``cards``) in the header."""
    from astropy.io import fits

    path.parent.mkdir(parents=True, exist_ok=True)
    header = fits.Header({"BUNIT": "electron", "GAIN": 1.0, "RDNOISE": READ_NOISE, **cards})
    fits.PrimaryHDU(noisy.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def run_script(script: str, arguments: list[str]) -> None:
    """``python <script> <arguments>`` from the repository root, this checkout's package first."""
    env = dict(
        os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    command = [sys.executable, str(REPO / script), *arguments]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        last = [line for line in lines if not line.startswith("Set the environment")][-1:]
        raise RuntimeError(f"{script} {' '.join(arguments[:3])} ... failed: {last}")


def restore_with_ckpt(
    ckpt: str, noisy: np.ndarray, workdir: Path, tag: str, extra: tuple[str, ...] = ()
) -> np.ndarray:
    """Restore through ``infer.py`` in a subprocess (independent of inference internals), with
    ``extra`` infer.py overrides (a ``--variant``)."""
    from astropy.io import fits

    source = write_noisy(noisy, workdir / f"{tag}_noisy.fits")
    target = workdir / f"{tag}_restored.fits"
    run_script("infer.py", [
        f"ckpt_path={ckpt}", f"input={source}", f"output={target}", "progress=false",
        "device=cpu", *extra,
    ])  # fmt: skip
    with fits.open(target) as hdul:
        image = next(h.data for h in hdul if h.data is not None and h.data.ndim == 2)
        return np.asarray(image, dtype=np.float64)


def adapt_and_restore(
    adapt: dict, noisy: np.ndarray, second: np.ndarray, workdir: Path, tag: str
) -> np.ndarray:
    """Fine-tune ``adapt["from"]`` on this noisy frame alone with ``adapt["method"]`` (a
    ``PAIRED`` method: on the pair of ``noisy`` and the ``second`` draw, two registered
    exposures of one field), then restore ``noisy`` with the run's best checkpoint."""
    folder = workdir / f"{tag}_adapt"
    paired = adapt["method"] in PAIRED
    write_noisy(noisy, folder / "frames" / "frame.fits", **{PAIR_KEY: tag})
    pairing = []
    if paired:
        write_noisy(second, folder / "frames" / "frame2.fits", **{PAIR_KEY: tag})
        pairing = ["data.pairs=true", f"data.pair_key={PAIR_KEY}"]
    run = folder / "run"
    start = (
        [] if adapt["from"] == SCRATCH else [f"init_from={adapt['from']}", "init_net=checkpoint"]
    )
    run_script("train.py", [
        f"model={adapt['method']}", "data=fits", f"data.root={folder / 'frames'}", *pairing,
        *start, f"hydra.run.dir={run}",
        f"trainer.max_epochs={adapt['epochs']}", f"data.patches_per_epoch={adapt['patches']}",
        "data.test_fraction=0", "test=false", "logger=csv", "data.progress=false",
        "~callbacks.progress_bar", "~callbacks.image_panels", "~callbacks.early_stopping",
    ])  # fmt: skip
    best = sorted((run / "checkpoints").glob("best-*.ckpt"))
    if not best:
        raise RuntimeError(f"the adaptation run {run} saved no best checkpoint")
    return restore_with_ckpt(str(best[-1]), noisy, workdir, f"{tag}_adapted")


def adapted_label(adapt: dict) -> str:
    if adapt["from"] == SCRATCH:
        pair = " pair" if adapt["method"] in PAIRED else ""
        return f"{adapt['method']} on the frame{pair}"
    return f"adapted ({adapt['method']})"


def methods(ckpts: dict[str, str], workdir: Path, adapts: list[dict] = ()):
    """(label, function(noisy, second draw, tag) -> restored, or None; note) for each row."""
    from astrorestore.evaluation.baselines import bm3d_vst, gaussian

    rows = [
        ("noisy", lambda x, _, tag: x.copy(), ""),
        ("gaussian", lambda x, _, tag: gaussian(x, sigma=1.0).astype(np.float64), "sigma 1 px"),
    ]
    if importlib.util.find_spec("bm3d") is None:
        rows.append(("bm3d_vst", None, "skipped: pip install bm3d"))
    else:
        rows.append((
            "bm3d_vst",
            lambda x, _, tag: bm3d_vst(x, gain=1.0, read_noise=READ_NOISE).astype(np.float64),
            "generalised Anscombe + BM3D",
        ))  # fmt: skip
    for label, spec in ckpts.items():
        path, extra = (spec, ()) if isinstance(spec, str) else spec
        rows.append((
            label,
            lambda x, _, tag, path=path, label=label, extra=extra: restore_with_ckpt(
                path, x, workdir, f"{tag}_{label}", tuple(extra)
            ),
            " ".join([f"infer.py ckpt_path={path}", *extra]),
        ))  # fmt: skip
    for number, adapt in enumerate(adapts):
        rows.append((
            adapted_label(adapt),
            lambda x, second, tag, adapt=adapt, number=number: adapt_and_restore(
                adapt, x, second, workdir, f"{tag}_{number}"
            ),
            f"model={adapt['method']} from {adapt['from']}, trained on the frame"
            f"{' and a second draw' if adapt['method'] in PAIRED else ''}, "
            f"{adapt['epochs']} x {adapt['patches']} crops",
        ))  # fmt: skip
    return rows


def sky_of(noisy: np.ndarray):
    """The sky map and source mask a user would have (measured on the noisy frame); a crowded
    crop whose 16 px boxes hold too little sky (M13 is crowded: 2-3 % of a 192 px corner is sky)
    is measured with 8 px boxes instead."""
    from astrorestore.data.normalization.background import estimate_background
    from astrorestore.errors import UserError

    try:
        return estimate_background(noisy)
    except UserError:
        return estimate_background(noisy, box_size=8)


def draw(truth: np.ndarray, name: str, level: int, exposure: int = 1) -> np.ndarray:
    """One noisy exposure of ``truth``: its own generator per frame, level and exposure (the
    second makes the N2N pair), so no draw depends on ``--frames`` or on which rows run, and
    frames can be scored by separate runs of the bench."""
    return inject(truth, np.random.default_rng([SEED, FRAMES.index(name), level, exposure]))


def write_figure(path: Path, truth, noisy, outputs: dict, sigma: float, title: str) -> None:
    """noisy | output | truth | output - truth | noisy - output, one row per method, the
    differences on +-3 noisy MAD sigma (a residual that is noise looks like the noisy row's)."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astrorestore.callbacks.image_panels import render_panels

    def stack(images):
        return torch.from_numpy(np.stack([np.asarray(i, np.float32)[None] for i in images]))

    labels = list(outputs)
    panel = {
        "input": stack([noisy] * len(labels)),
        "restored": stack(outputs.values()),
        "truth": stack([truth] * len(labels)),
    }
    figure = render_panels(
        panel,
        f"{title}: differences on ±3 σ (noisy MAD σ = {sigma:.2f} e-)",
        limit=3.0 * sigma,
        units="e-",
        row_labels=labels,
        size=3.2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial, dpi=110)
    plt.close(figure)
    partial.replace(path)


def run(
    frames: list[str],
    ckpts: dict[str, str],
    smoke: bool,
    adapts: list[dict] = (),
    figures: Path | None = None,
) -> dict:
    from astrorestore.evaluation.profiles import galaxy_annuli
    from astrorestore.metrics.bias import mad_sigma

    results: dict = {"frames": {}, "rows": []}
    pairs = any(adapt["method"] in PAIRED for adapt in adapts)
    with tempfile.TemporaryDirectory() as tmp:
        rows = methods(ckpts, Path(tmp), adapts)
        for name in frames:
            values, description = load_frame(name)
            full_shape, crop = values.shape, (slice(None), slice(None))
            if smoke:
                # The top-left corner: M13's core has no sky, and of its corners this one
                # keeps enough (3 %) for a sky map at 16 px boxes under the smoke run's draw.
                crop = (slice(0, 192), slice(0, 192))
                values = values[crop]
            pedestal = float(values.min()) - 1.0
            own = mad_sigma(values)
            sky_level = float(np.median(values)) - pedestal
            for level_index, ratio in enumerate(RATIOS[:1] if smoke else RATIOS):
                k = electrons_scale(sky_level, own, ratio)
                truth = vignetted(name, k * (values - pedestal), full_shape, crop)
                noisy = draw(truth, name, level_index)
                second = draw(truth, name, level_index, exposure=2) if pairs else None
                # The sky map and mask a user would have: measured on the noisy frame.
                background = sky_of(noisy)
                sky_mask = ~background.source_mask
                sigma = mad_sigma(noisy)
                xy = bright_sources(truth, background.background, sigma)
                annuli = galaxy_annuli(truth, background.background, sigma, GALAXIES)
                level = f"r={ratio:g}"
                results["frames"][f"{name} {level}"] = {
                    "description": description,
                    "shape": list(truth.shape),
                    "electrons_per_unit": k,
                    "pedestal": pedestal,
                    "own_noise_e": own * k,
                    "sky_median_e": float(np.median(truth)),
                    "injected_sigma_at_sky_e": float(np.sqrt(np.median(truth) + READ_NOISE**2)),
                    "noisy_mad_sigma_e": sigma,
                    "truth_p99_5_e": float(np.percentile(truth, 99.5)),
                    "sky_fraction": float(sky_mask.mean()),
                    "bright_sources": len(xy),
                    "galaxies": len({a.galaxy for a in annuli}),
                    "galaxy_annuli": len(annuli),
                }
                outputs = {}
                for label, restore, note in rows:
                    row = {"frame": name, "level": level, "method": label, "note": note}
                    if restore is not None:
                        start = time.perf_counter()
                        restored = restore(noisy, second, f"{name}_{ratio:g}")
                        row["seconds"] = time.perf_counter() - start
                        row.update(score(restored, truth, noisy, background.background,
                                         sky_mask, sigma, xy, annuli))  # fmt: skip
                        if label != "noisy":
                            outputs[label] = restored
                    results["rows"].append(row)
                    print(_line(row), flush=True)
                if figures is not None:
                    write_figure(figures / f"{name}_r{ratio:g}.png", truth, noisy, outputs, sigma,
                                 f"{name} {level}")  # fmt: skip
    return results


def _number(value: float, spec: str) -> str:
    return format(value, spec) if np.isfinite(value) else "n/a"


def _line(row: dict) -> str:
    if "psnr" not in row:
        return f"| {row['frame']} {row['level']} | {row['method']} | {row['note']} |"
    return (
        f"| {row['frame']} {row['level']} | {row['method']} | {row['psnr']:.2f} | "
        f"{row['ssim']:.3f} | {row['sky_rms']:.2f} ({row['sky_rms_ratio']:.2f}) | "
        f"{row['worst_bias_signed']:+.2f} | {_number(100 * row['star_flux_bias'], '+.1f')} | "
        f"{_number(row['star_peak_ratio'], '.3f')} | "
        f"{_number(100 * row['profile_bias_median'], '+.1f')} / "
        f"{_number(100 * row['profile_bias_worst'], '+.1f')} | {row.get('seconds', 0):.1f} |"
    )


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "# Real frames with injected noise",
        "",
        f"Command: `{meta['command']}`. Poisson + {READ_NOISE:g} e- read noise, seed {SEED}; "
        "wall times are indicative (compare ratios from one run).",
        "",
        "| frame (level) | e-/unit | own noise e- | sky e- | injected sigma at sky e- | "
        "noisy MAD sigma e- | p99.5 e- | bright sources | galaxies (annuli) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, f in results["frames"].items():
        lines.append(
            f"| {key} | {f['electrons_per_unit']:.3f} | {f['own_noise_e']:.2f} | "
            f"{f['sky_median_e']:.1f} | {f['injected_sigma_at_sky_e']:.2f} | "
            f"{f['noisy_mad_sigma_e']:.2f} | {f['truth_p99_5_e']:.0f} | {f['bright_sources']} | "
            f"{f['galaxies']} ({f['galaxy_annuli']}) |"
        )
    lines += [
        "",
        "PSNR/SSIM: data range p0.5-p99.5 of the truth. Sky rms: error in source-free sky, e- "
        "(ratio to the noisy frame's). Worst bias: worst 16x16 region's mean error in the noisy "
        "frame's MAD sigma (signed). Flux bias: median over bright sources, r = 3 px aperture. "
        "Peak: median restored/true peak. Profile bias: (restored - truth) / (truth - sky) of "
        f"the mean in elliptical annuli of the {GALAXIES} largest extended galaxies, out to 1 "
        "sigma above the sky, % (median / worst over the annuli).",
        "",
        "| frame | method | PSNR dB | SSIM | sky rms e- (ratio) | worst bias sigma | "
        "flux bias % | peak ratio | profile bias % | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_line(row) for row in results["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--ckpt",
        action="append",
        default=[],
        help="LABEL=PATH (repeatable); `pretrained` alone: the shipped default denoiser",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=BASE:OVERRIDES (repeatable): BASE's checkpoint (a --ckpt label) restored "
        "with these comma-separated infer.py overrides, e.g. raw=pretrained:postprocess=none",
    )
    parser.add_argument(
        "--adapt",
        metavar="METHOD[:FROM]",
        action="append",
        default=[],
        help="add a row training model=METHOD (n2v, r2r...) on each noisy frame, starting from "
        "FROM (default --adapt-from; scratch = random weights); repeatable",
    )
    parser.add_argument("--adapt-from", default="pretrained", help="checkpoint to adapt")
    parser.add_argument("--adapt-epochs", type=int, default=4, help="epochs of the adaptation")
    parser.add_argument("--adapt-patches", type=int, default=256, help="crops per epoch")
    parser.add_argument(
        "--frames", default=",".join(FRAMES), help=f"comma-separated: {', '.join(FRAMES)}"
    )
    parser.add_argument(
        "--figures", metavar="DIR", default=None,
        help="write one PNG per frame and level: outputs, errors and residuals of every method",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="192 px corner crops, one level")
    parser.add_argument("--out", default=str(RESULTS / "real_frames"), help="output stem")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from astrorestore.checkpoint import PRETRAINED, checkpoint_path

    ckpts = {}
    for spec in args.ckpt:
        label, sep, path = spec.partition("=") if "=" in spec else (spec, "=", spec)
        path = str(checkpoint_path(path)) if path == PRETRAINED else path
        if not sep or not Path(path).is_file():
            parser.error(
                f"--ckpt {spec!r}: give LABEL=PATH of an existing checkpoint, or pretrained"
            )
        ckpts[label] = path
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        base, _, overrides = rest.partition(":")
        if not label or base not in ckpts or not overrides:
            parser.error(f"--variant {spec!r}: give LABEL=BASE:OVERRIDES with BASE a --ckpt label")
        ckpts[label] = (ckpts[base], tuple(overrides.split(",")))
    adapts = []
    for spec in args.adapt:
        method, _, source = spec.partition(":")
        source = source or args.adapt_from
        if source not in (PRETRAINED, SCRATCH) and not Path(source).is_file():
            parser.error(
                f"--adapt {spec!r}: start from an existing checkpoint, pretrained or scratch"
            )
        adapts.append(
            {
                "method": method,
                "from": source,
                "epochs": args.adapt_epochs,
                "patches": args.adapt_patches,
            }
        )
    frames = [name.strip() for name in args.frames.split(",")]
    unknown = [name for name in frames if name not in FRAMES]
    if unknown or not frames:
        parser.error(f"--frames {args.frames!r}: choose among {', '.join(FRAMES)}")
    figures = None if args.figures is None else Path(args.figures)
    results = run(frames, ckpts, args.smoke, adapts, figures)
    meta = {"command": "python bench/bench_real_frames.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, **results}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, meta))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
