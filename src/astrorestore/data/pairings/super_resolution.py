"""Super-resolution pairing: a clean image (grey or colour) is blurred by a Gaussian PSF,
area-averaged by the ``upscale_factor`` (each low-resolution pixel is the mean of its footprint, as a
detector integrates flux) and corrupted by the noise model. :meth:`degrade` is public: the
consistency check of a super-resolved frame re-degrades it the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.data.pairings.base import Batch, Pairing
from astrorestore.errors import UserError
from astrorestore.filters import gaussian_blur

SCALES = (2, 4)


class SuperResolutionPairing(Pairing):
    """Clean (C, H, W) -> (noisy (C, H/s, W/s) input, clean target/truth); grey or colour.

    Args:
        scale: the super-resolution factor, 2 or 4 (the config key ``data.pairing.scale``;
            kept as :attr:`upscale_factor`).
        psf_sigma: Gaussian PSF standard deviation in high-resolution pixels (0 = none).
        noise: noise model applied to the low-resolution frame (None = noiseless).
        channels: the model's image channels, when the model fixes them (refuses other data).
    """

    for_photographs = True

    def __init__(
        self,
        scale: int = 2,
        psf_sigma: float = 1.0,
        noise: NoiseModel | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__(noise or None)
        if scale not in SCALES:
            raise UserError(
                f"data.pairing.scale={scale!r} is invalid: use one of {', '.join(map(str, SCALES))}"
            )
        if not (psf_sigma >= 0 and math.isfinite(psf_sigma)):
            raise UserError(f"data.pairing.psf_sigma={psf_sigma!r} is invalid: use a value >= 0")
        self.upscale_factor = int(scale)
        self.psf_sigma = float(psf_sigma)
        self.channels = None if channels is None else int(channels)

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "clean" not in provides:
            raise UserError(
                f"super-resolution training needs clean high-resolution images, but "
                f"data={data_name} provides only noisy frames; use data=hubble or data=galaxy10"
            )
        if self.channels is not None and channels != self.channels:
            raise UserError(
                f"the model takes {self.channels}-channel images but data={data_name} has "
                f"{channels}; pass model.net.channels={channels}"
            )

    def degrade(self, clean: Tensor) -> Tensor:
        """Blur by the PSF and average over ``scale`` x ``scale`` footprints (no noise)."""
        h, w = clean.shape[-2:]
        if h % self.upscale_factor or w % self.upscale_factor:
            raise UserError(
                f"image size {h}x{w} is not a multiple of the scale {self.upscale_factor}; use "
                f"data.patch_size={h // self.upscale_factor * self.upscale_factor}"
            )
        return F.avg_pool2d(gaussian_blur(clean.float(), self.psf_sigma), self.upscale_factor)

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        clean = batch["clean"].float()
        low = self.degrade(clean)
        if self.noise is not None:
            low, _ = self.noise(low, rng)
        out: Batch = {"input": low, "target": clean, "truth": clean}
        if "valid" in batch:  # validity lives on the high-resolution grid of the target
            out["loss_mask"] = batch["valid"].bool()
        return out

    def __repr__(self) -> str:
        return (
            f"SuperResolutionPairing(scale={self.upscale_factor}, psf_sigma={self.psf_sigma}, "
            f"noise={self.noise!r})"
        )
