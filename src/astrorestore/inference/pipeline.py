"""Chains of restorers over a folder: e.g. grey -> colorize -> (bilateral pre-filter) -> x2.

``python pipeline.py ckpt_paths='[colorize.ckpt,sr3.ckpt]' input=grey/ output=out/
references=truth/`` restores every image through each checkpoint in turn (each stage is what
``infer.py`` does with one checkpoint: tiling, normalisation, colour conventions), optionally
smooths the intermediate image with kornia's edge-preserving bilateral filter before every
super-resolving stage (it removes the colorizer's speckle the super-resolver would sharpen),
writes the final images and a report (``report.csv``, ``report.json``) with per-image and
average/best SSIM and PSNR against a reference image of the same file name, when given.

``sample_steps=`` and ``sampler=`` override the sampling of every stochastic stage (SR3) through
the same :meth:`Restorer.set_sampling` ``infer.py`` uses; deterministic stages (the colorizer)
have nothing to sample and are left as they are, so one setting serves a mixed chain. A chain
with no stochastic stage refuses them, as ``infer.py`` does for a deterministic checkpoint.
``seed=`` seeds every stochastic stage; the report records each stage's sampling.
``self_ensemble=`` (2, 4 or 8) is the converse: every deterministic stage restores that many
flipped and rotated copies and averages them (as ``infer.py``'s), and stochastic stages are left
alone; a chain of stochastic stages only refuses it.

Metrics are computed on the images as written (an 8-bit output clipped and rounded, as the
user receives it) scaled to [0, 1] by each file's full scale: 255 for 8-bit and 65535 for
16-bit files, and for float files 1, 255 or 65535 from their input's peak (as the photo
normaliser does), so 8-bit references and float outputs compare. ``report.json`` states this
data range. Every input, every stage of the chain and every reference (present, of the final
shape) is checked before the first output is written.
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astrorestore.data.normalization.photo import full_scale
from astrorestore.errors import UserError
from astrorestore.evaluation.writer import to_jsonable
from astrorestore.inference.restore import check_image, restore_image
from astrorestore.inference.restorer import Restorer
from astrorestore.inference.runner import preflight
from astrorestore.inference.scoring import output_shape
from astrorestore.inference.self_ensemble import check_self_ensemble, self_ensemble
from astrorestore.inference.tiling import check_overlap
from astrorestore.io.formats import LoadedImage
from astrorestore.io.images import atomic_path, check_output, read_image, write_image
from astrorestore.io.paths import resolve_io


def bilateral(
    image: np.ndarray, kernel_size: int, sigma_color: float, sigma_space: float
) -> np.ndarray:
    """Bilateral filter of an (H, W) or (H, W, 3) image; ``sigma_color`` in [0, 1] units."""
    import kornia

    if kernel_size < 3 or kernel_size % 2 == 0:
        raise UserError(f"bilateral.kernel_size={kernel_size} is invalid: use an odd integer >= 3")
    full = full_scale(float(np.nanmax(image)))
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / full)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    out = kornia.filters.bilateral_blur(
        x, (kernel_size, kernel_size), float(sigma_color), (float(sigma_space),) * 2
    )
    out = out[0, 0] if image.ndim == 2 else out[0].permute(1, 2, 0)
    return out.numpy() * full


PSNR_DATA_RANGE = (
    "PSNR/SSIM with data range 1: each image as written, divided by its file's full scale "
    "(255 for 8-bit, 65535 for 16-bit files; 1, 255 or 65535 from the peak for float files) "
    "and clipped to [0, 1]"
)


def _unit(image: np.ndarray, scale: float | None = None) -> np.ndarray:
    scale = full_scale(float(np.nanmax(image))) if scale is None else scale
    return image.astype(np.float64) / scale


def file_full_scale(image: LoadedImage, peak_of: np.ndarray | None = None) -> float:
    """The full scale of a file's pixels: its integer type's maximum (8- or 16-bit photographs),
    else 1, 255 or 65535 from the peak of ``peak_of`` (default: the image itself)."""
    dtype = np.dtype(image.source_dtype)
    if image.format != "fits" and dtype.kind == "u" and dtype.itemsize <= 2:
        return float(np.iinfo(dtype).max)
    return full_scale(float(np.nanmax(image.data if peak_of is None else peak_of)))


def image_scores(
    restored: np.ndarray,
    reference: np.ndarray,
    restored_scale: float | None = None,
    reference_scale: float | None = None,
) -> dict[str, float]:
    """SSIM and PSNR of two images of the same shape, both scaled to [0, 1] (by the given
    full scales, or by 1, 255 or 65535 from each image's peak)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if restored.shape != reference.shape:
        raise UserError(
            f"reference of shape {reference.shape} does not match the output {restored.shape}; "
            "pass references of the final size (after super-resolution)"
        )
    a = np.clip(_unit(restored, restored_scale), 0, 1)
    b = np.clip(_unit(reference, reference_scale), 0, 1)
    channel_axis = -1 if a.ndim == 3 else None
    return {
        "ssim": float(structural_similarity(a, b, data_range=1.0, channel_axis=channel_axis)),
        "psnr": float(peak_signal_noise_ratio(b, a, data_range=1.0)),
    }


def set_chain_sampling(
    restorers: list[Restorer], steps: int | None = None, sampler: str | None = None
) -> list[dict[str, Any]]:
    """Apply a sampling override to every stochastic stage; returns, per stage, what it
    samples with (``None`` for a deterministic stage)."""
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1
    ):
        raise UserError(f"sample_steps={steps!r} is invalid: pass sample_steps=<integer >= 1>")
    if (steps is not None or sampler is not None) and not any(r.stochastic for r in restorers):
        raise UserError(
            "sample_steps and sampler apply to diffusion stages, and no checkpoint of this "
            "chain samples (all restore in one deterministic pass); drop them"
        )
    sampling: list[dict[str, Any]] = []
    for restorer in restorers:
        if restorer.stochastic:
            try:
                restorer.set_sampling(steps, sampler)
            except UserError as exc:
                raise UserError(f"stage {restorer.name}: {exc}") from None
        fn = restorer.fn
        sampling.append(
            {"steps": getattr(fn, "steps", None), "sampler": getattr(fn, "sampler", None)}
            if restorer.stochastic
            else None
        )
    return sampling


