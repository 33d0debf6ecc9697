"""Batch inference: resolve inputs, check them all, then restore and write each file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import astrorestore
from astrorestore.errors import UserError
from astrorestore.inference.acceleration import accelerate, check_precision
from astrorestore.inference.restore import check_image, fit_overlap, fit_tile, restore_image
from astrorestore.inference.restorer import Restorer
from astrorestore.inference.scoring import (
    Scorer,
    check_eval_settings,
    check_scorable,
    check_truth,
    check_truths_kept,
    classical_restorer,
    output_shape,
    resolve_truths,
    units_note,
)
from astrorestore.inference.self_ensemble import check_self_ensemble, self_ensemble
from astrorestore.inference.tiling import check_overlap
from astrorestore.io.fits_hdus import read_noise_map
from astrorestore.io.formats import PHOTOGRAPH_FORMATS, LoadedImage
from astrorestore.io.images import check_output, read_image, write_image
from astrorestore.io.paths import resolve_io
from astrorestore.postprocess import build_postprocess, check_postprocess
from astrorestore.postprocess.psf_cores import check_frame

LoadRestorer = Callable[[str, str], Restorer]

_USAGE = (
    "python infer.py ckpt_path=<file.ckpt> (or method=<classical method>) "
    "input=<file|folder|glob> output=<file|folder> [truth=<file|folder>] [report=<dir>]"
)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def _require(cfg: Any, key: str) -> str:
    value = _get(cfg, key)
    if value is None or str(value).strip() == "":
        raise UserError(f"{key} is required: {_USAGE}")
    return str(value)


def _as_int(cfg: Any, key: str, default: int, minimum: int) -> int:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        try:
            value = int(str(value))
        except ValueError:
            raise UserError(f"{key}={value!r} must be an integer; pass {key}=<int>") from None
    if value < minimum:
        raise UserError(f"{key}={value} must be at least {minimum}; pass {key}=<int >= {minimum}>")
    return int(value)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' if available else 'cpu'; 'cuda' without a GPU is a user error."""
    device = str(device).strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device={device} but no CUDA GPU is available; pass device=cpu or auto"
            )
        return device
    if device == "cpu":
        return device
    raise UserError(f"device={device!r} is not supported; pass device=auto, cpu or cuda")


def preflight(
    pairs: list[tuple[Path, Path]],
    hdu: Any,
    tile: int,
    restorer: Restorer | None,
    grey_only: bool = False,
    check: Callable[[Path, Path, LoadedImage], None] | None = None,
) -> dict[Path, tuple[int, ...]]:
    """Every input is read once before anything is written, so one bad file in a batch fails
    the run up front instead of after hours of work with half the outputs on disk. ``check``
    adds the caller's own checks of each (input, output, loaded input), in the same reading.
    Returns each input's shape, so later checks need not read the inputs again."""
    shapes: dict[Path, tuple[int, ...]] = {}
    for src, dst in pairs:
        image = read_image(src, hdu=hdu)
        data = image.data
        try:
            colour = data.ndim == 3 or (restorer is not None and restorer.out_channels == 3)
            check_output(dst, image, colour=colour)
            if grey_only:
                check_frame(data)
            if restorer is not None:
                check_image(data, restorer, tile)
            elif data.ndim != 2 or not np.isfinite(data).any():
                raise UserError(
                    "classical methods restore grey images with finite pixels; got shape "
                    f"{data.shape}"
                )
        except UserError as exc:
            raise UserError(f"{src}: {exc}") from None
        if check is not None:
            check(src, dst, image)
        if image.extra.get("alpha"):
            print(f"note: {src}: its alpha (transparency) channel is dropped; {dst} is RGB")
        shapes[src] = data.shape
        del data, image
    return shapes


def frame_unit(source: Any) -> str | None:
    """The unit the report labels a frame's values with: a FITS frame's BUNIT (None: assumed
    electrons, as for ``.npy`` arrays); photographs (PNG, JPEG, TIFF) hold data numbers."""
    unit = source.extra.get("unit")
    if unit is None and source.format in PHOTOGRAPH_FORMATS:
        return "DN"
    return unit


