"""What restores a run's frames: a checkpoint's restorer or a classical method, as one object.

:class:`Method` knows the model's channels, scale and the HISTORY lines its outputs carry, checks
each frame when it is read (the checks a frame used to pass in a separate reading of every input
before the run), and restores a frame's pixels. It is a plain picklable object, so Lightning can
hand it to each process of a multi-GPU run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import astrorestore
from astrorestore.errors import UserError
from astrorestore.inference.acceleration import accelerate
from astrorestore.inference.frames import Fingerprint
from astrorestore.inference.restore import (
    bound_gain,
    check_image,
    fit_overlap,
    fit_tile,
    one_tile,
    restore_image,
)
from astrorestore.inference.restorer import Restorer
from astrorestore.inference.scoring import (
    NOISE_MODEL_BASELINES,
    check_truth,
    classical_restorer,
    describe_noise,
    image_noise_model,
    noise_inputs,
    output_shape,
    units_note,
)
from astrorestore.inference.self_ensemble import self_ensemble
from astrorestore.inference.settings import InferSettings
from astrorestore.io.formats import LoadedImage
from astrorestore.io.images import check_output
from astrorestore.postprocess import Postprocess, build_postprocess
from astrorestore.postprocess.psf_cores import check_frame

LoadRestorer = Callable[..., Restorer]


@dataclass
class Method:
    """A checkpoint's restorer (``restorer``) or a classical method (``classical``)."""

    name: str
    scale: int
    out_channels: int
    history: list[str]
    checkpoint_name: str
    settings: InferSettings
    restorer: Restorer | None = None
    #: the post-processing stages: the restorer's (tile stages run inside it; frame stages
    #: here on whole frames) or, for a classical method, the frame stages it was given
    stages: Postprocess = dataclasses.field(default_factory=Postprocess)

    # ------------------------------------------------------------------ checks of a frame
    def check_frame(self, image: LoadedImage, dst: Path, truth: Path | None) -> None:
        """Everything that makes one frame unusable, as a one-line UserError naming it."""
        grey_only = self.stages.on_frames
        # the finite-pixel scan of a network's frame is made on the device
        check_restorable(image, dst, self.restorer, self.settings.tile_size, grey_only, False)
        if truth is not None:
            check_truth(
                truth,
                output_shape(image.data.shape, self.scale, self.out_channels),
                self.settings.hdu,
            )
            note = units_note(image.path, truth)
            if note:
                print(note, flush=True)
        if image.extra.get("alpha"):
            print(f"note: {image.path}: its alpha (transparency) channel is dropped; {dst} is RGB")

    # ------------------------------------------------------------------ restoring
    def restore(self, image: LoadedImage) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """The restored pixels, the HISTORY lines of this frame and, with ``num_samples`` > 1,
        the per-pixel standard deviation of the samples (None otherwise)."""
        data, settings = image.data, self.settings
        if self.restorer is None:
            # Only the noise-model-driven baselines need the frame's gain and read noise.
            gain, read_noise = 1.0, 0.0  # unused by the others (and colour frames are refused)
            if data.ndim == 2 and self.name in NOISE_MODEL_BASELINES:
                # The frame's own noise model (eval.gain/eval.read_noise win where given).
                noise = image_noise_model(image, settings.evaluation)
                gain, read_noise = noise.gain, noise.read_noise
                print(f"{image.path}: noise model {describe_noise(noise)}", flush=True)
            restored = classical_restorer(self.name, gain, read_noise)(data)
            history = list(self.history)
            return self._finish(image, restored, history), history, None
        return self.restore_group([image])[0]

    def batch_key(self, image: LoadedImage) -> tuple[int, ...] | None:
        """Frames with the same key can share a network batch (``batch_frames``): small frames
        of one shape, each one tile, of a deterministic network restoring each frame once
        (``num_samples=1``). None: restored alone. A sky-map normaliser (``background=map``)
        batches too: each frame of a batch is given its own map (:func:`restore_tensor`)."""
        restorer, settings = self.restorer, self.settings
        if restorer is None or settings.batch_frames < 2 or restorer.stochastic:
            return None
        if settings.num_samples != 1:
            return None
        height, width = image.data.shape[:2]
        if not one_tile(height, width, settings.tile_size, restorer.size_multiple):
            return None
        return tuple(image.data.shape)

    def restore_group(
        self, images: list[LoadedImage]
    ) -> list[tuple[np.ndarray, list[str], np.ndarray | None]]:
        """:meth:`restore` of frames of one :meth:`batch_key` (or one frame), the network's
        passes shared; equal to restoring them one by one to float tolerance. With
        ``num_samples`` > 1 (one frame only) the mean of the samples and their std."""
        assert self.restorer is not None
        settings = self.settings
        n = settings.num_samples
        if n > 1 and len(images) > 1:
            raise ValueError(f"num_samples={n}: frames are restored one at a time")
        histories = [
            [*self.history[:2], self._tiling_line(image.data.shape), *self.history[2:]]
            for image in images
        ]
        # Sample k is drawn with seed + k (sample 0 is the num_samples=1 output); the mean and
        # the std are accumulated one sample at a time (Welford), in float64: memory stays
        # three frames whatever N.
        mean = spread = None
        gains = [self.frame_gain(image) for image in images] if self.restorer.frame_gain else None
        for k in range(n):
            samples = restore_image(
                [image.data for image in images],
                self.restorer,
                settings.tile_size,
                settings.overlap,
                settings.batch_size,
                False,
                settings.seed + k,
                gains,
            )
            samples = [
                self._finish(image, sample, history if k == 0 else None)
                for image, sample, history in zip(images, samples, histories, strict=True)
            ]
            if n == 1:
                return [(s, h, None) for s, h in zip(samples, histories, strict=True)]
            sample = samples[0]
            if mean is None:
                mean, spread = sample.astype(np.float64), np.zeros(sample.shape)
                continue
            delta = sample - mean
            mean += delta / (k + 1)
            spread += delta * (sample - mean)
        assert mean is not None and spread is not None
        history = histories[0]
        history.append(
            f"per-pixel mean of {n} samples (seeds {settings.seed}..{settings.seed + n - 1})"
        )
        std = np.sqrt(spread / (n - 1)).astype(np.float32)
        return [(mean.astype(np.float32), history, std)]

    def frame_gain(self, image: LoadedImage) -> float:
        """The gain (e- per unit) a network bounded by each frame's noise is given for
        ``image``: ``eval.gain``, else the frame's own (:func:`bound_gain`: header, ERR map or a
        fit on its pixels); inf (the sky noise alone) where it cannot tell. Printed, with where
        it came from."""
        if image.data.ndim != 2:  # a colour picture's luminance: no detector gain to read
            print(f"{image.path}: noise bound by the sky noise (colour image, no gain)")
            return math.inf
        given = self.settings.evaluation.get("gain")
        if given is not None:  # the bound needs the gain alone
            print(f"{image.path}: noise bound with gain {float(given):.4g} e-/unit (eval.gain)")
            return float(given)
        keywords, err = noise_inputs(image)
        err = err if err is not None and err.shape == image.data.shape else None
        gain, source = bound_gain(image.data, keywords, err)
        if math.isinf(gain):
            print(
                f"{image.path}: noise bound by the sky noise alone ({source}; eval.gain=<e-/unit> "
                "gives the gain)"
            )
        else:
            print(f"{image.path}: noise bound with gain {gain:.4g} e-/unit ({source})")
        return gain

    def _finish(
        self, image: LoadedImage, restored: np.ndarray, history: list[str] | None
    ) -> np.ndarray:
        """The frame stages applied to ``restored``; their lines go to ``history`` (and are
        printed) unless it is None (the second and later samples of a frame)."""
        if not self.stages.on_frames:
            return restored
        restored, lines = self.stages.frame(image.data, restored)
        if history is not None:
            history.extend(lines)
            for line in lines:
                print(f"{image.path}: {line}", flush=True)
        return restored

    def _tiling_line(self, shape: tuple[int, ...]) -> str:
        tile, multiple = self.settings.tile_size, self.restorer.size_multiple
        fitted = fit_tile(shape[0], shape[1], tile, multiple)
        smaller = " (fitted to the image)" if fitted != tile else ""
        overlap = fit_overlap(tile, fitted, self.settings.overlap)
        return f"tile_size={fitted}{smaller} overlap={overlap} (tiled, raised-cosine blend)"

    def keywords(self, fingerprint: Fingerprint | None) -> dict[str, tuple[Any, str]]:
        keywords = {
            "ARMODEL": (self.name, "astrorestore model"),
            "ARCKPT": (self.checkpoint_name, "checkpoint file"),
            "ARVERS": (astrorestore.__version__, "astrorestore version"),
        }
        return keywords | (fingerprint.keywords() if fingerprint is not None else {})

    def on_device(self, device: Any) -> Method:
        """This method with its restorer running on ``device`` (a rank's GPU)."""
        if self.restorer is None:
            return self
        return dataclasses.replace(self, restorer=dataclasses.replace(self.restorer, device=device))