def ensemble_chain(restorers: list[Restorer], passes: Any) -> list[Restorer]:
    """Every deterministic stage as the mean of ``passes`` flipped/rotated passes; stochastic
    stages are left alone (a mean of samples is not a sample). A chain with no deterministic
    stage refuses ``passes`` > 1 instead of ignoring it."""
    passes = check_self_ensemble(passes)
    if passes == 1:
        return restorers
    if all(r.stochastic for r in restorers):
        raise UserError(
            f"self_ensemble={passes} averages deterministic stages, and every stage of this chain "
            "samples (diffusion); drop self_ensemble"
        )
    return [r if r.stochastic else self_ensemble(r, passes) for r in restorers]


def _check_chain(
    src: Path,
    dst: Path,
    source: LoadedImage,
    restorers: list[Restorer],
    tile: int,
    reference_dir: Path | None,
) -> None:
    """Raise UserError if a later stage cannot take what the stage before it gives for
    ``src`` (read as ``source``), if the final image cannot be written to ``dst``, or if its
    reference is missing or not of the chain's final shape."""
    shape = source.data.shape
    for index, restorer in enumerate(restorers):
        if index:
            try:
                check_image(np.broadcast_to(np.float32(0), shape), restorer, tile)
            except UserError as exc:
                previous = restorers[index - 1].name
                raise UserError(
                    f"{src}: stage {index + 1} ({restorer.name}) cannot take the output of "
                    f"{previous} (shape {shape}): {exc}; check the order of ckpt_paths"
                ) from None
        shape = output_shape(shape, restorer.scale, restorer.out_channels)
    try:
        check_output(dst, source, colour=len(shape) == 3)
    except UserError as exc:
        raise UserError(f"{src}: {exc}") from None
    if reference_dir is None:
        return
    ref_path = reference_dir / src.name
    if not ref_path.is_file():
        raise UserError(
            f"no reference for {src.name} in {reference_dir}; every input needs a reference "
            "of the same name, or drop references="
        )
    ref_shape = read_image(ref_path).data.shape
    if ref_shape != shape:
        raise UserError(
            f"reference {ref_path} has shape {ref_shape} but the chain's output for "
            f"{src.name} will be {shape}; pass references of the final size and channels "
            "(after super-resolution)"
        )


def run_pipeline(
    restorers: list[Restorer],
    input_spec: str,
    output_dir: str,
    references: str | None = None,
    bilateral_filter: dict[str, Any] | None = None,
    tile: int = 64,
    overlap: int = 16,
    batch_size: int = 4,
    seed: int = 0,
    sample_steps: int | None = None,
    sampler: str | None = None,
    self_ensemble: int = 1,
) -> dict[str, Any]:
    """Run the chain over every input; returns (and writes) the report. ``sample_steps`` and
    ``sampler`` (None keeps each checkpoint's exported ones) and ``seed`` apply to the
    stochastic stages only (see the module docstring); ``self_ensemble`` (2, 4, 8 flipped and
    rotated passes averaged, as ``infer.py``'s) to the deterministic ones only."""
    if not restorers:
        raise UserError("ckpt_paths is empty: pass ckpt_paths='[first.ckpt,second.ckpt]'")
    # Settings first, as infer.py does: a too-large overlap was only refused on the first
    # image large enough to be tiled, after the smaller ones were written.
    check_overlap(tile, overlap)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed={seed!r} is invalid: pass seed=<integer >= 0>")
    sampling = set_chain_sampling(restorers, sample_steps, sampler)
    restorers = ensemble_chain(restorers, self_ensemble)
    output = Path(output_dir)
    if output.suffix:
        raise UserError(f"output={output_dir} must be a folder for a pipeline; pass output=<dir>/")
    pairs = resolve_io(input_spec, str(output) + "/")
    reference_dir = _reference_folder(references, output)
    # Every input checked before the first output is written: against the first stage, then
    # the rest of the chain and the references, from the shapes each stage gives (one reading).
    check = partial(_check_chain, restorers=restorers, tile=tile, reference_dir=reference_dir)
    preflight(pairs, None, tile, restorers[0], check=check)
    history = _history(restorers, sampling, seed, self_ensemble)
    chain = partial(
        _run_chain,
        restorers=restorers,
        bilateral_filter=bilateral_filter,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        seed=seed,
    )
    rows = [_restore_one(src, dst, chain, history, restorers, reference_dir) for src, dst in pairs]
    report = _report(restorers, sampling, seed, self_ensemble, rows)
    _write_report(output, report, rows)
    return report