def run_inference(cfg: Any, load_restorer: LoadRestorer) -> list[Path]:
    """Restore every input of ``cfg`` and return the written output paths.

    ``cfg`` keys: ckpt_path, input, output, tile_size, overlap, batch_size, device
    ('auto'|'cpu'|'cuda'), hdu (None|int|str), progress (bool), seed (int; stochastic models),
    sample_steps (int) and sampler (str): override a diffusion checkpoint's exported ones;
    postprocess (stages laid over the checkpoint's, see :mod:`astrorestore.postprocess`);
    precision ('fp32'|'bf16'), channels_last, compile (speed switches, see
    :mod:`astrorestore.inference.acceleration`); self_ensemble (1, 2, 4, 8: flipped and
    rotated passes averaged, see :mod:`astrorestore.inference.self_ensemble`).
    """
    method = _get(cfg, "method")
    if method and _get(cfg, "ckpt_path"):
        raise UserError(f"pass either ckpt_path= or method=, not both: {_USAGE}")
    ckpt_path = None if method else _require(cfg, "ckpt_path")
    input_spec = _require(cfg, "input")
    output_spec = _require(cfg, "output")
    tile = _as_int(cfg, "tile_size", 256, 1)
    overlap = _as_int(cfg, "overlap", 32, 0)
    batch_size = _as_int(cfg, "batch_size", 8, 1)
    check_overlap(tile, overlap)
    seed = _as_int(cfg, "seed", 0, 0)
    hdu = _get(cfg, "hdu")
    progress = bool(_get(cfg, "progress", False))
    device = resolve_device(_get(cfg, "device", "auto"))
    precision = check_precision(_get(cfg, "precision", "fp32"))
    passes = check_self_ensemble(_get(cfg, "self_ensemble", 1))

    postprocess = check_postprocess(_get(cfg, "postprocess"))
    if method and postprocess.get("give_back") is not None:
        raise UserError(
            f"postprocess.give_back applies to a checkpoint's network, not to method={method}: "
            "use postprocess=none or psf_cores"
        )
    if method and passes > 1:
        raise UserError(
            f"self_ensemble={passes} averages a network's passes, not method={method}'s: drop it"
        )
    evaluation = dict(_get(cfg, "eval", {}) or {})
    check_eval_settings(evaluation)
    gain = float(evaluation.get("gain", 1.0))
    tiling: Callable[[np.ndarray], str] | None = None  # the HISTORY line of a frame's tiles
    if method:
        name, scale, out_channels = str(method), 1, 1
        classical = classical_restorer(
            name, float(evaluation.get("gain", 1.0)), float(evaluation.get("read_noise", 5.0))
        )
        restore = classical
        history = [f"astrorestore: restored with the classical method {name}"]
        checkpoint_name = "none"
        stages = build_postprocess(postprocess, gain=gain)
    else:
        # The checkpoint first: a wrong model is the more basic mistake than a wrong image.
        restorer = load_restorer(
            ckpt_path, device, **({"postprocess": postprocess, "gain": gain} if postprocess else {})
        )
        stages = restorer.postprocess
        steps = _get(cfg, "sample_steps")
        restorer.set_sampling(
            None if steps is None else _as_int(cfg, "sample_steps", 1, 1), _get(cfg, "sampler")
        )
        restorer = accelerate(
            restorer,
            precision=precision,
            channels_last=bool(_get(cfg, "channels_last", True)),
            compile=bool(_get(cfg, "compile", False)),
            batch_size=batch_size,
        )
        restorer = self_ensemble(restorer, passes)
        name, scale, out_channels = restorer.name, restorer.scale, restorer.out_channels

        def restore(data: np.ndarray) -> np.ndarray:
            return restore_image(data, restorer, tile, overlap, batch_size, progress, seed)

        def tiling(data: np.ndarray) -> str:
            fitted = fit_tile(data.shape[0], data.shape[1], tile, restorer.size_multiple)
            smaller = " (fitted to the image)" if fitted != tile else ""
            return (
                f"tile_size={fitted}{smaller} overlap={fit_overlap(tile, fitted, overlap)} "
                "(tiled, raised-cosine blend)"
            )

        history = [
            f"astrorestore: restored with {restorer.name}",
            f"checkpoint: {restorer.ckpt_path}",
        ]
        if precision != "fp32":
            history.append(f"network run in {precision} (autocast)")
        if passes > 1:
            history.append(f"self-ensemble: mean of {passes} flipped/rotated passes")
        if scale > 1:
            history.append(f"super-resolved x{scale}; WCS rescaled to the new pixel grid")
        if restorer.stochastic:
            history.append(f"stochastic restorer, seed={seed}")
        history.extend(stages.describe(tiles_only=True))
        checkpoint_name = Path(str(restorer.ckpt_path)).name
    if stages.psf_cores is not None:
        stages.psf_cores.progress = progress
    pairs = resolve_io(input_spec, output_spec)
    truths = resolve_truths(_get(cfg, "truth"), [src for src, _ in pairs])
    check_truths_kept(pairs, truths)
    report = _get(cfg, "report")
    scorer = Scorer(report, evaluation) if report else None
    if truths and scorer is None:
        raise UserError("truth= is only used for scoring: pass report=<dir> as well")
    if report:
        from astrorestore.evaluation.writer import check_report_dir

        check_report_dir(report, [*(path for pair in pairs for path in pair), *truths.values()])
    shapes = preflight(pairs, hdu, tile, None if method else restorer, stages.on_frames)
    if scorer is not None:
        for src, truth_path in truths.items():
            check_truth(truth_path, output_shape(shapes[src], scale, out_channels), hdu)
            note = units_note(src, truth_path)
            if note:
                print(note)
        check_scorable(shapes, scale, out_channels, name)

    keywords = {
        "ARMODEL": (name, "astrorestore model"),
        "ARCKPT": (checkpoint_name, "checkpoint file"),
        "ARVERS": (astrorestore.__version__, "astrorestore version"),
    }
    written: list[Path] = []
    for src, dst in pairs:
        start = time.perf_counter()
        source = read_image(src, hdu=hdu)
        restored = restore(source.data)
        frame_history = history
        if tiling is not None:
            frame_history = history[:2] + [tiling(source.data)] + history[2:]
        if stages.on_frames:
            restored, lines = stages.frame(source.data, restored)
            frame_history = frame_history + lines
            for line in lines:
                print(f"{src}: {line}", flush=True)
        write_image(dst, restored, source, frame_history, keywords, scale)
        if scorer is not None:
            truth = read_image(truths[src], hdu=hdu).data if src in truths else None
            # A FITS input's noise map (JWST, HST ERR) is its own noise model, in its units.
            err = read_noise_map(src, source.hdu_index) if source.format == "fits" else None
            scorer.add(src.name, restored, source.data, truth, frame_unit(source), err)
        height, width = source.data.shape[:2]
        del source, restored
        elapsed = time.perf_counter() - start
        shape = f"{height}x{width}"
        if scale > 1:
            shape += f" -> {height * scale}x{width * scale}"
        print(f"{src} -> {dst} ({shape}, {elapsed:.1f} s)", flush=True)
        written.append(dst)
    if scorer is not None:
        scorer.write(f"astrorestore evaluation: {name}")
    return written
