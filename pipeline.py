"""Run a chain of checkpoints over a folder and report SSIM/PSNR against references:
`python pipeline.py ckpt_paths='[colorize.ckpt,sr3.ckpt]' input=grey/ output=out/ references=truth/`."""

from pathlib import Path

from astrorestore.cli import run_hydra
from astrorestore.inference.pipeline import run_pipeline
from astrorestore.inference.restorer import load_restorer
from astrorestore.inference.settings import resolve_device


def pipeline(cfg):
    device = resolve_device(cfg.device)
    restorers = [load_restorer(str(path), device) for path in cfg.ckpt_paths]
    bilateral = dict(cfg.bilateral) if cfg.bilateral else None
    return run_pipeline(
        restorers,
        str(cfg.input),
        str(cfg.output),
        cfg.references,
        bilateral,
        tile=int(cfg.tile_size),
        overlap=int(cfg.overlap),
        batch_size=int(cfg.batch_size),
        seed=int(cfg.seed),
        sample_steps=cfg.get("sample_steps"),
        sampler=cfg.get("sampler"),
        self_ensemble=cfg.get("self_ensemble", 1),
    )


if __name__ == "__main__":
    run_hydra(pipeline, Path(__file__).resolve().parent / "configs", "pipeline")
