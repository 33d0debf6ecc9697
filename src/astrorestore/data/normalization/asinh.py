"""Exactly invertible normalisation for the huge dynamic range of astronomical images.

``z = asinh((x - offset) / scale)`` with ``offset`` the sky level and ``scale`` a few times the
sky noise: the map is linear within ~``scale`` of the sky (noise keeps its Gaussian shape, faint
sources keep their contrast) and logarithmic in star cores, so a 1e4 e- core enters the loss at
~7 rather than ~500 and nothing needs clipping. ``inverse`` undoes it exactly, so restored images
return to electrons for photometry.

``background="map"`` makes ``offset`` a per-pixel sky map of the whole frame
(:func:`~astrorestore.data.normalization.background.estimate_background`: photutils
``Background2D`` with sigma clipping and source masking) instead of one median: a vignetted
corner or a sky gradient then sits at z ~ 0 like the rest of the sky, instead of far below it.
The scale (the noise) stays one number per image. A map needs the whole frame, so it is made
where the whole frame is known (the data modules' fields and frames, ``infer.py`` before
tiling) and carried to the crops; :meth:`AsinhNormalizer.stats` of a crop alone stays the
median.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from torch import Tensor

from astrorestore.elementwise import asinh_, sinh
from astrorestore.errors import UserError
from astrorestore.medians import nanmedian_and_mad_hw, nanmedian_hw

# 1.4826 * MAD is the standard deviation of a Gaussian.
_MAD_TO_SIGMA = 1.4826

#: What ``offset`` is: one NaN-median per image, or a per-pixel sky map of the whole frame.
BACKGROUNDS = ("median", "map")


class AsinhNormalizer:
    """Per image and channel ``asinh((x - sky) / (softening * sigma))`` and its exact inverse."""

    # Lower bound on ``scale``: absolute, plus relative to the sky level so that a constant image
    # (sigma = 0) maps to 0 instead of dividing by zero, at any unit (electrons or [0, 1] data).
    ABS_FLOOR = 1e-6
    REL_FLOOR = 1e-6

    def __init__(
        self, softening: float = 3.0, background: str = "median", box_size: int | None = None
    ) -> None:
        if not (softening > 0 and math.isfinite(softening)):
            raise UserError(
                f"data.normalizer.softening={softening!r} is invalid: use a finite value > 0"
            )
        if background not in BACKGROUNDS:
            raise UserError(
                f"data.normalizer.background={background!r} is invalid: use median (one sky "
                "level per image) or map (a per-pixel sky map of the whole frame)"
            )
        if box_size is not None and not (
            isinstance(box_size, int) and not isinstance(box_size, bool) and box_size >= 4
        ):
            raise UserError(
                f"data.normalizer.box_size={box_size!r} is invalid: use an integer >= 4 (pixels) "
                "or null for 1/32 of the frame's shorter side"
            )
        self.softening = float(softening)
        self.background = str(background)
        self.box_size = None if box_size is None else int(box_size)

    @property
    def per_pixel(self) -> bool:
        """Whether ``offset`` is a per-pixel map of the whole frame (``background=map``)."""
        return self.background == "map"

    def sky_map(self, frame: np.ndarray | Tensor, valid: np.ndarray | None = None) -> np.ndarray:
        """The sky map (float32, ``(H, W)``) of one whole 2-D frame, non-finite pixels and
        ``~valid`` ignored; a UserError (one line) when the frame has too little sky.

        photutils ``Background2D`` with source masking (see ``estimate_background``) costs
        ~0.34 s on a 256 px field, 0.45 s at 512 px and 1.5 s at 1024 px (one core; a 256 px
        field renders in 0.03 s): affordable once per field, frame or image, which is where it
        is called, never per crop.
        """
        from astrorestore.data.normalization.background import estimate_background

        sky = estimate_background(frame, valid, box_size=self.box_size)
        return sky.background.astype(np.float32)

    def frame_stats(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`stats` of whole frames ``(B, C, H, W)``; with ``background=map`` the offset is
        the ``(B, C, H, W)`` sky map of every plane (made on the CPU, returned on the frames'
        device)."""
        offset, scale = self.stats(frames)
        if not self.per_pixel:
            return offset, scale
        planes = frames.detach().float().cpu().numpy()
        maps = np.stack([[self.sky_map(plane) for plane in image] for image in planes])
        return torch.from_numpy(maps).to(frames.device), scale

    def stats(self, noisy: Tensor) -> tuple[Tensor, Tensor]:
        """Per image and channel ``(offset, scale)``, each ``(B, C, 1, 1)``, from a noisy batch.

        ``offset`` is the NaN-ignoring median (the sky). The noise sigma comes from the MAD of
        horizontal pixel-to-pixel differences divided by sqrt(2), not from the plain MAD: the
        differences cancel everything smooth on the pixel scale (extended galaxy light, sky
        gradients, the wings of bright stars) which otherwise widens the plain pixel
        distribution and inflates sigma, while the median ignores the few sharp cores left.
        (It assumes pixel noise that is uncorrelated between neighbours, true of raw frames.)
        Non-finite pixels are ignored in both.
        """
        if noisy.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(noisy.shape)}")
        x = noisy.float()
        offset = nanmedian_hw(x, finite=True)
        if x.shape[-1] > 1:
            diff = x[..., :, 1:] - x[..., :, :-1]
        else:
            diff = x[..., 1:, :] - x[..., :-1, :]
        if diff.numel() > 0:
            _, mad = nanmedian_and_mad_hw(diff, finite=True)
            sigma = _MAD_TO_SIGMA * mad / math.sqrt(2.0)
        else:
            sigma = torch.zeros_like(offset)
        # An all-NaN image has no statistics: treat it as zero sky, minimum scale.
        offset = torch.nan_to_num(offset, nan=0.0)
        sigma = torch.nan_to_num(sigma, nan=0.0)
        floor = self.ABS_FLOOR + self.REL_FLOOR * offset.abs()
        scale = torch.maximum(self.softening * sigma, floor)
        return offset, scale

    def forward(self, x: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        """Electrons -> normalised: ``asinh((x - offset) / scale)``."""
        shifted = x - offset
        if shifted.dtype != torch.promote_types(shifted.dtype, scale.dtype):
            return torch.asinh(shifted / scale)
        return asinh_(shifted.div_(scale))  # in place: no second frame-sized buffer

    def inverse(self, z: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
        """Normalised -> electrons: ``sinh(z) * scale + offset`` (exact inverse of forward)."""
        u = sinh(z)
        if u.dtype != torch.promote_types(u.dtype, torch.promote_types(scale.dtype, offset.dtype)):
            return u * scale + offset
        return u.mul_(scale).add_(offset)

    __call__ = forward

    def __repr__(self) -> str:
        # The median form keeps its old text: caches keyed on it stay valid.
        if not self.per_pixel:
            return f"AsinhNormalizer(softening={self.softening})"
        return (
            f"AsinhNormalizer(softening={self.softening}, background={self.background!r}, "
            f"box_size={self.box_size})"
        )


# Noise in the normalised space -------------------------------------------------------------
#
# In electrons a pixel's noise is ``sigma_e^2 = sigma_sky^2 + (x - offset) / g`` (read and sky
# noise, plus the shot noise of the source above the sky, gain ``g`` in photons per electron).
# Divided by ``scale = softening * sigma_sky`` it is, in the linear units ``u = sinh(z)``,
#
#     var_u = 1 / softening^2 + max(u, 0) / G,      G = g * scale ("photons per unit"),
#
# and through ``dz/du = 1 / sqrt(1 + u^2) = 1 / cosh z`` in the normalised space
# ``sigma_z = sqrt(var_u) / cosh(z)``. ``G`` depends on the gain and on the frame's own sky noise
# in electrons, which a normalised tile no longer carries, so it is a setting: None drops the
# shot-noise term (a lower bound on the noise of any detector, so what is bounded by it holds
# without knowing the gain); a number lets star cores be denoised too, at one gain and sky for
# every frame; ``frame`` takes each frame's own ``G`` (its gain from the frame noise model times
# its scale), handed to the passes that restore it by :func:`frame_noise`.

#: |z| beyond which sinh/cosh are clamped: asinh-normalised frames stay well below it (z = 12 is
#: 8e4 normaliser scales above the sky); the clamp only keeps them finite in float32 for garbage.
Z_LIMIT = 40.0


def check_noise_model(
    softening: float, photons_per_unit: float | str | None, group: str = "model.net.noise"
) -> None:
    """Raise UserError unless ``softening > 0`` and ``photons_per_unit`` is None, > 0 or
    ``"frame"`` (the two facts of :class:`AsinhNoise`; the noise-weighted loss checks them with
    ``group="model.loss"``)."""
    if not (math.isfinite(softening) and softening > 0):
        raise UserError(
            f"{group}.softening={softening!r} is invalid: use the normaliser's softening "
            "(> 0), i.e. ${data.normalizer.softening}"
        )
    if photons_per_unit == FRAME:
        return
    if photons_per_unit is not None and not (
        isinstance(photons_per_unit, (int, float))
        and math.isfinite(photons_per_unit)
        and photons_per_unit > 0
    ):
        raise UserError(
            f"{group}.photons_per_unit={photons_per_unit!r} is invalid: use a value > 0 "
            "(gain x normaliser scale in electrons), frame (each frame's own gain) or null to "
            "bound by the sky noise"
        )


def linear_noise_variance(
    u: Tensor, softening: float, photons_per_unit: float | Tensor | None = None
) -> Tensor:
    """Noise variance of each pixel in the linear units ``u = sinh(z)`` (see above)."""
    variance = torch.full_like(u, 1.0 / softening**2)
    if photons_per_unit is not None:
        variance = variance + u.clamp_min(0.0) / photons_per_unit
    return variance


def asinh_noise_sigma(
    z: Tensor, softening: float, photons_per_unit: float | Tensor | None = None
) -> Tensor:
    """Noise sigma of each pixel of the normalised image ``z = asinh((x - offset) / scale)``.

    Args:
        softening: the normaliser's softening (``scale = softening * sigma_sky``).
        photons_per_unit: ``gain * scale`` (a number, or one per image broadcasting to ``z``);
            ``None`` ignores shot noise (a lower bound).
    """
    z = z.clamp(-Z_LIMIT, Z_LIMIT)
    return torch.sqrt(
        linear_noise_variance(torch.sinh(z), softening, photons_per_unit)
    ) / torch.cosh(z)


#: ``model.net.noise.photons_per_unit=frame``: the shot noise is each frame's own, given per
#: batch by :func:`frame_noise` (the data modules' ``photons_per_unit``, ``infer.py``'s frame
#: noise model), not one number for every frame.
FRAME = "frame"

# Photons per normaliser unit of the images being restored now (``(B, C, 1, 1)``, or None when
# no frame noise model was given): set by :func:`frame_noise` around a network's passes, read by
# ``AsinhNoise(photons_per_unit="frame")``. A context variable, not an argument, so the noise
# reaches the bound inside a network (and the tile post-processing) through every wrapper a
# restorer has (self-ensemble, autocast, recorrupted means) without each passing it on.
_FRAME_PHOTONS: ContextVar[Tensor | None] = ContextVar("frame_photons_per_unit", default=None)


@contextmanager
def frame_noise(photons_per_unit: Tensor | None) -> Iterator[None]:
    """Within the block, a frame-noise :class:`AsinhNoise` uses ``photons_per_unit`` (gain in
    photons per data unit times the normaliser's scale, one per image: ``(B, 1 or C, 1, 1)``,
    matching the batch the network sees; inf where a frame has no shot noise to add)."""
    token = _FRAME_PHOTONS.set(photons_per_unit)
    try:
        yield
    finally:
        _FRAME_PHOTONS.reset(token)


def photons_per_unit(gain: Tensor, scale: Tensor) -> Tensor:
    """``G = gain * scale`` per image: ``gain`` (photons per data unit, one per image, any
    shape with the batch first) times the normaliser's ``scale`` (``(B, C, 1, 1)``)."""
    gain = torch.as_tensor(gain).to(scale.device, torch.float32)
    return gain.reshape(-1, *([1] * (scale.dim() - 1))) * scale.float()


def photons_setting(photons_per_unit: float | str | None) -> float | str | None:
    """A checked ``photons_per_unit`` setting as it is kept: None, ``"frame"`` or a float."""
    if photons_per_unit is None or photons_per_unit == FRAME:
        return photons_per_unit
    return float(photons_per_unit)


def given_photons(
    photons_per_unit: float | str | None, group: str = "model.net.noise"
) -> Tensor | float | None:
    """``photons_per_unit`` as a number, or for ``"frame"`` the one :func:`frame_noise` gives
    now (a UserError naming ``group`` where none was given: never a guess)."""
    if photons_per_unit != FRAME:
        return photons_per_unit
    given = _FRAME_PHOTONS.get()
    if given is None:
        raise UserError(
            f"{group}.photons_per_unit=frame, but no frame noise model was given for these "
            "images: restore with infer.py (it reads each frame's gain) and train on data whose "
            "items carry one (a noise= model with a gain, or FITS frames); or use "
            "photons_per_unit=null (sky noise only)"
        )
    return given


class AsinhNoise:
    """The noise model of the asinh-normalised space: what a bounded network and the give-back
    post-processing need to know of the noise, built from config and passed to them (networks
    do not import the data layer).

    Args:
        softening: the normaliser's softening (``${data.normalizer.softening}``).
        photons_per_unit: ``gain * normaliser scale`` to add shot noise; None (sky only); or
            ``"frame"``: each frame's own, given by :func:`frame_noise` around every pass (the
            data modules and ``infer.py`` do; a pass without one is refused, never guessed).
    """

    def __init__(self, softening: float = 3.0, photons_per_unit: float | str | None = None) -> None:
        check_noise_model(softening, photons_per_unit)
        self.softening = float(softening)
        self.photons_per_unit = photons_setting(photons_per_unit)

    @property
    def per_frame(self) -> bool:
        """Whether the shot noise is each frame's own (``photons_per_unit=frame``)."""
        return self.photons_per_unit == FRAME

    def _photons(self) -> Tensor | float | None:
        return given_photons(self.photons_per_unit)

    def __call__(self, z: Tensor) -> Tensor:
        """Noise sigma of each pixel of the normalised ``z``."""
        return asinh_noise_sigma(z, self.softening, self._photons())

    def linear_variance(self, u: Tensor) -> Tensor:
        """Noise variance of each pixel in the linear units ``u = sinh(z)``."""
        return linear_noise_variance(u, self.softening, self._photons())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsinhNoise) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.softening, self.photons_per_unit))

    def __repr__(self) -> str:
        return f"AsinhNoise(softening={self.softening}, photons_per_unit={self.photons_per_unit})"