def check_restorable(
    image: LoadedImage,
    dst: Path,
    restorer: Restorer | None,
    tile: int,
    grey_only: bool = False,
    finite: bool = True,
) -> None:
    """Can ``image`` be restored by ``restorer`` (None: a classical method) into ``dst``?
    ``grey_only``: a stage after the network needs grey frames; ``finite=False`` leaves the
    scan for finite pixels to the restoration. Raises a UserError naming the file."""
    data = image.data
    try:
        colour = data.ndim == 3 or (restorer is not None and restorer.out_channels == 3)
        check_output(dst, image, colour=colour)
        if grey_only:
            check_frame(data)
        if restorer is not None:
            check_image(data, restorer, tile, finite=finite)
        elif data.ndim != 2 or not np.isfinite(data).any():
            raise UserError(
                f"classical methods restore grey images with finite pixels; got shape {data.shape}"
            )
    except UserError as exc:
        raise UserError(f"{image.path}: {exc}") from None


def build_method(settings: InferSettings, load_restorer: LoadRestorer) -> Method:
    """The checkpoint's restorer with the speed switches and its post-processing stages
    (the checkpoint's, with ``postprocess=`` laid over them), or the classical method with the
    frame stages ``postprocess=`` asks for."""
    if settings.method:
        name = settings.method
        history = [f"astrorestore: restored with the classical method {name}"]
        stages = build_postprocess(settings.postprocess, gain=settings.gain)
        method = Method(name, 1, 1, history, "none", settings, stages=stages)
    else:
        method = _checkpoint_method(settings, load_restorer)
    if settings.num_samples > 1 and (method.restorer is None or not method.restorer.stochastic):
        raise UserError(
            f"num_samples={settings.num_samples}: {method.name} restores in one deterministic "
            "pass, so every sample would be the same; num_samples applies to stochastic "
            "(diffusion) checkpoints only: drop it"
        )
    if method.stages.psf_cores is not None:
        method.stages.psf_cores.progress = settings.progress
    return method


