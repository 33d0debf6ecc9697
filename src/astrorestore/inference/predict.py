"""``infer.py trainer=<cpu|gpu|ddp|ddp_sim>``: the frames through Lightning's predict loop.

The same ``trainer=`` configs that train on one GPU, several (DDP) or several nodes (SLURM
through the submitit launcher) restore a survey: each process takes every N-th frame of the
sorted list (disjoint, none repeated: Lightning's own distributed sampler pads with repeats),
reads it in its ``DataLoader`` workers, restores it in ``predict_step`` on its device, and a
:class:`FrameWriter` (a ``BasePredictionWriter``) writes it from a writer thread and records it
in the rank's manifest, merged into ``manifest.json`` by rank 0 at the end. The per-frame work
is the one-process loop's (:mod:`astrorestore.inference.survey`).
"""

from __future__ import annotations

import json
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import OmegaConf

from astrorestore.inference.frames import Frame, FrameReader, frame_error, frame_loader
from astrorestore.inference.manifest import (
    MANIFEST_NAME,
    failed_frames_error,
    merge_rank_manifests,
    outcome_line,
)
from astrorestore.inference.method import Method
from astrorestore.inference.survey import (
    FrameLog,
    Restoration,
    RunPlan,
    restore_frame,
    write_restoration,
)

# One frame per step: the writer knows each frame from the frame itself, not from indices.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")


class FrameRestoration(L.LightningModule):
    """Restores one frame per predict step; a frame that cannot be restored comes back with
    its error instead of stopping the run."""

    def __init__(self, method: Method, strict: bool) -> None:
        super().__init__()
        # Not a registered submodule: DDP would broadcast its weights from rank 0, which every
        # rank has already read from the same checkpoint; the network moves to this process's
        # device with the first frame.
        self.method = method
        self.strict = strict
        self._placed: Method | None = None

    def predict_step(self, frame: Frame, batch_idx: int) -> Frame | Restoration:
        if frame.error is not None or frame.done_before:
            return frame
        if self._placed is None:
            if self.method.restorer is not None:
                self.method.restorer.fn.to(self.device)
            self._placed = self.method.on_device(self.device)
        try:
            return restore_frame(self._placed, frame)
        except Exception as exc:
            if self.strict:
                raise
            frame.error = frame_error(frame.job.src, exc)
            return frame


class FrameData(L.LightningDataModule):
    """Every ``world_size``-th frame from this process's rank on."""

    def __init__(self, reader: FrameReader, workers: int) -> None:
        super().__init__()
        self.reader = reader
        self.workers = workers

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # a Frame holds NumPy pixels; restore_frame moves them itself, once

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        share = torch.utils.data.Subset(self.reader, range(rank, len(self.reader), world))
        return frame_loader(share, self.workers)


class FrameWriter(BasePredictionWriter):
    """Writes each restored frame from a thread and records every frame in the manifest."""

    def __init__(self, method: Method, plan: RunPlan) -> None:
        super().__init__(write_interval="batch")
        self.method = method
        self.plan = plan

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        share = len(range(rank, len(self.plan.jobs), world))
        folder = self.plan.folder
        path = None if folder is None else folder / f"manifest.rank{rank}.json"
        progress = self.method.settings.progress and trainer.is_global_zero
        self.log = FrameLog(self.plan, self.method, share, progress, path, rank)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self.pending: tuple[Restoration, Future] | None = None

    def _finish(self) -> None:
        if self.pending is None:
            return
        restoration, future = self.pending
        self.pending = None
        try:
            future.result()
        except Exception as exc:
            if self.plan.strict:
                raise
            self.log.failed(restoration.frame, frame_error(restoration.frame.job.src, exc))
            return
        self.log.done(restoration)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(prediction, Frame):
            if prediction.error is not None:
                self.log.failed(prediction, prediction.error)
            else:
                self.log.skipped(prediction)
            return
        self._finish()  # one write in flight while the next frame is restored
        future = self.pool.submit(write_restoration, self.method, prediction, self.plan.scorer)
        self.pending = (prediction, future)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        try:
            self._finish()
        finally:
            self.pool.shutdown()
            self.log.close()
        trainer.strategy.barrier()
        if trainer.is_global_zero and self.plan.folder is not None:
            merge_rank_manifests(self.plan.folder, self.plan.run_info, len(self.plan.jobs))
        trainer.strategy.barrier()  # every rank may read the merged manifest now


def build_trainer(trainer_config: dict, callbacks: list, root: Path) -> L.Trainer:
    """A ``trainer=`` config as a predicting Trainer: no logger, checkpoints or summary; the
    network's precision is infer.py's own ``precision=`` (fp32 unless asked), not the
    training config's bf16-mixed."""
    config = {k: v for k, v in trainer_config.items() if k != "precision"}
    return instantiate(
        OmegaConf.create(config),
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        precision="32-true",
        default_root_dir=str(root),
    )


def predict_frames(method: Method, plan: RunPlan, reader: FrameReader) -> list[Path]:
    """Restore the plan's frames with Lightning's predict loop; returns the outputs written
    or already done (from the merged manifest)."""
    settings = method.settings
    root = plan.folder if plan.folder is not None else plan.jobs[0].dst.parent
    writer = FrameWriter(method, plan)
    trainer = build_trainer(settings.trainer or {}, [writer], root)
    module = FrameRestoration(method, plan.strict)
    trainer.predict(
        module, datamodule=FrameData(reader, settings.workers), return_predictions=False
    )
    if plan.folder is None:
        return [job.dst for job in plan.jobs if job.dst.exists()]
    manifest_path = plan.folder / MANIFEST_NAME
    rows = json.loads(manifest_path.read_text())["frames"]
    if trainer.is_global_zero:
        counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
        print(outcome_line(manifest_path, counts), flush=True)
    failures = [row["error"] for row in rows if row["status"] == "failed"]
    if failures:
        raise failed_frames_error(failures, len(plan.jobs), manifest_path)
    by_input = {row["input"]: row for row in rows}
    return [job.dst for job in plan.jobs if str(job.src) in by_input]
