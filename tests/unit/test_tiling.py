import numpy as np
import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.inference.tiling import blend_weights, predict_tiled, tile_starts


def tiled(image: np.ndarray, predict, **kwargs) -> np.ndarray:
    """predict_tiled of a NumPy (C, H, W) image, back as NumPy."""
    return predict_tiled(torch.from_numpy(image), predict, **kwargs).numpy()


def test_tile_starts_cover_and_end_flush():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0]
    assert tile_starts(64, 32, 0) == [0, 32]
    for length in (33, 57, 100, 129):
        starts = tile_starts(length, 32, 6)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 32] = True
        assert covered.all()
        assert starts[-1] == length - 32


def test_tile_starts_rejects_small_image_and_bad_overlap():
    with pytest.raises(UserError, match="smaller than the tile size"):
        tile_starts(20, 32, 4)
    with pytest.raises(UserError, match="overlap"):
        tile_starts(100, 32, 32)
    with pytest.raises(UserError, match="overlap"):
        tile_starts(100, 32, -1)


@pytest.mark.parametrize("tile,overlap", [(16, 0), (16, 4), (32, 8), (32, 16), (16, 12)])
def test_blend_weights_positive_and_centre_one(tile, overlap):
    w = blend_weights(tile, overlap).numpy()
    assert w.shape == (tile, tile)
    assert w.dtype == np.float32
    assert (w > 0).all()
    if 2 * overlap < tile:
        assert w[tile // 2, tile // 2] == pytest.approx(1.0)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])


def test_ramps_sum_to_one_across_overlap():
    tile, overlap = 32, 8
    row = blend_weights(tile, overlap)[tile // 2].numpy()
    step = tile - overlap
    summed = row[step:] + row[: tile - step]
    np.testing.assert_allclose(summed, 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(70, 53), (32, 32), (100, 41), (45, 99)])
def test_identity_predict_reproduces_image(shape):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 10, size=shape).astype(np.float32)
    calls = []

    def predict(tiles):
        calls.append(tiles.shape[0])
        assert tiles.shape[1:] == (1, 16, 16)
        return tiles.clone()

    out = tiled(img[None], predict, tile=16, overlap=4, batch_size=3)[0]
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, rtol=1e-6, atol=1e-6)
    assert max(calls) <= 3


def test_constant_offset_has_no_seams():
    img = np.random.default_rng(1).random((61, 77)).astype(np.float32)
    out = tiled(img[None], lambda t: t + 5.0, tile=16, overlap=6, batch_size=8)[0]
    np.testing.assert_allclose(out, img + 5.0, atol=1e-5)


def test_progress_bar_runs():
    img = np.ones((40, 40), np.float32)
    out = tiled(img[None], lambda t: t * 2, tile=16, overlap=4, progress=True)
    np.testing.assert_allclose(out, 2.0, atol=1e-6)


def test_predict_tiled_validates():
    img = torch.zeros(1, 20, 20)
    with pytest.raises(UserError, match="20x20"):
        predict_tiled(img, lambda t: t, tile=32, overlap=4)
    with pytest.raises(UserError, match="overlap"):
        predict_tiled(img, lambda t: t, tile=16, overlap=16)


def test_scaled_multichannel_prediction_is_placed_on_the_output_grid():
    # A x2 "super-resolution" to 3 channels: nearest enlargement, channel c multiplied by c+1.
    img = np.random.default_rng(2).random((1, 40, 56)).astype(np.float32)

    def predict(tiles):
        big = tiles.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        return torch.cat([big * (c + 1) for c in range(3)], dim=1)

    out = tiled(img, predict, tile=16, overlap=4, batch_size=5, scale=2)
    assert out.shape == (3, 80, 112)
    expected = img[0].repeat(2, axis=0).repeat(2, axis=1)
    for c in range(3):
        np.testing.assert_allclose(out[c], expected * (c + 1), rtol=1e-5, atol=1e-6)


def test_tiles_stay_on_the_device_of_the_image():
    # The path is torch end to end: what predict receives and what comes back are tensors on
    # the image's device (a GPU in production), never host arrays.
    seen = []

    def predict(tiles):
        seen.append((type(tiles), tiles.device))
        return tiles

    out = predict_tiled(torch.ones(1, 40, 40), predict, tile=16, overlap=4)
    assert isinstance(out, torch.Tensor) and out.device == torch.device("cpu")
    assert seen and all(kind is torch.Tensor for kind, _ in seen)


def test_the_network_keeps_every_thread_and_the_count_is_restored():
    # Tile copies and blends run in one thread; the network in between must not.
    threads = torch.get_num_threads()
    seen = []

    def predict(tiles):
        seen.append(torch.get_num_threads())
        return tiles

    predict_tiled(torch.ones(1, 40, 40), predict, tile=16, overlap=4)
    assert seen and set(seen) == {threads} and torch.get_num_threads() == threads
