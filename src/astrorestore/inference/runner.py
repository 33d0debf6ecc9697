"""``infer.py``: settings -> method -> plan -> restore every frame (one process or Lightning).

Each stage is a function that returns what the next needs:

1. :meth:`InferSettings.from_config` checks every setting once;
2. :func:`build_method` loads the checkpoint (or names the classical method);
3. :func:`plan_run` resolves the inputs, outputs, truths and the report;
4. :func:`restore_frames` (one process) or :func:`predict_frames` (``trainer=``: Lightning's
   predict loop, one GPU to many nodes) reads each frame once, restores it on the device and
   writes it, skipping outputs that already hold the same restoration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from astrorestore.errors import UserError
from astrorestore.inference.frames import FrameJob, FrameReader, checkpoint_id
from astrorestore.inference.manifest import previous_fingerprints
from astrorestore.inference.method import LoadRestorer, Method, build_method, check_restorable
from astrorestore.inference.restorer import Restorer
from astrorestore.inference.scoring import Scorer, check_truths_kept, resolve_truths
from astrorestore.inference.settings import InferSettings
from astrorestore.inference.survey import RunPlan, restore_frames
from astrorestore.io.formats import LoadedImage, image_format
from astrorestore.io.images import read_image, std_path
from astrorestore.io.paths import resolve_io


def preflight(
    pairs: list[tuple[Path, Path]],
    hdu: Any,
    tile: int,
    restorer: Restorer | None,
    grey_only: bool = False,
    check: Callable[[Path, Path, LoadedImage], None] | None = None,
) -> dict[Path, tuple[int, ...]]:
    """Every input read before anything is written (``pipeline.py``'s chains of checkpoints,
    whose later stages cannot record a failed frame): one bad file fails the run up front.
    ``check`` adds the caller's own checks of each (input, output, loaded input)."""
    shapes: dict[Path, tuple[int, ...]] = {}
    for src, dst in pairs:
        image = read_image(src, hdu=hdu)
        data = image.data
        check_restorable(image, dst, restorer, tile, grey_only)
        if check is not None:
            check(src, dst, image)
        if image.extra.get("alpha"):
            print(f"note: {src}: its alpha (transparency) channel is dropped; {dst} is RGB")
        shapes[src] = data.shape
        del data, image
    return shapes


def check_std_paths(pairs: list[tuple[Path, Path]], truths: dict[Path, Path]) -> None:
    """A photograph's ``<name>_std.<ext>`` (``num_samples`` > 1) must not land on an input, a
    truth or another output of the run."""
    taken = {p.expanduser().resolve(): p for pair in pairs for p in pair}
    taken |= {p.expanduser().resolve(): p for p in truths.values()}
    for _, dst in pairs:
        if image_format(dst) == "fits":
            continue  # the std is an extension of the output itself
        clash = taken.get(std_path(dst).expanduser().resolve())
        if clash is not None:
            raise UserError(
                f"num_samples: the standard deviation of {dst.name} would be written to "
                f"{std_path(dst)}, which is {clash} of this run; rename that file or pass "
                "another output folder"
            )


def plan_run(settings: InferSettings, method: Method) -> RunPlan:
    """The frames to restore and where the run's report and manifest go; everything that can
    be checked without reading a frame is checked here, before anything is written."""
    pairs = resolve_io(settings.input, settings.output)
    truths = resolve_truths(settings.truth, [src for src, _ in pairs])
    check_truths_kept(pairs, truths)
    if settings.num_samples > 1:
        check_std_paths(pairs, truths)
    scorer = None
    if settings.report:
        forward = method.restorer.forward_model() if method.restorer is not None else None
        scorer = Scorer(settings.report, settings.evaluation, forward)
    if truths and scorer is None:
        raise UserError("truth= is only used for scoring: pass report=<dir> as well")
    if settings.report:
        from astrorestore.evaluation.writer import check_report_dir

        check_report_dir(
            settings.report, [*(path for pair in pairs for path in pair), *truths.values()]
        )
    jobs = [FrameJob(i, src, dst, truths.get(src)) for i, (src, dst) in enumerate(pairs)]
    # A folder or glob is a survey: its frames are recorded one by one in a manifest and a bad
    # frame is skipped; a single file is restored or refused.
    single = Path(settings.input).expanduser().is_file()
    folder = None if single else pairs[0][1].parent
    run_info = {
        "model": method.name,
        "checkpoint": method.checkpoint_name,
        "input": settings.input,
        "output": settings.output,
    }
    return RunPlan(jobs, folder, scorer, run_info)


def frame_reader(settings: InferSettings, method: Method, plan: RunPlan) -> FrameReader:
    """The reader of the plan's frames, which knows what an output already done records."""
    return FrameReader(
        plan.jobs,
        settings.hdu,
        checkpoint=checkpoint_id(settings.ckpt_path, settings.method),
        settings=settings.restoration_digest(),
        # Scores need the frames restored in this run (report= redoes every frame).
        overwrite=settings.overwrite or plan.scorer is not None,
        previous=previous_fingerprints(plan.folder) if plan.folder is not None else None,
        strict=plan.strict,
    )


def run_inference(cfg: Any, load_restorer: LoadRestorer) -> list[Path]:
    """Restore every input of ``cfg`` (see ``configs/infer.yaml``) and return the outputs
    written or found already done."""
    settings = InferSettings.from_config(cfg)
    method = build_method(settings, load_restorer)
    plan = plan_run(settings, method)
    reader = frame_reader(settings, method, plan)
    if settings.trainer is not None:
        from astrorestore.inference.predict import predict_frames

        return predict_frames(method, plan, reader)
    return restore_frames(method, plan, reader)
