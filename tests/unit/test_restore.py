import numpy as np
import pytest
import torch

from astrorestore.colour import rgb_to_ycbcr
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.errors import UserError
from astrorestore.inference.restore import restore_image, restore_tensor
from astrorestore.inference.restorer import NetForward, Restorer
from tests.unit.host_reference_cases import STORED, cases, restore_case


class NanNormalizer:
    """offset = nanmedian, scale = nanstd, per (B, C) plane; non-finite pixels ignored and the
    scale floored, as the normaliser contract asks (AsinhNormalizer does the same)."""

    def stats(self, x):
        x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("nan")))
        flat = x.flatten(2)
        offset = flat.nanmedian(dim=2).values[..., None, None]
        mean = flat.nanmean(dim=2, keepdim=True)
        var = ((flat - mean) ** 2).nanmean(dim=2)
        return offset, var.sqrt().clamp_min(1e-6)[..., None, None]

    def forward(self, x, offset, scale):
        return (x - offset) / scale

    def inverse(self, z, offset, scale):
        return z * scale + offset


def box_blur() -> torch.nn.Module:
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
    return conv.eval()


def FakeRestorer(net=None, in_channels=1, out_channels=1, scale=1) -> Restorer:  # noqa: N802
    return Restorer(
        fn=NetForward(box_blur() if net is None else net),
        normalizer=NanNormalizer(),
        in_channels=in_channels,
        out_channels=out_channels,
        scale=scale,
        size_multiple=8,
        device=torch.device("cpu"),
        name="fake-blur",
        ckpt_path="/tmp/fake.ckpt",
    )


def identity_restorer() -> Restorer:
    return FakeRestorer(net=torch.nn.Identity())


class Upsample2(torch.nn.Module):
    """A x2 'super-resolution': nearest-neighbour enlargement."""

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


class GreyToColour(torch.nn.Module):
    """A '1 -> 3 colorizer': channels 1, 0.5 and 0.25 times the grey value."""

    def forward(self, x):
        return torch.cat([x, 0.5 * x, 0.25 * x], dim=1)


def noisy_flat(shape, seed=0):
    return np.random.default_rng(seed).normal(1000.0, 10.0, size=shape).astype(np.float32)


def test_shape_dtype_and_identity():
    img = noisy_flat((50, 45))
    out = restore_image(img, identity_restorer(), tile=16, overlap=4, batch_size=4)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, rtol=1e-5)


def test_smoothing_reduces_noise():
    img = noisy_flat((64, 72))
    out = restore_image(img, FakeRestorer(), tile=32, overlap=8, batch_size=2)
    assert out.std() < 0.5 * img.std()
    assert abs(out.mean() - img.mean()) < 1.0


def test_nan_pixels_stay_nan_and_do_not_spread():
    img = noisy_flat((48, 48))
    img[10, 10] = np.nan
    img[20:23, 30:33] = np.inf
    img[0, 5] = -np.inf
    out = restore_image(img, FakeRestorer(), tile=16, overlap=4)
    bad = ~np.isfinite(img)
    assert np.isnan(out[bad]).all()
    assert np.isfinite(out[~bad]).all()
    # Neighbours were blurred with the median fill, so they stay near the sky level.
    for y, x in [(9, 10), (11, 11), (19, 30), (23, 32), (1, 5)]:
        assert abs(out[y, x] - 1000.0) < 30.0


def test_all_nan_is_user_error():
    with pytest.raises(UserError, match="no finite pixels"):
        restore_image(np.full((32, 32), np.nan, np.float32), FakeRestorer(), tile=16, overlap=4)


def test_flat_constant_image_does_not_become_nan():
    out = restore_image(np.full((32, 32), 5.0, np.float32), FakeRestorer(), tile=16, overlap=4)
    np.testing.assert_allclose(out, 5.0, rtol=1e-6)


def test_tile_validation_messages():
    img = noisy_flat((40, 50))
    with pytest.raises(UserError, match=r"tile_size=12 .*multiple of 8.*tile_size=8"):
        restore_image(img, FakeRestorer(), tile=12, overlap=2)
    # a tile larger than the image is fitted to it (40, overlap cut to 40 // 4)
    np.testing.assert_array_equal(
        restore_image(img, FakeRestorer(), tile=64, overlap=16),
        restore_image(img, FakeRestorer(), tile=40, overlap=10),
    )
    with pytest.raises(UserError, match="overlap"):
        restore_image(img, FakeRestorer(), tile=16, overlap=16)
    with pytest.raises(UserError, match="smallest tile"):
        restore_image(noisy_flat((6, 50)), FakeRestorer(), tile=8, overlap=2)


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
    restore_image(noisy_flat((40, 56)), restorer, tile=16, overlap=4)
    assert calls == [(1, 1, 40, 56)]


