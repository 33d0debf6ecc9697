from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.inference.restore import restore_image, restore_plane
from astrorestore.io.color import rgb_to_ycbcr


class NanNormalizer:
    """offset = nanmedian, scale = nanstd, per (B, C) plane."""

    def stats(self, x):
        flat = x.flatten(2)
        offset = flat.nanmedian(dim=2).values[..., None, None]
        mean = flat.nanmean(dim=2, keepdim=True)
        var = ((flat - mean) ** 2).nanmean(dim=2)
        return offset, var.sqrt()[..., None, None]

    def forward(self, x, offset, scale):
        return (x - offset) / scale

    def inverse(self, z, offset, scale):
        return z * scale + offset


def box_blur() -> torch.nn.Module:
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
    return conv.eval()


@dataclass
class FakeRestorer:
    net: torch.nn.Module = field(default_factory=box_blur)
    normalizer: NanNormalizer = field(default_factory=NanNormalizer)
    size_multiple: int = 8
    device: torch.device = torch.device("cpu")
    name: str = "fake-blur"
    ckpt_path: str = "/tmp/fake.ckpt"


def identity_restorer() -> FakeRestorer:
    return FakeRestorer(net=torch.nn.Identity())


def noisy_flat(shape, seed=0):
    return np.random.default_rng(seed).normal(1000.0, 10.0, size=shape).astype(np.float32)


def test_shape_dtype_and_identity():
    img = noisy_flat((50, 45))
    out = restore_plane(img, identity_restorer(), tile=16, overlap=4, batch_size=4)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, rtol=1e-5)


def test_smoothing_reduces_noise():
    img = noisy_flat((64, 72))
    out = restore_plane(img, FakeRestorer(), tile=32, overlap=8, batch_size=2)
    assert out.std() < 0.5 * img.std()
    assert abs(out.mean() - img.mean()) < 1.0


def test_nan_pixels_stay_nan_and_do_not_spread():
    img = noisy_flat((48, 48))
    img[10, 10] = np.nan
    img[20:23, 30:33] = np.inf
    img[0, 5] = -np.inf
    out = restore_plane(img, FakeRestorer(), tile=16, overlap=4)
    bad = ~np.isfinite(img)
    assert np.isnan(out[bad]).all()
    assert np.isfinite(out[~bad]).all()
    # Neighbours were blurred with the median fill, so they stay near the sky level.
    for y, x in [(9, 10), (11, 11), (19, 30), (23, 32), (1, 5)]:
        assert abs(out[y, x] - 1000.0) < 30.0


def test_all_nan_is_user_error():
    with pytest.raises(UserError, match="no finite pixels"):
        restore_plane(np.full((32, 32), np.nan, np.float32), FakeRestorer(), tile=16, overlap=4)


def test_flat_constant_image_does_not_become_nan():
    out = restore_plane(np.full((32, 32), 5.0, np.float32), FakeRestorer(), tile=16, overlap=4)
    np.testing.assert_allclose(out, 5.0, rtol=1e-6)


def test_tile_validation_messages():
    img = noisy_flat((40, 50))
    with pytest.raises(UserError, match=r"tile_size=12 .*multiple of 8.*tile_size=8"):
        restore_plane(img, FakeRestorer(), tile=12, overlap=2)
    with pytest.raises(UserError, match=r"40x50, smaller than the tile size 64.*tile_size=40"):
        restore_plane(img, FakeRestorer(), tile=64, overlap=8)
    with pytest.raises(UserError, match="overlap"):
        restore_plane(img, FakeRestorer(), tile=16, overlap=16)
    with pytest.raises(UserError, match="smallest tile"):
        restore_plane(noisy_flat((6, 50)), FakeRestorer(), tile=8, overlap=2)


def test_rgb_keeps_chroma_and_restores_luma():
    rng = np.random.default_rng(3)
    rgb = np.stack([noisy_flat((40, 40), s) * f for s, f in ((1, 1.0), (2, 0.8), (3, 0.5))], -1)
    rgb += rng.normal(0, 1, rgb.shape).astype(np.float32)
    out = restore_image(rgb, FakeRestorer(), tile=16, overlap=4)
    assert out.shape == rgb.shape and out.dtype == np.float32
    before, after = rgb_to_ycbcr(rgb), rgb_to_ycbcr(out)
    np.testing.assert_allclose(after[..., 1:], before[..., 1:], atol=1e-2)
    assert after[..., 0].std() < 0.5 * before[..., 0].std()


def test_gray_path_and_bad_shape():
    img = noisy_flat((32, 32))
    np.testing.assert_allclose(
        restore_image(img, identity_restorer(), tile=16, overlap=4), img, rtol=1e-5
    )
    with pytest.raises(UserError, match="neither grey"):
        restore_image(np.zeros((32, 32, 2), np.float32), FakeRestorer(), tile=16, overlap=4)


def test_stats_computed_once_globally():
    calls = []
    restorer = identity_restorer()
    original = restorer.normalizer.stats

    def spy(x):
        calls.append(tuple(x.shape))
        return original(x)

    restorer.normalizer.stats = spy
    restore_plane(noisy_flat((40, 56)), restorer, tile=16, overlap=4)
    assert calls == [(1, 1, 40, 56)]
