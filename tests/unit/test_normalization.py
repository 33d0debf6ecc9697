"""Tests of the asinh normaliser."""

from __future__ import annotations

import math

import pytest
import torch

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.errors import UserError


def test_round_trip_is_exact_over_huge_dynamic_range() -> None:
    norm = AsinhNormalizer(softening=3.0)
    gen = torch.Generator().manual_seed(0)
    # Log-uniform values spanning 1e1 to 1e5 e-.
    x = 10.0 ** (1.0 + 4.0 * torch.rand((4, 2, 32, 32), generator=gen))
    offset, scale = norm.stats(x)
    z = norm.forward(x, offset, scale)
    back = norm.inverse(z, offset, scale)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, x, rtol=2e-6, atol=1e-4 * scale.max().item())
    # Star cores are compressed: nothing is larger than a few tens after normalisation.
    assert z.abs().max() < 20


def test_stats_on_pure_gaussian_noise() -> None:
    norm = AsinhNormalizer(softening=3.0)
    gen = torch.Generator().manual_seed(1)
    x = 20.0 + 5.0 * torch.randn((3, 1, 128, 128), generator=gen)
    offset, scale = norm.stats(x)
    assert offset.shape == scale.shape == (3, 1, 1, 1)
    assert torch.allclose(offset, torch.full_like(offset, 20.0), atol=0.1)
    assert torch.allclose(scale, torch.full_like(scale, 15.0), rtol=0.04)


def test_stats_are_robust_to_sources() -> None:
    norm = AsinhNormalizer(softening=1.0)
    gen = torch.Generator().manual_seed(2)
    x = 20.0 + 5.0 * torch.randn((1, 1, 128, 128), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    # A smooth extended galaxy over ~10% of the frame and a bright point source.
    x = x + 50.0 * torch.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * 12.0**2))
    x[0, 0, 30, 30] += 1e4
    _, scale = norm.stats(x)
    assert scale.item() == pytest.approx(5.0, rel=0.1)


def test_nan_pixels_are_ignored() -> None:
    norm = AsinhNormalizer()
    gen = torch.Generator().manual_seed(3)
    x = 20.0 + 5.0 * torch.randn((1, 1, 64, 64), generator=gen)
    ref_offset, ref_scale = norm.stats(x)
    x_bad = x.clone()
    x_bad[0, 0, :, ::7] = float("nan")
    x_bad[0, 0, 5, 5] = float("inf")
    offset, scale = norm.stats(x_bad)
    assert torch.isfinite(offset).all() and torch.isfinite(scale).all()
    assert offset.item() == pytest.approx(ref_offset.item(), abs=0.3)
    assert scale.item() == pytest.approx(ref_scale.item(), rel=0.08)


def test_constant_and_all_nan_images_do_not_divide_by_zero() -> None:
    norm = AsinhNormalizer()
    x = torch.full((2, 1, 16, 16), 100.0)
    x[1] = float("nan")
    offset, scale = norm.stats(x)
    assert torch.all(scale > 0)
    z = norm.forward(x[:1], offset[:1], scale[:1])
    assert torch.equal(z, torch.zeros_like(z))


def test_linear_near_sky_and_bad_softening() -> None:
    norm = AsinhNormalizer()
    offset, scale = torch.tensor(20.0), torch.tensor(15.0)
    z = norm.forward(torch.tensor(21.5), offset, scale)
    assert z.item() == pytest.approx(0.1, rel=0.01)
    assert norm.forward(torch.tensor(1e4 + 20.0), offset, scale).item() == pytest.approx(
        math.asinh(1e4 / 15.0)
    )
    with pytest.raises(UserError, match="softening"):
        AsinhNormalizer(softening=0.0)
