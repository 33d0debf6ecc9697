"""The noise model of every frame of a prepared folder, in the cache's units.

Each frame's :class:`~astrorestore.data.corruption.noise_estimate.FrameNoise` comes from its own
file (header GAIN/RDNOISE..., its ERR/VAR map, else a mean-variance fit on its pixels; see
:func:`~astrorestore.data.corruption.noise_estimate.estimate_frame_noise`), never a default.
The cache holds electrons when the header allowed the conversion: the gain is then 1 e- per
unit and the header's read noise (in electrons) is used as it is. A frame in other units (e.g.
MJy/sr without PHOTMJSR) cannot use a header gain in e-/DN, so its gain is fitted.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from astrorestore.data.corruption.noise_estimate import (
    GAIN_KEYS,
    FrameNoise,
    estimate_frame_noise,
)
from astrorestore.data.preparation.manifest import SPLITS
from astrorestore.data.preparation.tile_cache import Prepared
from astrorestore.errors import UserError
from astrorestore.io.fits_hdus import frame_keywords


def frame_noise_models(
    prepared: Prepared, root: Path, read_noise: float | None = None
) -> dict[str, list[FrameNoise]]:
    """``{split: [FrameNoise per frame]}``; ``read_noise`` (electrons) overrides the headers'.

    A frame whose noise cannot be told is a one-line UserError naming the file and the fix.
    """
    models: dict[str, list[FrameNoise]] = {}
    cache: dict[int, FrameNoise] = {}
    for split in SPLITS:
        models[split] = []
        for index in range(len(prepared.frames[split])):
            slot = prepared.frames[split][index]
            row = prepared.rows[slot.row]
            data, valid, sigma = prepared.frame(split, index)
            # Bands of one frame (a one-pointing folder) share the frame's model.
            if slot.row not in cache:
                cache[slot.row] = _one_frame(root, row, data, valid, sigma, read_noise)
            models[split].append(cache[slot.row])
    return models


def _one_frame(root, row, data, valid, sigma, read_noise) -> FrameNoise:
    keywords = frame_keywords(root / row.path, int(row.hdu))
    electrons = math.isfinite(row.to_electrons)
    if not electrons:
        # A header gain (e-/DN) does not apply to pixels in other units than DN.
        keywords = {k: v for k, v in keywords.items() if k.upper() not in GAIN_KEYS}
    try:
        noise = estimate_frame_noise(
            np.asarray(data),
            keywords,
            err=None if sigma is None else np.asarray(sigma),
            valid=np.asarray(valid, bool),
            gain=1.0 if electrons else None,
            read_noise_electrons=read_noise,
        )
    except UserError as error:
        if sigma is not None:
            # The ERR/VAR map is the per-pixel noise the recorruption uses; only GR2R's photon
            # counts need a gain, and it refuses a frame without one.
            unknown = f"unknown ({str(error).split(': ', 1)[-1].split('; pass', 1)[0]})"
            return FrameNoise(
                math.nan, math.nan, unknown, unknown, np.asarray(sigma), "ERR/VAR map"
            )
        raise UserError(
            f"{row.path}: {error}; for training: data.read_noise=<e-> (and data.gain=<e-/DN> to "
            "convert the frames to electrons)"
        ) from None
    if electrons:
        noise = replace(noise, gain_source="the frame in electrons")
    if read_noise is not None:
        noise = replace(noise, read_noise_source="data.read_noise (e-)")
    return noise
