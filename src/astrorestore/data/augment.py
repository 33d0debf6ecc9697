"""Batch augmentations that are safe for astronomical images: they move light, never create it.

The sky has no preferred orientation, so flips, 90-degree turns, small rotations and shifts give
free training data; but a restoration network must learn photometry too, so every transform
keeps the flux (flips, turns and whole-pixel shifts exactly; a small rotation within interpolation
error), pads by reflection (no black corners that look like masked data) and scales brightness
only mildly. Everything runs per batch on the batch's device with the caller's
``torch.Generator``; the geometry of one draw can be applied to several tensors (an image, its
clean target, a validity mask) so they stay aligned. kornia does the warps.

Rotations break noise that is correlated along one detector axis (structN2V's structured
blind spot); ``check_compatible`` refuses them for such methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kornia.geometry.transform import rotate, translate
from torch import Tensor

from astrorestore.checks import check_range
from astrorestore.errors import UserError

_AXES = ("row", "column")


@dataclass(frozen=True)
class AugmentParams:
    """One draw of per-image transform parameters (all shaped ``(B,)``, on the batch's device)."""

    flip_x: Tensor
    flip_y: Tensor
    quarter_turns: Tensor
    angle: Tensor
    shift: Tensor  # (B, 2) whole pixels, (dx, dy)
    gain: Tensor


class Augment:
    """Seeded, on-device, flux-preserving augmentation of ``(B, C, H, W)`` batches.

    Args:
        flips: random horizontal and vertical flips (exact).
        rot90: random multiples of 90 degrees (exact; 0 or 180 only for non-square batches).
        rotation_degrees: small rotations uniform in ``[-deg, deg]`` (bilinear, reflection
            padding); 0 turns them off. Interpolation mixes neighbouring pixels, so apply it to
            clean images before noise is drawn.
        translate_px: whole-pixel shifts uniform in ``[-px, px]`` on each axis, reflection padding.
        brightness_range: per-image flux scale ``[lo, hi]`` (e.g. ``[0.9, 1.1]``); ``None``: off.
        forbid_rotation: refuse any rotation (``rot90`` or ``rotation_degrees``) at start-up, for
            pipelines whose noise is tied to the detector axes.
    """

    def __init__(
        self,
        flips: bool = True,
        rot90: bool = True,
        rotation_degrees: float = 0.0,
        translate_px: int = 0,
        brightness_range: Sequence[float] | None = None,
        forbid_rotation: bool = False,
    ) -> None:
        if not 0.0 <= float(rotation_degrees) <= 45.0:
            raise UserError(
                f"augment.rotation_degrees={rotation_degrees!r} is invalid: use a value in "
                "[0, 45] (larger turns are rot90's job)"
            )
        if int(translate_px) != translate_px or translate_px < 0:
            raise UserError(
                f"augment.translate_px={translate_px!r} is invalid: use a whole number >= 0"
            )
        self.flips = bool(flips)
        self.rot90 = bool(rot90)
        self.rotation_degrees = float(rotation_degrees)
        self.translate_px = int(translate_px)
        self.brightness_range = (
            None
            if brightness_range is None
            else check_range("augment.brightness_range", brightness_range, low=0.0, strict_low=True)
        )
        self.forbid_rotation = bool(forbid_rotation)
        if self.forbid_rotation:
            self._refuse_rotation("forbid_rotation=true")

    @property
    def rotates(self) -> bool:
        return self.rot90 or self.rotation_degrees > 0

    def _refuse_rotation(self, reason: str) -> None:
        if self.rotates:
            # Name the keys as the user sets them (data.augment.*), and only those that rotate.
            keys = (["data.augment.rot90"] if self.rot90 else []) + (
                ["data.augment.rotation_degrees"] if self.rotation_degrees > 0 else []
            )
            given = " and ".join(
                f"{k}={'true' if k.endswith('rot90') else f'{self.rotation_degrees:g}'}"
                for k in keys
            )
            fix = " and ".join(f"{k}={'false' if k.endswith('rot90') else 0}" for k in keys)
            raise UserError(
                f"{given} rotate{'s' if len(keys) == 1 else ''} the noise, which {reason} "
                f"forbids: set {fix}"
            )

    def check_compatible(
        self, structured_axis: str | None = None, *, noisy_inputs: bool = False
    ) -> None:
        """Refuse, with one line, transforms that would break a method's noise assumptions.

        ``structured_axis`` (``row``/``column``): noise correlated along that detector axis (the
        structN2V mask is built for it), which any rotation would turn. ``noisy_inputs``: the
        augmentation sees noisy pixels whose independence the method relies on (Noise2Void,
        Noise2Noise), which interpolation (small rotations) would correlate.
        """
        if structured_axis is not None:
            if structured_axis not in _AXES:
                raise UserError(
                    f"structured_axis={structured_axis!r} is invalid: use row, column or null"
                )
            self._refuse_rotation(f"noise structured along {structured_axis}s (structN2V)")
        if noisy_inputs and self.rotation_degrees > 0:
            raise UserError(
                f"data.augment.rotation_degrees={self.rotation_degrees:g} interpolates noisy pixels "
                "and correlates their noise: set data.augment.rotation_degrees=0 for this method"
            )

    def sample(self, batch: Tensor, rng: torch.Generator | None = None) -> AugmentParams:
        """Draw the per-image parameters for ``batch`` (its size, shape and device)."""
        b, device = batch.shape[0], batch.device

        def uniform(*shape: int) -> Tensor:
            return torch.rand((b, *shape), generator=rng, device=device)

        # Every draw happens whatever the switches, so turning one transform off does not change
        # the others' random stream (same seed -> same flips with or without rotations).
        flip = uniform(2) < 0.5
        turns = torch.randint(0, 4, (b,), generator=rng, device=device)
        angle = (2.0 * uniform() - 1.0) * self.rotation_degrees
        t = self.translate_px
        shift = torch.randint(-t, t + 1, (b, 2), generator=rng, device=device)
        lo, hi = self.brightness_range or (1.0, 1.0)
        gain = lo + (hi - lo) * uniform()
        if batch.shape[-1] != batch.shape[-2]:
            turns = turns - turns % 2  # a quarter turn would change a non-square batch's shape
        return AugmentParams(
            flip_x=flip[:, 0] & self.flips,
            flip_y=flip[:, 1] & self.flips,
            quarter_turns=turns if self.rot90 else torch.zeros_like(turns),
            angle=angle,
            shift=shift,
            gain=gain,
        )

    def apply(self, x: Tensor, params: AugmentParams, *, photometric: bool | None = None) -> Tensor:
        """Apply one draw to ``x`` (``(B, C, H, W)``); ``photometric`` (default: ``x`` is float)
        also scales brightness. Boolean and integer tensors (masks) are warped with nearest
        neighbours, so they stay masks."""
        if x.dim() != 4 or x.shape[0] != params.gain.shape[0]:
            raise UserError(
                f"augment got a tensor of shape {tuple(x.shape)}: use (B, C, H, W) with the "
                f"batch size of the draw ({params.gain.shape[0]})"
            )
        is_float = x.is_floating_point()
        photometric = is_float if photometric is None else photometric
        out = x
        # Switches are checked on self, not on the drawn values: no host-device sync per batch.
        if self.flips:
            out = torch.where(params.flip_x[:, None, None, None], out.flip(-1), out)
            out = torch.where(params.flip_y[:, None, None, None], out.flip(-2), out)
        if self.rot90:
            turns = [torch.rot90(out, k, dims=(-2, -1)) for k in range(4)]
            if out.shape[-1] != out.shape[-2]:
                turns[1], turns[3] = turns[0], turns[2]  # never drawn (see sample)
            images = torch.arange(out.shape[0], device=out.device)
            out = torch.stack(turns)[params.quarter_turns, images]
        warped = out.float() if not is_float else out
        mode = "bilinear" if is_float else "nearest"
        if self.rotation_degrees > 0:
            warped = rotate(warped, params.angle.to(warped), mode=mode, padding_mode="reflection")
        if self.translate_px > 0:
            # Whole-pixel shifts land exactly on pixels, so "nearest" keeps the values exact.
            warped = translate(
                warped, params.shift.to(warped), mode="nearest", padding_mode="reflection"
            )
        out = warped if is_float else warped.round().to(x.dtype)
        if photometric and self.brightness_range is not None:
            out = out * params.gain[:, None, None, None].to(out)
        return out

    def __call__(self, *tensors: Tensor, rng: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """One draw applied to every tensor (same geometry; brightness on the float ones)."""
        if not tensors:
            raise UserError("augment needs at least one (B, C, H, W) tensor")
        params = self.sample(tensors[0], rng)
        return tuple(self.apply(t, params) for t in tensors)

    def __repr__(self) -> str:
        return (
            f"Augment(flips={self.flips}, rot90={self.rot90}, "
            f"rotation_degrees={self.rotation_degrees}, translate_px={self.translate_px}, "
            f"brightness_range={self.brightness_range}, forbid_rotation={self.forbid_rotation})"
        )
