"""``infer.py``'s settings: one typed object, built and checked once from the Hydra config.

Every value is checked where the object is built, so a wrong one fails at start-up with a
one-line message naming the key and what it accepts, before a checkpoint is loaded or a frame
read. Everything after works with plain typed fields.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from astrorestore.checkpoint import checkpoint_path
from astrorestore.errors import UserError
from astrorestore.inference.acceleration import check_precision
from astrorestore.inference.scoring import check_eval_settings
from astrorestore.inference.self_ensemble import check_self_ensemble
from astrorestore.inference.tiling import check_overlap
from astrorestore.postprocess import check_postprocess

USAGE = (
    "python infer.py [ckpt_path=<file.ckpt>, default: the shipped pretrained denoiser] "
    "(or method=<classical method>) "
    "input=<file|folder|glob> output=<file|folder> [truth=<file|folder>] [report=<dir>]"
)
# Trainer keys that only make sense for training; a shared trainer= config carries them.
_TRAINING_ONLY = (
    "default_root_dir",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "gradient_clip_val",
    "check_val_every_n_epoch",
    "log_every_n_steps",
    "accumulate_grad_batches",
    "val_check_interval",
)


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


class _Config:
    """Reads keys of a Hydra/OmegaConf config or a plain mapping; ``None`` means unset."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def raw(self, key: str, default: Any = None) -> Any:
        cfg = self.cfg
        value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
        return default if value is None else value

    def text(self, key: str) -> str | None:
        value = self.raw(key)
        return None if value is None or str(value).strip() == "" else str(value)

    def required(self, key: str) -> str:
        value = self.text(key)
        if value is None:
            raise UserError(f"{key} is required: {USAGE}")
        return value

    def integer(self, key: str, default: int | None, minimum: int) -> int | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value))
            except ValueError:
                raise UserError(f"{key}={value!r} must be an integer; pass {key}=<int>") from None
        if value < minimum:
            raise UserError(
                f"{key}={value} must be at least {minimum}; pass {key}=<int >= {minimum}>"
            )
        return int(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "false"):
            return str(value).strip().lower() == "true"
        raise UserError(f"{key}={value!r} is invalid: pass {key}=true or {key}=false")

    def mapping(self, key: str) -> dict:
        value = self.raw(key, {})
        if isinstance(value, DictConfig):
            # Unresolved: a shared trainer= config interpolates training-only paths.
            return dict(OmegaConf.to_container(value, resolve=False))
        if not isinstance(value, dict):
            raise UserError(f"{key}={value!r} is invalid: pass a group of {key}.<name>=... keys")
        return dict(value)


@dataclass(frozen=True)
class InferSettings:
    """What ``infer.py`` was asked to do (see ``configs/infer.yaml`` for each key)."""

    input: str
    output: str
    ckpt_path: str | None = None
    method: str | None = None
    truth: str | None = None
    report: str | None = None
    evaluation: dict = field(default_factory=dict)
    postprocess: dict = field(default_factory=dict)
    tile_size: int = 256
    overlap: int = 32
    batch_size: int = 8
    batch_frames: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    self_ensemble: int = 1
    #: box size (px) of the sky map of a checkpoint normalising around one (None: its own)
    sky_box_size: int | None = None
    hdu: int | str | None = None
    progress: bool = False
    seed: int = 0
    sample_steps: int | None = None
    sampler: str | None = None
    num_samples: int = 1
    overwrite: bool = False
    workers: int = 1
    trainer: dict | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> InferSettings:
        """Build and check the settings; each bad value is a one-line UserError."""
        c = _Config(cfg)
        method = c.text("method")
        if method and c.text("ckpt_path"):
            raise UserError(f"pass either ckpt_path= or method=, not both: {USAGE}")
        # No ckpt_path: the shipped pretrained default denoiser (``ckpt_path=pretrained``).
        ckpt_path = None if method else str(checkpoint_path(c.text("ckpt_path")))
        input_spec, output_spec = c.required("input"), c.required("output")
        tile, overlap = c.integer("tile_size", 256, 1), c.integer("overlap", 32, 0)
        check_overlap(tile, overlap)
        passes = check_self_ensemble(c.raw("self_ensemble", 1))
        postprocess = check_postprocess(c.raw("postprocess"))
        if method and postprocess.get("give_back") is not None:
            raise UserError(
                f"postprocess.give_back applies to a checkpoint's network, not to "
                f"method={method}: use postprocess=none or psf_cores"
            )
        if method and passes > 1:
            raise UserError(
                f"self_ensemble={passes} averages a network's passes, not method={method}'s: "
                "drop it"
            )
        evaluation = c.mapping("eval")
        check_eval_settings(evaluation)
        trainer = c.mapping("trainer") or None
        report = c.text("report")
        if trainer is not None:
            trainer = {k: v for k, v in trainer.items() if k not in _TRAINING_ONLY}
            if report:
                raise UserError(
                    "report= scores the frames of one process; with trainer= they are split "
                    "over processes: drop report= (score the outputs afterwards with "
                    "method=noisy input=<outputs> report=<dir>) or drop trainer="
                )
        sampler = c.text("sampler")
        return cls(
            input=input_spec,
            output=output_spec,
            ckpt_path=ckpt_path,
            method=method,
            truth=c.text("truth"),
            report=report,
            evaluation=evaluation,
            postprocess=postprocess,
            tile_size=tile,
            overlap=overlap,
            batch_size=c.integer("batch_size", 8, 1),
            batch_frames=c.integer("batch_frames", 8, 1),
            device=resolve_device(c.raw("device", "auto")),
            precision=check_precision(c.raw("precision", "fp32")),
            channels_last=c.boolean("channels_last", True),
            compile=c.boolean("compile", False),
            self_ensemble=passes,
            sky_box_size=c.integer("sky_box_size", None, 4),
            hdu=c.raw("hdu"),
            progress=c.boolean("progress", False),
            seed=c.integer("seed", 0, 0),
            sample_steps=c.integer("sample_steps", None, 1),
            sampler=sampler,
            num_samples=c.integer("num_samples", 1, 1),
            overwrite=c.boolean("overwrite", False),
            workers=c.integer("workers", 1, 0),
            trainer=trainer,
        )

    @property
    def gain(self) -> float:
        """e- per data unit of the input (``eval.gain``) for the frame post-processing stages
        whose own gain is null; 1 when eval.gain is null (classical methods and the report read
        the frame's own gain then, see ``scoring.frame_noise_model``)."""
        gain = self.evaluation.get("gain")
        return 1.0 if gain is None else float(gain)

    def restoration_digest(self) -> str:
        """A short hash of every setting that changes an output's pixels (not speed-only
        ones such as batch_size or workers): an output made with other values is redone.
        The checkpoint's own stored post-processing is covered by the checkpoint's id."""
        keys = {
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "precision": self.precision,
            "self_ensemble": self.self_ensemble,
            "hdu": self.hdu,
            "seed": self.seed,
            "sample_steps": self.sample_steps,
            "sampler": self.sampler,
            "postprocess": self.postprocess,
            "method": self.method,
            # eval.gain also sets the bound of a network bounded by each frame's noise.
            "gain": self.evaluation.get("gain"),
            "read_noise": self.evaluation.get("read_noise") if self.method else None,
        }
        if self.sky_box_size is not None:  # only then: other outputs keep their digest
            keys["sky_box_size"] = self.sky_box_size
        if self.num_samples > 1:  # only then: outputs of one sample keep their earlier digest
            keys["num_samples"] = self.num_samples
        text = json.dumps(keys, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
