import numpy as np
import pytest

from astrorestore.colour import rgb_to_ycbcr, ycbcr_to_rgb


def test_round_trip_is_exact_to_float32():
    rng = np.random.default_rng(0)
    rgb = (rng.random((17, 23, 3)) * 1000 + 1).astype(np.float32)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == np.float32
    # float32 YCbCr storage bounds the error relative to the brightest channel of a pixel.
    scale = rgb.max(axis=-1, keepdims=True)
    assert (np.abs(back - rgb) <= 1e-5 * scale).all()


def test_grey_has_zero_chroma_and_y_equals_value():
    grey = np.full((4, 5, 3), 7.5, dtype=np.float32)
    ycc = rgb_to_ycbcr(grey)
    np.testing.assert_allclose(ycc[..., 0], 7.5, rtol=1e-6)
    np.testing.assert_allclose(ycc[..., 1:], 0.0, atol=1e-6)


def test_bt601_luma_weights():
    ycc = rgb_to_ycbcr(np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]))
    np.testing.assert_allclose(ycc[0, :, 0], [0.299, 0.587, 0.114], atol=1e-7)
    # Full-range chroma spans [-0.5, 0.5].
    assert ycc[0, 2, 1] == pytest.approx(0.5)
    assert ycc[0, 0, 2] == pytest.approx(0.5)


def test_float64_preserved_and_shape_checked():
    rgb = np.random.default_rng(1).random((3, 3, 3))
    assert rgb_to_ycbcr(rgb).dtype == np.float64
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        rgb_to_ycbcr(np.zeros((3, 3)))
