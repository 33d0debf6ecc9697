import numpy as np
import pytest
import torch

from astrorestore.elementwise import asinh_, fill_where_, nonfinite, sinh


def _frame() -> torch.Tensor:
    return torch.randn(64, 65, generator=torch.Generator().manual_seed(0)) * 30


def test_asinh_and_sinh_match_torch_and_write_in_place_only_outside_autograd():
    x = _frame()
    expected = torch.asinh(x)
    y = x.clone()
    assert asinh_(y) is y  # in place on a CPU tensor
    torch.testing.assert_close(y, expected, rtol=2e-7, atol=1e-7)
    torch.testing.assert_close(sinh(expected), torch.sinh(expected), rtol=2e-7, atol=1e-6)
    leaf = x.clone().requires_grad_(True)
    out = asinh_(leaf * 1.0)
    out.sum().backward()  # torch's own function: gradients flow
    torch.testing.assert_close(leaf.grad, 1 / torch.sqrt(1 + x**2))


def test_nonfinite_is_none_for_finite_frames_and_the_mask_otherwise():
    x = _frame()
    assert nonfinite(x) is None
    x[3, 4], x[5, 6], x[7, 8] = float("nan"), float("inf"), float("-inf")
    bad = nonfinite(x)
    assert bad is not None and torch.equal(bad, ~torch.isfinite(x))


@pytest.mark.parametrize("value", [float("nan"), 2.5])
def test_fill_where_equals_masked_fill(value):
    x = _frame()[None].repeat(2, 1, 1)
    mask = _frame() > 20
    expected = x.clone().masked_fill_(mask, value)
    fill_where_(x, mask, value)
    np.testing.assert_array_equal(x.numpy(), expected.numpy())
