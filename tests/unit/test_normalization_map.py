"""``data.normalizer.background=map``: the asinh offset is the frame's sky map, inverted exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.errors import UserError


def _vignetted(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, true sky): a 60 e- sky falling to ~6 e- in the corners, stars, Poisson + 3 e-."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n].astype(float)
    r = np.hypot(x - n / 2, y - n / 2) / (n / 2 * np.sqrt(2))
    sky = 60.0 / (1.0 + (r / 0.7) ** 6)
    scene = sky.copy()
    for _ in range(40):
        cx, cy = rng.uniform(0, n, 2)
        scene += 10 ** rng.uniform(2, 4) / 14.1 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.5)
    noisy = rng.poisson(scene).astype(float) + rng.normal(0, 3.0, scene.shape)
    return noisy.astype(np.float32), sky


def test_map_offset_round_trip_is_exact_and_adds_the_map_back() -> None:
    noisy, _ = _vignetted(256)
    norm = AsinhNormalizer(background="map", box_size=16)
    x = torch.from_numpy(noisy)[None, None]
    offset, scale = norm.frame_stats(x)
    assert offset.shape == x.shape and scale.shape == (1, 1, 1, 1)
    assert float(offset.std()) > 5.0  # a map, not one number
    z = norm.forward(x, offset, scale)
    torch.testing.assert_close(norm.inverse(z, offset, scale), x, rtol=1e-5, atol=1e-3)
    # A flat normalised image comes back as exactly the map: the sky is added back.
    torch.testing.assert_close(norm.inverse(torch.zeros_like(z), offset, scale), offset)
    # The scale is the per-image one of the median mode.
    median = AsinhNormalizer()
    torch.testing.assert_close(scale, median.frame_stats(x)[1])


def test_dark_corners_are_centred_on_zero_with_map_and_far_below_with_median() -> None:
    noisy, _ = _vignetted(256)
    x = torch.from_numpy(noisy)[None, None]
    corners = (slice(0, 24), slice(0, 24))
    levels = {}
    for background in ("median", "map"):
        norm = AsinhNormalizer(background=background)
        offset, scale = norm.frame_stats(x)
        z = norm.forward(x, offset, scale)[0, 0]
        levels[background] = float(z[corners].median())
    # softening 3: 1 sigma of noise is z ~ 0.33, the corner lies ~50 e- (~6 sigma) below the median
    assert abs(levels["map"]) < 0.15, levels
    assert levels["median"] < -1.0, levels


def test_bad_settings_are_one_line_user_errors() -> None:
    with pytest.raises(UserError, match="data.normalizer.background='mean'"):
        AsinhNormalizer(background="mean")
    with pytest.raises(UserError, match="data.normalizer.box_size=2"):
        AsinhNormalizer(background="map", box_size=2)
    with pytest.raises(UserError, match="too little sky|cannot estimate the background"):
        AsinhNormalizer(background="map").frame_stats(torch.full((1, 1, 64, 64), float("nan")))


def test_median_mode_is_unchanged() -> None:
    norm = AsinhNormalizer()
    assert repr(norm) == "AsinhNormalizer(softening=3.0)"  # caches keyed on it stay valid
    x = torch.randn(2, 1, 32, 32) * 4 + 100
    for a, b in zip(norm.frame_stats(x), norm.stats(x), strict=True):
        assert torch.equal(a, b)
    assert "map" in repr(AsinhNormalizer(background="map"))
