"""Pairings that degrade clean images for the generative methods: colour -> grey, sharp -> small.

- :class:`ColorizationPairing`: an RGB clean image becomes its luminance (the input) and stays
  the target and truth. The luminance is that of the chosen colour space, so a chroma-only
  generator can keep it exactly.
- :class:`SuperResolutionPairing`: a clean image (grey or colour) is blurred by a Gaussian PSF,
  area-averaged by ``scale`` (each low-resolution pixel is the mean of its footprint, as a
  detector integrates flux) and corrupted by the noise model. :meth:`degrade` is public: the
  consistency check of a super-resolved frame re-degrades it the same way.

Both declare ``for_photographs = True``: the photograph data modules (``data=hubble``,
``data=galaxy10``) accept only such pairings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from astrorestore.data.colour_spaces import check_colour_space, luminance
from astrorestore.data.noise import NoiseModel
from astrorestore.data.pairing import Batch, Pairing
from astrorestore.errors import UserError

SCALES = (2, 4)


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` pixels, radius ceil(3 sigma)."""
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, C, H, W) batch, reflecting at the borders (flux kept)."""
    if sigma <= 0:
        return image
    kernel = gaussian_kernel(sigma, image.device).to(image.dtype)
    channels, radius = image.shape[1], kernel.numel() // 2
    if radius >= min(image.shape[-2:]):  # reflect padding needs the image to be wider
        radius = min(image.shape[-2:]) - 1
        kernel = kernel[kernel.numel() // 2 - radius : kernel.numel() // 2 + radius + 1]
        kernel = kernel / kernel.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)


class ColorizationPairing(Pairing):
    """RGB clean -> (grey luminance input, RGB target/truth).

    Args:
        color_space: ``rgb`` | ``lab`` | ``ycbcr``: which luminance the input is (BT.601 luma for
            rgb/ycbcr, L*/100 for lab); the generator must use the same space.
        noise: optional noise model applied to the grey input (None = clean grey).
    """

    for_photographs = True

    def __init__(self, color_space: str = "rgb", noise: NoiseModel | None = None) -> None:
        super().__init__(noise or None)
        self.color_space = check_colour_space(color_space)

    def input_channels(self, channels: int) -> int:
        return 1

    def output_channels(self, channels: int) -> int:
        return 3

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if channels != 3 or "clean" not in provides:
            raise UserError(
                f"colorization needs clean colour (RGB) images, but data={data_name} has "
                f"{channels}-channel {'clean' if 'clean' in provides else 'noisy'} frames; "
                "use data=hubble or data=galaxy10"
            )

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        rgb = batch["clean"].float()
        grey = luminance(rgb, self.color_space)
        if self.noise is not None:
            grey, _ = self.noise(grey, generator)
        return self._finish({"input": grey, "target": rgb, "truth": rgb}, batch)

    def __repr__(self) -> str:
        return f"ColorizationPairing(color_space={self.color_space!r}, noise={self.noise!r})"


class SuperResolutionPairing(Pairing):
    """Clean (C, H, W) -> (noisy (C, H/s, W/s) input, clean target/truth); grey or colour.

    Args:
        scale: 2 or 4.
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
        self.scale = int(scale)
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
        if h % self.scale or w % self.scale:
            raise UserError(
                f"image size {h}x{w} is not a multiple of the scale {self.scale}; use "
                f"data.patch_size={h // self.scale * self.scale}"
            )
        return F.avg_pool2d(gaussian_blur(clean.float(), self.psf_sigma), self.scale)

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        clean = batch["clean"].float()
        low = self.degrade(clean)
        if self.noise is not None:
            low, _ = self.noise(low, generator)
        out: Batch = {"input": low, "target": clean, "truth": clean}
        if "valid" in batch:  # validity lives on the high-resolution grid of the target
            out["loss_mask"] = batch["valid"].bool()
        return out

    def __repr__(self) -> str:
        return (
            f"SuperResolutionPairing(scale={self.scale}, psf_sigma={self.psf_sigma}, "
            f"noise={self.noise!r})"
        )
