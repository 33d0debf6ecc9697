"""Colorization pairing: an RGB clean image becomes its luminance (the input) and stays the
target and truth. The luminance is that of the chosen colour space, so a chroma-only generator
can keep it exactly. ``for_photographs = True``: photograph data modules accept it.
"""

from __future__ import annotations

import torch

from astrorestore.colour import check_colour_space, luminance
from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.data.pairings.base import Batch, Pairing
from astrorestore.errors import UserError


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

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        rgb = batch["clean"].float()
        grey = luminance(rgb, self.color_space)
        if self.noise is not None:
            grey, _ = self.noise(grey, rng)
        return self._finish({"input": grey, "target": rgb, "truth": rgb}, batch)

    def __repr__(self) -> str:
        return f"ColorizationPairing(color_space={self.color_space!r}, noise={self.noise!r})"
