"""Pipeline helpers: scores against references and the bilateral pre-filter."""

import numpy as np
import pytest

from astrorestore.errors import UserError
from astrorestore.inference.pipeline import bilateral, image_scores


def test_scores_compare_8_bit_and_float_images_on_one_scale():
    rgb = np.random.default_rng(0).random((32, 32, 3))
    rgb[0, 0] = 1.0
    same = image_scores(rgb.astype(np.float32), np.round(rgb * 255).astype(np.uint8))
    assert same["ssim"] > 0.99 and same["psnr"] > 45
    noisy = image_scores(
        np.clip(rgb + 0.2 * np.random.default_rng(1).standard_normal(rgb.shape), 0, 1), rgb
    )
    assert noisy["ssim"] < same["ssim"] and noisy["psnr"] < 20
    with pytest.raises(UserError, match="final size"):
        image_scores(rgb, rgb[:16])


def test_bilateral_smooths_noise_keeps_edges_and_units():
    rng = np.random.default_rng(2)
    edge = np.zeros((32, 32), np.float32)
    edge[:, 16:] = 200.0
    noisy = edge + rng.normal(0, 5, edge.shape).astype(np.float32)
    out = bilateral(noisy, 5, 0.1, 1.5)
    assert out.shape == noisy.shape
    assert out[:, 2:12].std() < noisy[:, 2:12].std()  # flat region smoothed
    assert out[:, 20:30].mean() == pytest.approx(200.0, abs=3)  # 0-255 units kept, edge kept
    with pytest.raises(UserError, match="kernel_size=4"):
        bilateral(noisy, 4, 0.1, 1.5)
