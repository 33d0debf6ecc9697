"""Pairings: what one training example is, made per batch on the batch's device.

A data module delivers batches in physical units with some of these keys:
``clean`` (the scene without noise, when known), ``noisy`` (an observed frame), ``noisy2``
(a second, independent exposure of the same scene), ``valid`` (usable pixels), ``pedestal``
(a level subtracted from a clean simulated field after detection; the noise is drawn on
``clean + pedestal``, see ``NoiseModel.__call__``).
A pairing turns such a batch into the keys every module understands, still in physical units:

- ``input``: what the network is trained on;
- ``target``: what the loss compares the network's output with;
- ``truth``: the clean truth, present only where it is known (metrics use it and nothing else);
- ``loss_mask``: where the loss is computed (blind spots, valid pixels), optional;
- ``observed``: the frame restoration is judged on, when it differs from ``input`` (a
  blind-spot input has pixels replaced; the restored frame is made from the unmasked one).

The noise model is the pairing's dependency, not the data module's: supervised and
Noise2Noise pairings draw noise from it; a pairing for real frames uses the frames as they are.

:class:`Pairing` declares the whole protocol the data modules, the training entry and the
checkpoint rely on (each attribute and hook with its default); a pairing overrides what differs.
Random draws use ``rng``, a ``torch.Generator`` on the batch's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.errors import UserError

Batch = dict[str, Tensor]


class Pairing:
    """Base: find the observed frame (drawing noise when the batch is clean) and its truth."""

    #: Super-resolution factor: ``target`` is this many times larger per axis than ``input``
    #: (1 = same size). Not to be confused with the normaliser's ``batch["scale"]``.
    upscale_factor: int = 1
    #: Whether ``loss_mask`` marks a strict subset of pixels (losses must then honour masks).
    makes_loss_mask: bool = False
    #: Whether photograph data modules (8-bit colour pictures, no electrons) may feed it.
    for_photographs: bool = False
    #: The detector axis (``"row"``/``"column"``) the noise is correlated along, which
    #: augmentations must not rotate; None when the noise has no such axis.
    structured_axis: str | None = None
    #: The noise model clean batches are corrupted with (None: the data must be noisy).
    noise: NoiseModel | None

    def __init__(self, noise: NoiseModel | None = None) -> None:
        self.noise = noise

    def output_channels(self, channels: int) -> int:
        """Channels of ``target``/``truth`` for data of ``channels`` channels."""
        return channels

    def input_channels(self, channels: int) -> int:
        """Channels of ``input`` for data of ``channels`` channels."""
        return channels

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        """Refuse data this pairing cannot use, naming the fix (called once, at set-up).

        ``provides`` are the keys of the data's training batches (``clean``, ``noisy``, ...).
        """

    def check_net(self, net: object) -> None:
        """Refuse a network this pairing cannot train (called once, where both are built)."""

    def check_patch(self, patch_size: int) -> None:
        """Refuse a training crop size (``data.patch_size``) this pairing cannot use."""

    def _require_noise(self) -> NoiseModel:
        if self.noise is None:
            raise UserError(
                f"{type(self).__name__} needs a noise model to corrupt clean images; "
                "choose one with noise=<poisson_gaussian|gaussian|...>"
            )
        return self.noise

    def observe(self, batch: Batch, rng: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """``(noisy, truth)``: the batch's own noisy frame, or a noise draw from its clean one."""
        clean = batch.get("clean")
        if "noisy" in batch:
            return batch["noisy"].float(), None if clean is None else clean.float()
        if clean is None:
            raise ValueError("a batch needs 'clean' or 'noisy'")
        # A simulated field whose sky was over-subtracted carries the subtracted level: the
        # noise comes from the photons that arrived (see NoiseModel.__call__).
        pedestal = batch.get("pedestal")
        if pedestal is None:
            noisy, truth = self._require_noise()(clean.float(), rng)
        else:
            noisy, truth = self._require_noise()(clean.float(), rng, pedestal=pedestal)
        return noisy, truth

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        raise NotImplementedError

    @staticmethod
    def _finish(out: Batch, batch: Batch) -> Batch:
        # Invalid pixels (bad-pixel masks of real frames) are never training targets.
        if "valid" in batch:
            valid = batch["valid"].bool()
            mask = out.get("loss_mask")
            out["loss_mask"] = valid if mask is None else (mask.bool() & valid)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(noise={self.noise!r})"


class SupervisedPairing(Pairing):
    """noisy -> clean. Needs a clean scene (simulated fields, deep frames with injected noise)."""

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "clean" not in provides:
            raise UserError(
                f"supervised training needs clean images, but data={data_name} provides only noisy "
                "frames; use a self-supervised model (model=n2v) or pairing=noise2noise with "
                "exposure pairs"
            )

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        noisy, truth = self.observe(batch, rng)
        if truth is None:
            raise ValueError("supervised pairing got a batch without 'clean'")
        return self._finish({"input": noisy, "target": truth, "truth": truth}, batch)


class Noise2NoisePairing(Pairing):
    """noisy -> independent noisy of the same scene (Lehtinen et al. 2018).

    Two noise draws of one clean scene, or two real exposures (``noisy`` and ``noisy2``).
    """

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "clean" not in provides and not {"noisy", "noisy2"} <= provides:
            raise UserError(
                f"Noise2Noise needs clean images to draw two noise realisations from, or exposure "
                f"pairs; data={data_name} provides neither — use model=n2v for single frames"
            )

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        clean = batch.get("clean")
        truth = None if clean is None else clean.float()
        if "noisy" in batch and "noisy2" in batch:
            first, second = batch["noisy"].float(), batch["noisy2"].float()
        elif clean is not None:
            first, second, truth = self._require_noise().sample_pair(
                clean.float(), rng, pedestal=batch.get("pedestal")
            )
        else:
            raise ValueError("Noise2Noise pairing needs 'clean' or 'noisy' + 'noisy2'")
        out: Batch = {"input": first, "target": second}
        if truth is not None:
            out["truth"] = truth
        return self._finish(out, batch)
