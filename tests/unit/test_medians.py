import numpy as np
import pytest
import torch

from astrorestore.medians import nanmedian_and_mad_hw, nanmedian_hw


@pytest.mark.parametrize("shape", [(1, 1, 300, 301), (2, 3, 256, 257), (1, 1, 8, 9)])
def test_equals_torch_nanmedian_and_np_median(shape):
    # The selection must give exactly torch's value (the asinh statistics depend on it) and,
    # with midpoint=True, np.median's (the NaN fill of the host path used it).
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5 + 20
    x[..., ::7, ::3] = float("nan")
    x[..., :5, :5] = 3.0  # ties
    expected = torch.nanmedian(x.flatten(-2), dim=-1).values[..., None, None]
    assert torch.equal(nanmedian_hw(x), expected)
    mid = np.array([[np.nanmedian(plane.numpy()) for plane in row] for row in x])
    np.testing.assert_allclose(nanmedian_hw(x, midpoint=True)[..., 0, 0].numpy(), mid, rtol=1e-6)


def test_all_nan_plane_is_nan():
    x = torch.full((1, 2, 300, 300), float("nan"))
    x[0, 1] = 4.0
    out = nanmedian_hw(x)
    assert torch.isnan(out[0, 0]).all() and out[0, 1].item() == 4.0


@pytest.mark.parametrize("shape", [(1, 1, 300, 301), (1, 2, 8, 9)])
def test_finite_median_and_mad_equal_the_two_step_torch_values(shape):
    # finite=True ignores +-inf as NaN; the fused median + MAD must equal torch's two steps
    # bit for bit on the NumPy path (300x301) and the torch path (8x9) alike.
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 5 + 20
    x[..., ::7, ::3] = float("nan")
    x[..., 1, 1], x[..., 2, 2], x[..., 3, 3] = float("inf"), float("-inf"), float("inf")
    clean = x.masked_fill(torch.isinf(x), float("nan")).flatten(-2)
    median = torch.nanmedian(clean, dim=-1).values[..., None, None]
    mad = torch.nanmedian((clean - median.flatten(-2)).abs(), dim=-1).values[..., None, None]
    got_median, got_mad = nanmedian_and_mad_hw(x, finite=True)
    assert torch.equal(got_median, median) and torch.equal(got_mad, mad)
    assert torch.equal(nanmedian_hw(x, finite=True), median)
    mid = np.array([[np.nanmedian(plane.numpy()) for plane in row] for row in clean])
    np.testing.assert_allclose(
        nanmedian_hw(x, midpoint=True, finite=True)[..., 0, 0].numpy(), mid, rtol=1e-6
    )
