"""Tests of the Hubble Deep Field crops: range, held-out region, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrorestore.data.sources.hubble import (
    HubbleFixedCrops,
    HubbleRandomCrops,
    held_out_start,
    hubble_image,
)
from astrorestore.errors import UserError

P = 48


def test_image_is_float_rgb_in_unit_range() -> None:
    image = hubble_image()
    assert image.shape == (872, 1000, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > 0.5


def _marked() -> np.ndarray:
    # Training region random in [0, 1); held-out columns set to 2.0, a value no crop may show.
    image = np.random.default_rng(0).random((872, 1000, 3)).astype(np.float32)
    image[:, held_out_start(1000) :] = 2.0
    return image


def test_training_crops_never_touch_the_held_out_region() -> None:
    ds = HubbleRandomCrops(P, length=300, image=_marked())
    torch.manual_seed(0)
    for i in range(300):
        rgb = ds[i]["rgb"]
        assert rgb.shape == (3, P, P) and rgb.max() < 2.0


def test_fixed_crops_lie_in_the_held_out_region_and_split_it() -> None:
    image = _marked()
    val = HubbleFixedCrops(P, 9, "val", image=image)
    test = HubbleFixedCrops(P, 9, "test", image=image)
    assert len(val) == 9 and all(torch.all(val[i]["rgb"] == 2.0) for i in range(9))
    val_rows = {y for y, _ in val.corners}
    test_rows = {y for y, _ in test.corners}
    assert max(val_rows) + P <= 436 <= min(test_rows)
    again = HubbleFixedCrops(P, 9, "val", image=image)
    assert val.corners == again.corners


def test_patch_too_large_for_region() -> None:
    with pytest.raises(UserError, match="data.patch_size=300 is invalid for the Hubble val"):
        HubbleFixedCrops(300, 4, "val", image=_marked())
