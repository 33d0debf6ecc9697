"""``infer.py ... truth=<file|folder> report=<dir>``: score restorations like an astronomer.

The restored outputs (in the input's units) are evaluated against their noisy inputs and, where
given, the clean truth with :mod:`astrorestore.evaluation`; a report folder (JSON, CSV, plots,
``summary.md``) is written at the end. Classical baselines (``method=gaussian`` ...) go through
the same path without a checkpoint, so every method is scored the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.data.corruption.noise_estimate import FrameNoise, estimate_frame_noise
from astrorestore.errors import UserError
from astrorestore.io.fits_hdus import frame_keywords, read_noise_map
from astrorestore.io.formats import PHOTOGRAPH_FORMATS, LoadedImage, image_format
from astrorestore.io.images import read_image


def resolve_truths(spec: Any, inputs: list[Path]) -> dict[Path, Path]:
    """Map each input to its truth file: one file for one input, or the same name in a folder."""
    if spec is None or str(spec).strip() == "":
        return {}
    path = Path(str(spec)).expanduser()
    if path.is_file():
        if len(inputs) != 1:
            raise UserError(
                f"truth={path} is one file but input matches {len(inputs)} files; pass a truth "
                "folder holding a file of the same name for each input"
            )
        return {inputs[0]: path}
    if not path.is_dir():
        raise UserError(f"truth={path} does not exist; pass the clean image or a folder of them")
    truths = {}
    for src in inputs:
        match = path / src.name
        if not match.is_file():
            raise UserError(
                f"no truth for {src.name} in {path}; every input needs a truth file of the same name"
            )
        truths[src] = match
    return truths


def check_truths_kept(pairs: list[tuple[Path, Path]], truths: dict[Path, Path]) -> None:
    """No output may be written over a truth file (output= and truth= the same folder): the
    truth was replaced by the restoration and then scored against itself (PSNR inf)."""
    kept = {truth.expanduser().resolve(): truth for truth in truths.values()}
    for _, dst in pairs:
        truth = kept.get(dst.expanduser().resolve())
        if truth is not None:
            raise UserError(
                f"output {dst} would be written over the truth {truth}; pass an output folder "
                "other than the truth folder"
            )


def check_truth(truth_path: Path, expected_shape: tuple[int, ...], hdu: Any) -> None:
    """A truth must be readable, of the output's shape and not entirely NaN (preflight)."""
    data = read_image(truth_path, hdu=hdu).data
    if data.shape != expected_shape:
        raise UserError(
            f"truth {truth_path.name} has shape {data.shape} but the output will be "
            f"{expected_shape}; pass the clean image of the same frame"
        )
    if not np.isfinite(data).any():
        raise UserError(f"truth {truth_path.name} has no finite pixels; check the file")


def units_note(src: Path, truth_path: Path) -> str | None:
    """A note when an input and its truth are of different kinds (a photograph in data numbers
    against a FITS or ``.npy`` frame in physical units): they are scored as if in the same
    units, which holds only if the files were made so."""
    photo = [image_format(p) in PHOTOGRAPH_FORMATS for p in (src, truth_path)]
    if photo[0] == photo[1]:
        return None
    kinds = {True: "a photograph (data numbers)", False: "a frame in physical units"}
    return (
        f"note: {src.name} is {kinds[photo[0]]} but its truth {truth_path.name} is "
        f"{kinds[photo[1]]}; they are scored as if in the same units: pass a truth of the "
        "input's kind if they are not"
    )


# eval.* settings: (test, what to pass). Checked before anything is written: they were only
# checked when the first frame was scored, after its output was on disk (and eval.gain=0 made
# bm3d_vst write an all-inf frame first).
_EVAL_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "fwhm": (lambda v: v > 0, "the PSF FWHM in pixels (> 0)"),
    "threshold": (lambda v: v > 0, "the detection threshold in background sigma (> 0)"),
    "match_radius": (lambda v: v > 0, "a radius in pixels (> 0), or null for max(1.5, 0.8 fwhm)"),
    "gain": (lambda v: v > 0, "the gain in e- per data unit (> 0), or null: from the frame"),
    "read_noise": (
        lambda v: v >= 0,
        "the read noise in the frame's units (>= 0), or null: from the frame",
    ),
}
#: eval.* settings whose null means "read it from the frame" (see ``frame_noise_model``).
_FROM_FRAME = ("match_radius", "gain", "read_noise")


#: Classical methods whose result depends on the frame's gain and read noise.
NOISE_MODEL_BASELINES = ("bilateral", "bm3d_vst")


def check_eval_settings(settings: dict[str, Any]) -> None:
    """One-line UserError for an ``eval.*`` value that cannot be used."""
    for key, (ok, what) in _EVAL_RULES.items():
        value = settings.get(key)
        if value is None and (key in _FROM_FRAME or key not in settings):
            continue
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not (number and np.isfinite(value) and ok(float(value))):
            raise UserError(f"eval.{key}={value!r} is invalid: pass {what}")