def test_tiled_output_matches_whole_image_for_a_blur():
    # A blur differs at tile edges from the whole-image blur; blending must hide that (a tile
    # that simply overwrote its neighbour would leave the full edge error).
    img = noisy_flat((96, 104), seed=5)
    whole = box_blur()(torch.from_numpy(img)[None, None])[0, 0].detach().numpy()
    tiled = restore_image(img, FakeRestorer(), tile=32, overlap=8, batch_size=3)
    assert np.abs(tiled - whole).max() < 0.5
    untiled_edges = restore_image(img, FakeRestorer(), tile=32, overlap=0)
    assert np.abs(untiled_edges - whole).max() > 2.0  # the edge error the blend removes


def test_scale_factor_output_shape_and_nan_mask():
    img = noisy_flat((40, 48))
    img[5, 7] = np.nan
    out = restore_image(img, FakeRestorer(net=Upsample2(), scale=2), tile=16, overlap=4)
    assert out.shape == (80, 96)
    assert np.isnan(out[10:12, 14:16]).all() and np.isfinite(out).sum() == out.size - 4
    np.testing.assert_allclose(out[::2, ::2][np.isfinite(img)], img[np.isfinite(img)], rtol=1e-5)


def test_grey_to_colour_restorer_gives_rgb():
    img = noisy_flat((32, 40))
    out = restore_image(img, FakeRestorer(net=GreyToColour(), out_channels=3), tile=16, overlap=4)
    assert out.shape == (32, 40, 3)
    # Normalised z -> (z, z/2, z/4), inverted with the grey image's statistics.
    np.testing.assert_allclose(out[..., 0], img, rtol=1e-5)
    offset = np.median(img)
    np.testing.assert_allclose(out[..., 1] - offset, 0.5 * (img - offset), rtol=1e-3, atol=1e-2)


def test_colour_model_refuses_grey_image():
    colour = FakeRestorer(net=torch.nn.Identity(), in_channels=3, out_channels=3)
    with pytest.raises(UserError, match="colour"):
        restore_image(noisy_flat((32, 32)), colour, tile=16, overlap=4)


@pytest.mark.parametrize("name", list(cases()))
def test_device_path_equals_the_host_path_of_before(name):
    # The torch path (statistics, NaN fill, tiling, blending, inverse on the device) against
    # the outputs the NumPy host path of commit 7517bec gave for the same frames: tiled and
    # whole-frame-fitted tiles, NaN/inf pixels, x2, grey->colour and RGB luminance.
    out = restore_case(restore_image, Restorer, NetForward, AsinhNormalizer(), cases()[name])
    expected = np.load(STORED)[name]
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=2e-6, atol=2e-3)


def test_restore_tensor_keeps_the_frame_on_its_device():
    frame = torch.from_numpy(noisy_flat((40, 48)))
    frame[3, 5] = float("nan")
    out = restore_tensor(frame[None], FakeRestorer(), tile=16, overlap=4)
    assert isinstance(out, torch.Tensor) and out.device == frame.device
    assert out.shape == (1, 40, 48) and torch.isnan(out[0, 3, 5])
    assert torch.isfinite(out).sum() == out.numel() - 1


class Zero(torch.nn.Module):
    """A 'restorer' that returns the sky itself: z = 0 everywhere."""

    def forward(self, x):
        return torch.zeros_like(x)


def test_sky_map_normaliser_measures_one_map_per_frame_before_tiling():
    from tests.unit.test_normalization_map import _vignetted

    frame, _ = _vignetted(256)
    frame[100:104, 50:60] = np.nan
    restorer = FakeRestorer(net=Zero())
    restorer.normalizer = AsinhNormalizer(background="map")
    calls = []
    original = restorer.normalizer.frame_stats

    def spy(x):
        calls.append(tuple(x.shape))
        stats = original(x)
        maps.append(stats[0][0, 0].numpy())
        return stats

    maps = []
    restorer.normalizer.frame_stats = spy
    out = restore_image(frame, restorer, tile=64, overlap=16)
    assert calls == [(1, 1, 256, 256)]  # the whole frame, once: every tile shares its map
    # z = 0 is the sky: the output is the frame's sky map, added back exactly, NaNs kept.
    sky = maps[0]
    assert sky.shape == frame.shape
    finite = np.isfinite(frame)
    np.testing.assert_allclose(out[finite], sky[finite], rtol=1e-6, atol=1e-4)
    assert np.isnan(out[~finite]).all()
    assert sky[:16, :16].mean() < 0.5 * sky[120:136, 120:136].mean()  # it follows the corners
    # An identity network gives the frame back.
    restorer.fn = NetForward(torch.nn.Identity())
    same = restore_image(frame, restorer, tile=64, overlap=16)
    np.testing.assert_allclose(same[finite], frame[finite], rtol=1e-5, atol=1e-3)