def _reference_folder(references: str | None, output: Path) -> Path | None:
    """The ``references=`` folder, checked: it exists and is not where outputs are written."""
    if not references:
        return None
    reference_dir = Path(references)
    if not reference_dir.is_dir():
        raise UserError(f"references={references} is not a folder; pass references=<dir>")
    if reference_dir.resolve() == output.resolve():
        raise UserError(
            f"references={references} is the output folder: the outputs would replace the "
            "references they are scored against; pass another output=<dir>"
        )
    return reference_dir


def _history(restorers: list[Restorer], sampling: list, seed: int, self_ensemble: int) -> list[str]:
    """The output file's history lines: the chain, and how each stage restored."""
    history = [f"astrorestore pipeline: {' -> '.join(r.name for r in restorers)}"]
    for restorer, stage in zip(restorers, sampling, strict=True):
        if stage is not None:
            steps = f"{stage['sampler']} {stage['steps']} steps"
            history.append(f"stage {restorer.name}: stochastic, {steps}, seed={seed}")
        elif self_ensemble > 1:
            passes = f"mean of {self_ensemble} flipped/rotated passes"
            history.append(f"stage {restorer.name}: self-ensemble, {passes}")
    return history


def _run_chain(
    image: np.ndarray,
    restorers: list[Restorer],
    bilateral_filter: dict[str, Any] | None,
    tile: int,
    overlap: int,
    batch_size: int,
    seed: int,
) -> np.ndarray:
    """One image through every stage (the bilateral filter before each up-sampling stage)."""
    for restorer in restorers:
        if bilateral_filter and restorer.scale > 1:
            image = bilateral(image, **bilateral_filter)
        image = restore_image(image, restorer, tile, overlap, batch_size, False, seed)
    return image


def _restore_one(
    src: Path,
    dst: Path,
    chain: Any,
    history: list[str],
    restorers: list[Restorer],
    reference_dir: Path | None,
) -> dict[str, Any]:
    """Restore ``src`` through the chain into ``dst``; its report row (scored against its
    reference if there is one)."""
    source = read_image(src)
    image = chain(source.data)
    total_scale = int(np.prod([r.scale for r in restorers]))
    write_image(dst, image, source, history, {}, total_scale)
    row: dict[str, Any] = {"image": src.name, "output": str(dst)}
    if reference_dir is not None:
        # Scored as written (an 8-bit output clipped and rounded), on each file's scale.
        written = read_image(dst)
        reference = read_image(reference_dir / src.name)
        row.update(
            image_scores(
                written.data,
                reference.data,
                file_full_scale(written, peak_of=source.data),
                file_full_scale(reference),
            )
        )
    print(f"{src} -> {dst}", flush=True)
    return row


def _report(
    restorers: list[Restorer], sampling: list, seed: int, self_ensemble: int, rows: list[dict]
) -> dict[str, Any]:
    """The pipeline's report: the chain, its sampling, every image's row and, where images
    were scored, their mean scores."""
    scored = [r for r in rows if "ssim" in r]
    report: dict[str, Any] = {
        "stages": [r.ckpt_path for r in restorers],
        "sampling": sampling,
        "seed": seed,
        "self_ensemble": self_ensemble,
        "images": rows,
    }
    if scored:
        report["data_range"] = PSNR_DATA_RANGE
        report["summary"] = {
            "n_scored": len(scored),
            "mean_ssim": float(np.mean([r["ssim"] for r in scored])),
            "best_ssim": float(np.max([r["ssim"] for r in scored])),
            "mean_psnr": float(np.mean([r["psnr"] for r in scored])),
        }
    return report


def _write_report(output: Path, report: dict[str, Any], rows: list[dict]) -> None:
    """``report.json`` and ``report.csv`` (a MEAN row when images were scored)."""
    # Written like the images: to a temporary file renamed into place, so an earlier report
    # is never left half-overwritten.
    with atomic_path(output / "report.json") as tmp:
        # Strict JSON: a perfect match's infinite PSNR is written as null, not "Infinity".
        tmp.write_text(json.dumps(to_jsonable(report), indent=2, allow_nan=False))
    with atomic_path(output / "report.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "output", "ssim", "psnr"])
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in writer.fieldnames})
        if "summary" in report:
            s = report["summary"]
            writer.writerow({"image": "MEAN", "ssim": s["mean_ssim"], "psnr": s["mean_psnr"]})