def classical_restorer(
    method: str, gain: float, read_noise: float
) -> Callable[[np.ndarray], np.ndarray]:
    """A whole-image classical restoration (grey images, physical units)."""
    from astrorestore.evaluation.baselines import get_baseline

    baseline = get_baseline(method)

    def restore(image: np.ndarray) -> np.ndarray:
        if image.ndim != 2:
            raise UserError(f"method={method} restores grey (H, W) images; got shape {image.shape}")
        finite = np.isfinite(image)
        filled = np.where(finite, image, np.median(image[finite])).astype(np.float32)
        out = np.asarray(baseline(filled, gain=gain, read_noise=read_noise), dtype=np.float32)
        out[~finite] = np.nan
        return out

    return restore


def _sky_noise_only(data: np.ndarray, why: str) -> FrameNoise:
    """The report's last resort when the frame cannot tell its gain (a small or flat frame):
    its own sky noise (robust sigma of the background) as a constant noise, no Poisson term."""
    from astrorestore.evaluation.detection import background_stats

    _, sigma = background_stats(np.asarray(data, np.float64))
    why = why.split(": ", 1)[-1].split("; pass", 1)[0]
    return FrameNoise(
        math.inf,
        float(sigma),
        f"unknown ({why}): Poisson term left out",
        "the frame's sky noise (robust sigma of its background)",
    )


def describe_noise(noise: FrameNoise) -> str:
    """``FrameNoise.describe()``, or what a sky-noise-only model is (no gain to state)."""
    if math.isinf(noise.gain):
        return f"constant sigma {noise.read_noise:.4g} units ({noise.read_noise_source}); gain {noise.gain_source}"
    return noise.describe()


def frame_noise_model(
    data: np.ndarray,
    keywords: Mapping[str, Any] | None,
    evaluation: Mapping[str, Any],
    err: np.ndarray | None = None,
    strict: bool = False,
) -> FrameNoise:
    """The frame's gain and read noise (frame units) for scoring and classical methods.

    ``eval.gain`` / ``eval.read_noise`` (read noise in the frame's units) win where given; the
    rest comes from the frame (:func:`estimate_frame_noise`: header GAIN/RDNOISE..., the ERR
    map, else a mean-variance fit on its pixels), never from a default. Each value says where it
    came from (``describe_noise``). With an ERR map the residual is judged by the map, so a
    frame whose gain cannot be told is still scored (its gain and read noise marked unused);
    without one such a frame is scored against its own sky noise (no Poisson term, stated),
    or refused when ``strict`` (a classical method that needs the gain).
    """
    gain, read = evaluation.get("gain"), evaluation.get("read_noise")
    if gain is not None and read is not None:
        return FrameNoise(float(gain), float(read), "eval.gain", "eval.read_noise")
    try:
        noise = estimate_frame_noise(
            data, keywords, err=err, gain=None if gain is None else float(gain)
        )
    except UserError as error:
        if err is not None:
            unused = "not needed: the ERR map is the noise model"
            return FrameNoise(1.0, 0.0, unused, unused, err, "ERR map")
        if strict:
            raise UserError(
                f"{error} (or eval.gain=<e-/unit> eval.read_noise=<units> for this run)"
            ) from None
        return _sky_noise_only(data, str(error))
    if gain is not None:
        noise = replace(noise, gain_source="eval.gain")
    if read is not None:
        noise = replace(noise, read_noise=float(read), read_noise_source="eval.read_noise")
    return noise


def noise_inputs(image: LoadedImage) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """``(header keywords, ERR/VAR noise map)`` of a FITS frame for :func:`frame_noise_model`
    (``(None, None)`` for other formats), from the bytes the reader already holds, if any."""
    if image.format != "fits":
        return None, None
    index = image.hdu_index or 0
    keywords = frame_keywords(image.path, index, image.content)
    return keywords, read_noise_map(image.path, index, image.content)


def image_noise_model(image: LoadedImage, evaluation: Mapping[str, Any]) -> FrameNoise:
    """:func:`frame_noise_model` (strict) of a loaded grey image for a classical method: a FITS
    frame's header keywords and ERR/VAR map are read from its file."""
    keywords, err = noise_inputs(image)
    err = err if err is not None and err.shape == image.data.shape else None
    return frame_noise_model(image.data, keywords, evaluation, err, strict=True)


