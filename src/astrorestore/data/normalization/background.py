"""The sky as a smooth map, estimated the way astronomers do, and removed and restored exactly.

Real frames do not have one sky level: they have gradients, vignetted corners, galaxy halos,
scattered light and over-subtracted (negative) regions. :func:`estimate_background` measures
the sky with photutils ``Background2D`` (sigma-clipped medians in boxes, a median filter over
the boxes, spline interpolation back to pixels) after masking the sources: a first pass gives
a rough map and its noise, sources detected above that noise are dilated into a mask, and the
map is measured again without them. Pixels below the map are data, not noise: nothing here
clips them.

Defaults measured on a synthetic 1024x1024 frame (sky 60 e- in the centre falling to 6.3 e- in
the corners, ``1 / (1 + (r / 0.7 r_corner)^6)``, 300 stars, an n=4 Sersic galaxy with
r_e = 85 px, Poisson + 3 e- read noise), scoring the worst 16x16 region of ``map - true sky``
in units of the noise at the median sky (7.5 e-): boxes of 1/32 of the frame's side with a
3x3 filter and 3-sigma detection after 2 px smoothing, two masking passes, give 0.82 sigma
(at the galaxy's halo) and +1.8 e- in the darkest corner; 1/16 of the side gives 1.21 sigma
and +5.4 e- in the corner, 1/8 gives +15 e- in the corner (the issue's 53 e- where the truth
is 7). A 2-sigma detection masks the halo but leaves 37-56 % of the frame as sky and
interpolates the dome's peak low (-8 to -28 e-). On a 512 px frame 1/32 (16 px) gives
0.66 sigma and +1.3 e- in the corner, against 1.45 sigma / +4.5 e- for 32 px boxes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from astrorestore.errors import UserError

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

#: The default box is the frame's shorter side divided by this, clipped to the limits below.
BOXES_ACROSS = 32
MIN_BOX = 16
MAX_BOX = 128
#: Fewer usable boxes than this cannot describe a smooth map with a 3x3 filter over it.
MIN_SKY_BOXES = 9


def default_box_size(shape: tuple[int, ...]) -> int:
    """``min(H, W) / 32`` rounded to a multiple of 8, within 16..128 px."""
    side = min(shape[-2:])
    box = int(round(side / BOXES_ACROSS / 8.0)) * 8
    return int(min(max(box, MIN_BOX), MAX_BOX))


@dataclass(frozen=True)
class BackgroundMap:
    """A sky map (and its rms map) for one 2-D frame, in the frame's units.

    ``subtract`` and ``add`` broadcast over leading axes (``(..., H, W)``), accept numpy or
    torch and return float64 of the same kind. The map holds float32-representable values, so
    for a float32 frame ``x - sky`` is exact in float64 and ``add(subtract(x))`` gives back
    ``x`` to the last bit (unless a pixel is ~2^29 times smaller than the sky); a float64 frame
    comes back to within one float64 rounding.
    """

    background: np.ndarray
    rms: np.ndarray
    box_size: int
    filter_size: int
    #: boxes that held enough unmasked sky to be measured, and how many boxes there are
    sky_boxes: int
    total_boxes: int
    #: the masked percentage above which a box was left out (50, or 90 in a crowded field)
    exclude_percentile: float
    #: fraction of the frame's finite pixels left as sky after source masking
    sky_fraction: float
    source_mask: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.background.shape)  # type: ignore[return-value]

    def _map_like(self, x: ArrayLike, what: np.ndarray) -> np.ndarray | torch.Tensor:
        if tuple(x.shape[-2:]) != self.shape:
            raise UserError(
                f"background map is {self.shape[0]}x{self.shape[1]} but the image is "
                f"{x.shape[-2]}x{x.shape[-1]}: estimate the map on the same frame"
            )
        if isinstance(x, torch.Tensor):
            return torch.from_numpy(what).to(device=x.device, dtype=torch.float64)
        return what

    def subtract(self, x: ArrayLike) -> ArrayLike:
        """``x - background`` in float64 (numpy or torch as given)."""
        return self._apply(x, sign=-1.0)

    def add(self, x: ArrayLike) -> ArrayLike:
        """``x + background``: the exact inverse of :meth:`subtract`."""
        return self._apply(x, sign=1.0)

    def _apply(self, x: ArrayLike, sign: float) -> ArrayLike:
        sky = self._map_like(x, self.background)
        if isinstance(x, torch.Tensor):
            return x.to(torch.float64) + sign * sky
        return np.asarray(x).astype(np.float64) + sign * sky


def _as_frame(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    data = np.asarray(frame, dtype=np.float64)
    if data.ndim != 2:
        raise UserError(
            f"estimate_background takes one 2-D frame; got shape {data.shape}: pass one plane"
        )
    return data


def _source_mask(
    data: np.ndarray,
    sky: np.ndarray,
    rms: np.ndarray,
    invalid: np.ndarray,
    nsigma: float,
    npixels: int,
    dilate: int,
    smooth: float,
) -> np.ndarray:
    """Pixels of sources detected ``nsigma`` above the map, grown by ``dilate`` pixels.

    Detection runs on the sky-subtracted frame smoothed by a Gaussian of ``smooth`` px, with
    the threshold scaled by the smoothing's noise reduction: the faint outskirts of a large
    galaxy are below the noise per pixel but not per resolution element, and a sky measured
    through them would be raised by the halo.
    """
    from photutils.segmentation import detect_sources
    from photutils.utils import NoDetectionsWarning, circular_footprint
    from scipy import ndimage

    residual = np.where(invalid, 0.0, data - sky)
    if smooth > 0:
        residual = ndimage.gaussian_filter(residual, smooth)
        impulse = np.zeros((8 * int(np.ceil(smooth)) + 1,) * 2)
        impulse[impulse.shape[0] // 2, impulse.shape[1] // 2] = 1.0
        reduction = float(np.sqrt(np.sum(ndimage.gaussian_filter(impulse, smooth) ** 2)))
    else:
        reduction = 1.0
    threshold = nsigma * reduction * rms
    with warnings.catch_warnings():
        # "No sources were found" is an answer here (an empty field), not a problem.
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segments = detect_sources(residual, threshold, npixels, mask=invalid)
    if segments is None:
        return np.zeros(data.shape, bool)
    if dilate <= 0:
        return segments.data > 0
    return segments.make_source_mask(footprint=circular_footprint(dilate))


def _background2d(
    data: np.ndarray,
    mask: np.ndarray,
    box_size: int,
    filter_size: int,
    exclude_percentile: float,
    sigma: float,
):
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground, StdBackgroundRMS

    return Background2D(
        data,
        box_size,
        mask=mask,
        filter_size=filter_size,
        sigma_clip=SigmaClip(sigma=sigma, maxiters=10),
        bkg_estimator=MedianBackground(),
        bkg_rms_estimator=StdBackgroundRMS(),
        exclude_percentile=exclude_percentile,
    )


def estimate_background(
    frame: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor | None = None,
    *,
    box_size: int | None = None,
    filter_size: int = 3,
    sigma: float = 3.0,
    detect_nsigma: float = 3.0,
    detect_npixels: int = 5,
    dilate: int = 5,
    detect_smooth: float = 2.0,
    iterations: int = 2,
    exclude_percentile: float = 50.0,
    crowded_exclude_percentile: float = 90.0,
    min_sky_boxes: int = MIN_SKY_BOXES,
) -> BackgroundMap:
    """The frame's sky as a smooth map, with sources and invalid pixels masked.

    ``valid``: a boolean map of usable pixels (NaN/inf pixels are always invalid).
    ``box_size``: side of the boxes in pixels (default :func:`default_box_size`).
    ``exclude_percentile``: a box with more than this percent of masked pixels is not
    measured but interpolated from its neighbours (50: the mask of a crowded box does not
    throw away the sky around it, while a box that is mostly galaxy is left out); where that
    leaves fewer than ``min_sky_boxes``, ``crowded_exclude_percentile`` is used instead.
    ``iterations``: source-detection passes after the first, unmasked one.

    Raises UserError when fewer than ``min_sky_boxes`` boxes hold enough sky (a frame full of
    sources, mostly NaN, or a box size too large for the frame).
    """
    data = _as_frame(frame)
    invalid = ~np.isfinite(data)
    if valid is not None:
        valid_np = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else valid
        valid_np = np.asarray(valid_np, bool)
        if valid_np.shape != data.shape:
            raise UserError(
                f"valid mask is {valid_np.shape} but the frame is {data.shape}: pass a mask "
                "of the frame's shape"
            )
        invalid |= ~valid_np
    box = int(box_size) if box_size is not None else default_box_size(data.shape)
    if box < 4 or box > min(data.shape):
        raise UserError(
            f"background box_size={box} does not fit a {data.shape[0]}x{data.shape[1]} frame: "
            f"use 4..{min(data.shape)} (default {default_box_size(data.shape)})"
        )
    total_boxes = int(np.ceil(data.shape[0] / box) * np.ceil(data.shape[1] / box))
    # photutils rejects NaNs inside the data even where masked; the values there never count.
    work = np.where(invalid, 0.0, data)

    sources = np.zeros(data.shape, bool)
    for step in range(iterations + 1):
        mask = invalid | sources
        # A crowded field (a cluster, a galaxy filling the frame) leaves few boxes half sky;
        # they are then measured from the sky between the sources (up to 90 % masked).
        for exclude in dict.fromkeys(
            (exclude_percentile, max(exclude_percentile, crowded_exclude_percentile))
        ):
            result, sky_boxes = _measure(work, mask, box, filter_size, exclude, sigma)
            if sky_boxes >= min_sky_boxes:
                break
        if sky_boxes < min_sky_boxes:
            why = f"only {sky_boxes} boxes are {100 - exclude:.0f}% sky, {min_sky_boxes} needed"
            raise _too_little_sky(data.shape, box, mask, why)
        if step == iterations:
            break
        sources = _source_mask(
            work,
            np.asarray(result.background),
            np.asarray(result.background_rms),
            invalid,
            detect_nsigma,
            detect_npixels,
            dilate,
            detect_smooth,
        )
    finite = np.count_nonzero(~invalid)
    sky_fraction = float(np.count_nonzero(~(invalid | sources)) / max(finite, 1))
    return BackgroundMap(
        # Rounded to float32 values so that a float32 frame minus the map is exact in float64.
        background=np.asarray(result.background, dtype=np.float32).astype(np.float64),
        rms=np.asarray(result.background_rms, dtype=np.float64),
        box_size=box,
        filter_size=filter_size,
        sky_boxes=sky_boxes,
        exclude_percentile=exclude,
        total_boxes=total_boxes,
        sky_fraction=sky_fraction,
        source_mask=sources,
    )


def _measure(
    work: np.ndarray, mask: np.ndarray, box: int, filter_size: int, exclude: float, sigma: float
):
    """``(Background2D or None, boxes measured)`` for one masking and exclusion level."""
    try:
        result = _background2d(work, mask, box, filter_size, exclude, sigma)
    except ValueError:
        # photutils raises when no box keeps enough unmasked pixels to be measured.
        return None, 0
    # A box is measured when its unmasked pixels reach (100 - exclude) % of it.
    needed = max(box * box * (1.0 - exclude / 100.0), 1.0)
    return result, int(np.count_nonzero(np.asarray(result.n_pixels_mesh) >= needed))


def _too_little_sky(shape: tuple[int, ...], box: int, mask: np.ndarray, why: str) -> UserError:
    sky = 100.0 * (1.0 - float(np.mean(mask)))
    return UserError(
        f"cannot estimate the background of this {shape[0]}x{shape[1]} frame: {sky:.0f}% of "
        f"its pixels are sky ({why}); pass a smaller box size (now {box}: infer.py "
        "sky_box_size=8, training data.normalizer.box_size=8), a valid mask that keeps more "
        "sky, or a frame with empty sky"
    )
