"""Restore the frames of a run, many at once: read ahead, restore, write behind, keep count.

One process (``infer.py`` without ``trainer=``): a ``DataLoader`` with ``workers`` processes
reads and decodes the next FITS files while the device restores the current frame, and a
writer thread writes (and scores) the previous one, so the device waits for neither disk nor
decoding. :class:`FrameLog` is the bookkeeping both this loop and Lightning's predict loop
(:mod:`astrorestore.inference.predict`) use: the per-file line, the progress bar (frames
done / total, MP/s, time left), the manifest, and the failed frames, which never stop a folder
run but make it end with an error naming them.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astrorestore.inference.frames import Frame, FrameJob, FrameReader, frame_error, frame_loader
from astrorestore.inference.manifest import (
    FrameRecord,
    Manifest,
    failed_frames_error,
    outcome_line,
)
from astrorestore.inference.method import Method
from astrorestore.inference.scoring import Scorer, check_scorable, noise_inputs
from astrorestore.io.formats import PHOTOGRAPH_FORMATS
from astrorestore.io.images import read_image, write_image


def frame_unit(source: Any) -> str | None:
    """The unit the report labels a frame's values with: a FITS frame's BUNIT (None: assumed
    electrons, as for ``.npy`` arrays); photographs (PNG, JPEG, TIFF) hold data numbers."""
    unit = source.extra.get("unit")
    if unit is None and source.format in PHOTOGRAPH_FORMATS:
        return "DN"
    return unit


@dataclass
class Restoration:
    """A frame's restored pixels, its HISTORY lines, when its work began and, for the mean of
    ``num_samples`` > 1 samples, their per-pixel standard deviation."""

    frame: Frame
    pixels: np.ndarray
    history: list[str]
    started: float
    std: np.ndarray | None = None


@dataclass
class RunPlan:
    """The jobs of a run and where its bookkeeping goes. ``folder``: the output folder of a
    folder/glob run (its manifest lives there); None for a single file, whose problems are
    raised at once instead of recorded."""

    jobs: list[FrameJob]
    folder: Path | None
    scorer: Scorer | None = None
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def strict(self) -> bool:
        return self.folder is None


def restore_frame(method: Method, frame: Frame) -> Restoration:
    """Check and restore one read frame (the device's part of the work)."""
    started = time.perf_counter() - frame.read_s
    image = frame.image
    assert image is not None
    method.check_frame(image, frame.job.dst, frame.job.truth)
    pixels, history, std = method.restore(image)
    return Restoration(frame, pixels, history, started, std)


def restore_group(method: Method, frames: list[Frame]) -> list[Restoration]:
    """Restore checked frames of one :meth:`Method.batch_key` in shared network passes."""
    images = [frame.image for frame in frames]
    assert all(image is not None for image in images)
    results = method.restore_group(images)  # type: ignore[arg-type]
    now = time.perf_counter()
    return [
        Restoration(frame, pixels, history, now - frame.read_s, std)
        for frame, (pixels, history, std) in zip(frames, results, strict=True)
    ]


def write_restoration(method: Method, restoration: Restoration, scorer: Scorer | None) -> None:
    """Write one restored frame (and score it, with ``report=``): the host's part."""
    frame, image = restoration.frame, restoration.frame.image
    assert image is not None
    keywords = method.keywords(frame.fingerprint)
    samples = method.settings.num_samples
    noise = err = None
    if scorer is not None:
        # A FITS input's noise map (JWST, HST ERR) is its own noise model, in its units; its
        # gain and read noise come from its header (or its pixels), found before anything is
        # written: a frame whose noise model cannot be told is refused with nothing written.
        # The frame's bytes, read once by the survey's reader, serve both look-ups.
        header, err = noise_inputs(image)
        noise = scorer.noise_model(image.data, header, err)
    write_image(
        frame.job.dst,
        restoration.pixels,
        image,
        restoration.history,
        keywords,
        method.scale,
        std=restoration.std,
        std_note=f"per-pixel standard deviation of {samples} samples, in the output's units",
    )
    if scorer is not None:
        truth_path = frame.job.truth
        truth = read_image(truth_path, hdu=method.settings.hdu).data if truth_path else None
        normalizer = getattr(method.restorer, "normalizer", None)
        scorer.add(
            image.path.name,
            restoration.pixels,
            image.data,
            truth,
            frame_unit(image),
            err,
            std=restoration.std,
            n_samples=samples,
            noise=noise,
            normalizer=normalizer,
        )


class FrameLog:
    """Per-file lines, the frame progress bar, the manifest and the failures of a run."""

    def __init__(
        self,
        plan: RunPlan,
        method: Method,
        total: int,
        progress: bool,
        manifest_path: Path | None = None,
        rank: int = 0,
    ) -> None:
        self.plan, self.method, self.total, self.rank = plan, method, total, rank
        self.manifest = (
            Manifest(manifest_path, plan.run_info, total) if manifest_path is not None else None
        )
        self.written: list[Path] = []
        self.failures: list[str] = []
        self.shapes: dict[Path, tuple[int, ...]] = {}
        self.megapixels = 0.0
        self.started = time.perf_counter()
        self._bar = _FrameBar(total) if progress else None

    def done(self, restoration: Restoration) -> None:
        frame = restoration.frame
        image = frame.image
        assert image is not None
        seconds = time.perf_counter() - restoration.started
        height, width = image.data.shape[:2]
        shape = f"{height}x{width}"
        if self.method.scale > 1:
            shape += f" -> {height * self.method.scale}x{width * self.method.scale}"
        print(f"{frame.job.src} -> {frame.job.dst} ({shape}, {seconds:.1f} s)", flush=True)
        self.shapes[frame.job.src] = image.data.shape
        self.megapixels += frame.megapixels
        self.written.append(frame.job.dst)
        self._record(frame, "done", seconds)

    def skipped(self, frame: Frame) -> None:
        print(
            f"{frame.job.src}: skipped, {frame.job.dst} holds its restoration (same input, "
            "checkpoint and settings; overwrite=true restores it again)",
            flush=True,
        )
        self.written.append(frame.job.dst)
        self._record(frame, "skipped", frame.read_s)

    def failed(self, frame: Frame, error: str) -> None:
        print(f"failed: {error}", flush=True)
        self.failures.append(error)
        self._record(frame, "failed", frame.read_s, error)

    def _record(self, frame: Frame, status: str, seconds: float, error: str | None = None) -> None:
        if self._bar is not None:
            self._bar.advance(self.megapixels, time.perf_counter() - self.started)
        if self.manifest is None:
            return
        fingerprint = frame.fingerprint
        megapixels = frame.megapixels if status == "done" else 0.0
        self.manifest.add(
            FrameRecord(
                input=str(frame.job.src),
                output=str(frame.job.dst),
                status=status,
                seconds=round(seconds, 4),
                megapixels=round(megapixels, 4),
                mp_per_s=round(megapixels / seconds, 3) if seconds > 0 and megapixels else 0.0,
                error=error,
                input_sha256=fingerprint.input if fingerprint else None,
                checkpoint_sha256=fingerprint.checkpoint if fingerprint else None,
                settings_hash=fingerprint.settings if fingerprint else None,
                rank=self.rank,
            )
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.manifest is not None:
            self.manifest.save()


def check_outcome(log: FrameLog, manifest: Path | None) -> None:
    """End a run with the report (if any) and an error if a frame failed or nothing scored."""
    scorer = log.plan.scorer
    if scorer is not None:
        if not scorer.results and not scorer.generative and log.shapes:
            check_scorable(log.shapes, log.method.scale, log.method.out_channels, log.method.name)
        scorer.write(f"astrorestore evaluation: {log.method.name}")
    if log.failures:
        raise failed_frames_error(log.failures, log.total, manifest)


def restore_frames(method: Method, plan: RunPlan, reader: FrameReader) -> list[Path]:
    """Restore every job in this process; returns the outputs written or already there."""
    settings = method.settings
    manifest_path = None if plan.folder is None else plan.folder / "manifest.json"
    log = FrameLog(plan, method, len(plan.jobs), settings.progress, manifest_path)
    # A single file has nothing to read ahead; its errors are raised as they come.
    workers = 0 if plan.strict else settings.workers
    pending: tuple[Restoration, Future] | None = None
    group: list[Frame] = []  # checked frames of one batch key, waiting for a shared pass

    def finish(item: tuple[Restoration, Future]) -> None:
        restoration, future = item
        try:
            future.result()
        except Exception as exc:
            if plan.strict:
                raise
            log.failed(restoration.frame, frame_error(restoration.frame.job.src, exc))
            return
        log.done(restoration)

    def write(restoration: Restoration) -> None:
        nonlocal pending
        if pending is not None:  # one write in flight: memory stays bounded
            finish(pending)
        pending = (restoration, writer.submit(write_restoration, method, restoration, plan.scorer))

    def restore(frame: Frame, checked: bool) -> None:
        try:
            if checked:
                restoration = restore_group(method, [frame])[0]
            else:
                restoration = restore_frame(method, frame)
        except Exception as exc:
            if plan.strict:
                raise
            log.failed(frame, frame_error(frame.job.src, exc))
            return
        write(restoration)

    def flush() -> None:
        if len(group) == 1:
            restore(group[0], checked=True)
        elif group:
            try:
                restorations = restore_group(method, group)
            except Exception:  # one frame spoilt the pass: each alone, to name it
                for frame in group:
                    restore(frame, checked=True)
            else:
                for restoration in restorations:
                    write(restoration)
        group.clear()

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer") as writer:
            for frame in frame_loader(reader, workers):
                if frame.error is not None:
                    log.failed(frame, frame.error)
                    continue
                if frame.done_before:
                    log.skipped(frame)
                    continue
                assert frame.image is not None
                key = None if plan.strict else method.batch_key(frame.image)
                if key is None:
                    restore(frame, checked=False)
                    continue
                try:
                    method.check_frame(frame.image, frame.job.dst, frame.job.truth)
                except Exception as exc:
                    log.failed(frame, frame_error(frame.job.src, exc))
                    continue
                if group and (
                    method.batch_key(group[0].image) != key  # type: ignore[arg-type]
                    or len(group) >= settings.batch_frames
                ):
                    flush()
                group.append(frame)
            flush()
            if pending is not None:
                finish(pending)
    finally:
        log.close()
    if log.manifest is not None:
        print(outcome_line(log.manifest.path, log.manifest.counts()), flush=True)
    check_outcome(log, manifest_path)
    return log.written


class _FrameBar:
    """rich progress over frames on stderr: done / total, MP/s, time left."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("frames"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=Console(stderr=True), transient=True)
        self.task = self.progress.add_task("frames", total=total, speed="")
        self.progress.start()

    def advance(self, megapixels: float, elapsed: float) -> None:
        speed = f"{megapixels / elapsed:.2f} MP/s" if elapsed > 0 and megapixels else ""
        self.progress.update(self.task, advance=1, speed=speed)

    def close(self) -> None:
        self.progress.stop()
