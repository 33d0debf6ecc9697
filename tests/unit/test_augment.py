"""Tests of the flux-preserving, seeded batch augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrorestore.data.augment import Augment
from astrorestore.data.simulation.scene import render_field
from astrorestore.errors import UserError


def _fields(batch: int = 6, size: int = 64) -> torch.Tensor:
    images = [render_field(size, np.random.default_rng(s))[0] for s in range(batch)]
    return torch.from_numpy(np.stack(images))[:, None]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flips_and_quarter_turns_preserve_every_pixel_value() -> None:
    x = _fields()
    (y,) = Augment(flips=True, rot90=True)(x, rng=_gen())
    assert y.shape == x.shape and y.dtype == torch.float32
    # A permutation of the pixels: the same sorted values per image, so the same sum (up to the
    # order of the float additions).
    torch.testing.assert_close(
        y.double().sum(dim=(1, 2, 3)), x.double().sum(dim=(1, 2, 3)), rtol=1e-12, atol=0
    )
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    assert not torch.equal(y, x)
    # Each image is one of its own 8 flips/turns.
    for xi, yi in zip(x, y, strict=True):
        candidates = [torch.rot90(f, k, (-2, -1)) for f in (xi, xi.flip(-1)) for k in range(4)]
        assert any(torch.equal(yi, c) for c in candidates)


def test_non_square_batches_keep_their_shape() -> None:
    x = torch.rand(8, 2, 16, 24)
    (y,) = Augment(rot90=True)(x, rng=_gen())
    assert y.shape == x.shape
    assert torch.allclose(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))


def test_small_rotations_preserve_flux_away_from_edges() -> None:
    # A smooth centred source: the rotated light stays inside the frame.
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = 1e4 * torch.exp(-((xx - 30.3) ** 2 + (yy - 33.6) ** 2 / 2.0) / 18.0) + 20.0
    x = blob.expand(16, 1, 64, 64).clone()
    aug = Augment(flips=False, rot90=False, rotation_degrees=20.0)
    params = aug.sample(x, _gen())
    y = aug.apply(x, params)
    assert params.angle.abs().max() > 10.0
    r = torch.hypot(xx - 31.5, yy - 31.5)
    inner = r < 24
    ratio = ((y - 20.0) * inner).sum(dim=(1, 2, 3)) / ((x - 20.0) * inner).sum(dim=(1, 2, 3))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.01)
    # And it really rotated: the elongated source changed its pixels.
    assert (y - x).abs().amax() > 100.0


def test_translations_are_whole_pixel_and_reflect_at_the_edges() -> None:
    x = _fields(batch=4)
    aug = Augment(flips=False, rot90=False, translate_px=5)
    params = aug.sample(x, _gen(1))
    y = aug.apply(x, params)
    for i in range(4):
        dx, dy = (int(v) for v in params.shift[i])
        h, w = 64, 64
        # The part that stays in the frame is exactly the shifted original.
        src = x[i, 0, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        dst = y[i, 0, max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
        assert torch.equal(src, dst)
    assert params.shift.abs().max() <= 5 and params.shift.abs().max() > 0
    # Reflection padding: no pixel was filled with zeros.
    assert y.min() >= x.min()


def test_same_seed_same_output_and_mask_follows_image() -> None:
    x = _fields(batch=8)
    mask = x > 100.0
    aug = Augment(rotation_degrees=10.0, translate_px=3, brightness_range=(0.9, 1.1))
    a = aug(x, mask, rng=_gen(7))
    b = aug(x, mask, rng=_gen(7))
    c = aug(x, mask, rng=_gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    image, moved_mask = a
    assert moved_mask.dtype == torch.bool
    # The mask went through the same geometry (no brightness): compare with a geometry-only run.
    geometry_only = Augment(rotation_degrees=10.0, translate_px=3)
    (same,) = geometry_only(mask.float(), rng=_gen(7))
    agree = (moved_mask == (same > 0.5)).float().mean()
    assert agree > 0.995


def test_brightness_is_a_mild_per_image_scale() -> None:
    x = _fields(batch=16)
    aug = Augment(flips=False, rot90=False, brightness_range=(0.9, 1.1))
    (y,) = aug(x, rng=_gen())
    gain = (y / x).flatten(1)
    assert torch.allclose(gain, gain[:, :1].expand_as(gain), rtol=1e-6)
    assert gain.min() >= 0.9 and gain.max() <= 1.1 and gain[:, 0].std() > 0.02


def test_structured_noise_refuses_rotations() -> None:
    Augment(rot90=False).check_compatible("row")  # flips keep rows rows
    with pytest.raises(UserError, match="augment.rot90=false") as info:
        Augment(rot90=True).check_compatible("row")
    assert "\n" not in str(info.value)
    # The keys as the user sets them, and only the one that rotates (it read
    # "augment.rot90=True / augment.rotation_degrees=0 rotate the noise").
    assert str(info.value).startswith("data.augment.rot90=true rotates the noise")
    assert "rotation_degrees" not in str(info.value)
    with pytest.raises(UserError, match="structN2V"):
        Augment(rot90=False, rotation_degrees=5.0).check_compatible("column")
    with pytest.raises(UserError, match="forbid_rotation"):
        Augment(rot90=True, forbid_rotation=True)
    with pytest.raises(UserError, match="rotation_degrees=0"):
        Augment(rot90=False, rotation_degrees=5.0).check_compatible(noisy_inputs=True)
    with pytest.raises(UserError, match="structured_axis"):
        Augment(rot90=False).check_compatible("diagonal")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rotation_degrees": 90.0}, "augment.rotation_degrees"),
        ({"translate_px": 1.5}, "augment.translate_px"),
        ({"brightness_range": (1.2, 0.8)}, "augment.brightness_range"),
    ],
)
def test_bad_options_raise_one_line_user_error(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        Augment(**kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_batch_device() -> None:
    x = _fields(batch=4).cuda()
    aug = Augment(rotation_degrees=10.0, translate_px=3, brightness_range=(0.9, 1.1))
    a = aug(x, rng=torch.Generator(device="cuda").manual_seed(0))[0]
    b = aug(x, rng=torch.Generator(device="cuda").manual_seed(0))[0]
    assert a.device == x.device and torch.equal(a, b)