def _checkpoint_method(settings: InferSettings, load_restorer: LoadRestorer) -> Method:
    # The checkpoint first: a wrong model is the more basic mistake than a wrong image.
    postprocess = settings.postprocess
    options = {"postprocess": postprocess, "gain": settings.gain} if postprocess else {}
    # Under trainer= each process moves the network to its own device (from the CPU copy).
    device = "cpu" if settings.trainer is not None else settings.device
    restorer = load_restorer(settings.ckpt_path, device, **options)
    if settings.sky_box_size is not None:
        if not getattr(restorer.normalizer, "per_pixel", False):
            raise UserError(
                f"sky_box_size={settings.sky_box_size}: model {restorer.name} normalises around "
                "one sky level per frame, not a sky map; drop sky_box_size"
            )
        restorer.normalizer.box_size = settings.sky_box_size
    stages = restorer.postprocess
    restorer.set_sampling(settings.sample_steps, settings.sampler)
    restorer = accelerate(
        restorer,
        precision=settings.precision,
        channels_last=settings.channels_last,
        compile=settings.compile,
        batch_size=settings.batch_size,
    )
    restorer = self_ensemble(restorer, settings.self_ensemble)
    history = [
        f"astrorestore: restored with {restorer.name}",
        f"checkpoint: {restorer.ckpt_path}",
    ]
    if settings.precision != "fp32":
        history.append(f"network run in {settings.precision} (autocast)")
    if settings.self_ensemble > 1:
        history.append(f"self-ensemble: mean of {settings.self_ensemble} flipped/rotated passes")
    if restorer.scale > 1:
        history.append(f"super-resolved x{restorer.scale}; WCS rescaled to the new pixel grid")
    if restorer.stochastic:
        history.append(f"stochastic restorer, seed={settings.seed}")
    history.extend(stages.describe(tiles_only=True))
    return Method(
        restorer.name,
        restorer.scale,
        restorer.out_channels,
        history,
        Path(str(restorer.ckpt_path)).name,
        settings,
        restorer=restorer,
        stages=stages,
    )