class Scorer:
    """Collects per-image evaluations and writes one report folder at the end.

    Grey frames restored at their own size get the astronomy evaluation
    (:func:`astrorestore.evaluation.evaluate_image`); any other output with its truth
    (super-resolved, coloured, or the mean of samples) gets the two-axis evaluation
    (:func:`astrorestore.evaluation.generative.score_frame`), its consistency measured with
    ``forward``, the checkpoint's forward model (None: left out)."""

    def __init__(self, report_dir: Any, options: dict[str, Any], forward: Any = None) -> None:
        self.report_dir = Path(str(report_dir)).expanduser()
        if self.report_dir.exists() and not self.report_dir.is_dir():
            raise UserError(f"report={self.report_dir} exists and is not a folder; pass a folder")
        self.options = options
        self.forward = forward
        self.results: list[dict] = []
        self.generative: list[dict] = []
        self.lpips: Any = None
        self.skipped: list[str] = []

    def add(
        self,
        name: str,
        restored: np.ndarray,
        noisy: np.ndarray,
        truth: np.ndarray | None,
        unit: str | None = None,
        err: np.ndarray | None = None,
        std: np.ndarray | None = None,
        n_samples: int = 1,
        normalizer: Any = None,
        noise: FrameNoise | None = None,
    ) -> None:
        """Score one frame; ``unit`` is its BUNIT (None: assumed electrons, as for non-FITS);
        ``err`` its noise map (a FITS ERR extension), which replaces the gain/read-noise model;
        ``std`` the per-pixel std of ``n_samples`` samples whose mean ``restored`` is;
        ``noise`` its noise model (``frame_noise_model``; from ``noisy`` alone when None);
        ``normalizer`` the restorer's: one with a sky map (``background=map``) measures the
        frame's, and the empty sky is judged around it."""
        from astrorestore.evaluation import evaluate_image

        astronomy = restored.ndim == 2 and restored.shape == noisy.shape and std is None
        if truth is not None and not astronomy:
            from astrorestore.evaluation.generative import lpips_with_weights, score_frame

            if not self.generative:  # built once, for the run's first generative frame
                self.lpips = lpips_with_weights()
            self.generative.append(
                score_frame(name, restored, noisy, truth, self.forward, std, n_samples, self.lpips)
            )
            return
        if restored.ndim != 2 or restored.shape != noisy.shape:
            # Photometry compares a frame with its own input pixel by pixel.
            self.skipped.append(name)
            return
        options = dict(self.options)
        if unit:
            options["unit"] = unit
        if err is not None and err.shape == noisy.shape:
            options["err"] = err
        if noise is None:
            noise = frame_noise_model(noisy, None, self.options, options.get("err"))
        options |= {
            "gain": noise.gain,
            "read_noise": noise.read_noise,
            "noise_model": describe_noise(noise),
        }
        if getattr(normalizer, "per_pixel", False) and truth is not None:
            options["sky_map"] = normalizer.sky_map(noisy)
        self.results.append(evaluate_image(restored, noisy, truth, name=name, **options))

    def noise_model(
        self, noisy: np.ndarray, keywords: Mapping[str, Any] | None, err: np.ndarray | None
    ) -> FrameNoise | None:
        """The noise model a frame will be scored with (None for frames not scored: colour),
        found before its output is written so a frame whose noise cannot be told writes
        nothing."""
        if noisy.ndim != 2:
            return None
        usable = err if err is not None and err.shape == noisy.shape else None
        return frame_noise_model(noisy, keywords, self.options, usable)

    def write(self, title: str) -> Path | None:
        from astrorestore.evaluation import write_report

        if self.skipped:
            names = ", ".join(self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            print(
                f"report: {len(self.skipped)} image(s) not scored ({names}{more}: colour or "
                "rescaled output; the astronomy evaluation needs grey frames of the input's size)",
                flush=True,
            )
        if not self.results and not self.generative:
            return None
        path = write_report(self.results, self.report_dir, title=title, generative=self.generative)
        print(f"report: {path / 'summary.md'}", flush=True)
        return path


def output_shape(shape: tuple[int, ...], scale: int, out_channels: int) -> tuple[int, ...]:
    hw = (shape[0] * scale, shape[1] * scale)
    return (
        hw
        if out_channels == 1 and len(shape) == 2
        else (*hw, 3 if out_channels == 1 else out_channels)
    )


def check_scorable(
    shapes: dict[Path, tuple[int, ...]], scale: int, out_channels: int, name: str
) -> None:
    """``report=`` evaluates grey frames restored at their own size (photometry compares a
    frame with its input pixel by pixel) and, against a truth, generative outputs (the two
    axes); refuse a run in which no output would be scored, instead of writing every output
    and then no report."""
    if any(
        len(shape) == 2 and output_shape(shape, scale, out_channels) == shape
        for shape in shapes.values()
    ):
        return
    src, shape = next(iter(shapes.items()))
    raise UserError(
        "report= scores grey (H, W) frames restored at their own size and no output of this "
        f"run is one ({name} gives {src.name} {shape} as {output_shape(shape, scale, out_channels)}"
        "), so nothing would be scored; pass truth=<file|folder> to score colour or "
        "rescaled outputs on the distortion and realism axes, or drop report="
    )
