"""Realism measures on cases with a known answer: white noise, Gaussian blur, grey images,
shifted distributions."""

import math

import numpy as np
import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.filters import gaussian_blur, gaussian_kernel
from astrorestore.metrics.realism import (
    DEFAULT_BANDS,
    band_power,
    band_power_ratio,
    chroma_sliced_wasserstein,
    colourfulness_ratio,
    patch_sliced_wasserstein,
    radial_power_spectrum,
)


def _noise(seed, shape=(4, 1, 128, 128), scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _blur_transfer_in_bands(sigma, size, bands):
    """Mean |H(f)|^2 of the project's discrete Gaussian kernel over each band's 2-D cells."""
    kernel = gaussian_kernel(sigma).double()
    taps = torch.arange(kernel.numel(), dtype=torch.float64) - kernel.numel() // 2
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    one_d = (kernel * torch.cos(2 * math.pi * freq[:, None] * taps)).sum(1)
    transfer = (one_d[:, None] * one_d[None, :]) ** 2
    radius = torch.hypot(freq[:, None], freq[None, :])
    return [float(transfer[(radius > lo) & (radius <= hi)].mean()) for lo, hi in bands]


def test_white_noise_has_a_flat_spectrum_at_its_variance():
    freq, power = radial_power_spectrum(_noise(0, scale=2.0))
    assert freq.shape == (32,) and power.shape == (4, 1, 32)
    mean = power.mean((0, 1))
    assert torch.allclose(mean, torch.full_like(mean, 4.0), rtol=0.2)  # variance 4 everywhere
    slope = np.polyfit(np.log(freq.numpy()), np.log(mean.numpy()), 1)[0]
    assert abs(slope) < 0.1


def test_two_independent_white_noises_have_band_ratios_of_one():
    ratio = band_power_ratio(_noise(1), _noise(2)).mean(0)
    assert ratio.shape == (len(DEFAULT_BANDS),)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.1)
    # Power scales with the square of the amplitude.
    quarter = band_power_ratio(_noise(1), _noise(2, scale=2.0)).mean(0)
    assert torch.allclose(quarter, torch.full_like(quarter, 0.25), atol=0.03)


def test_gaussian_blur_removes_the_expected_share_of_power():
    sharp = _noise(3)
    ratio = band_power_ratio(gaussian_blur(sharp, 1.0), sharp).mean(0)
    expected = torch.tensor(_blur_transfer_in_bands(1.0, 128, DEFAULT_BANDS), dtype=ratio.dtype)
    assert torch.all(ratio[1:] < ratio[:-1])  # less power the finer the scale
    assert torch.allclose(ratio, expected, rtol=0.1)
    # The continuous transfer exp(-4 pi^2 sigma^2 f^2) says the same in the lowest band.
    assert abs(float(ratio[0]) - 0.748) < 0.05


def test_window_stops_edge_leakage_of_a_gradient():
    ramp = torch.linspace(0, 1, 64)[None, :].expand(64, 64)
    leaked = band_power(ramp, [(0.25, 0.5)], window=False)
    windowed = band_power(ramp, [(0.25, 0.5)])
    assert float(windowed) < 1e-3 * float(leaked)


def test_invalid_pixels_are_filled_not_propagated():
    image = _noise(4, (1, 1, 64, 64))
    holed = image.clone()
    holed[..., 10:14, 20:30] = float("nan")
    _, power = radial_power_spectrum(holed)
    assert torch.isfinite(power).all()
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[10:14, 20:30] = False
    masked = band_power(image.masked_fill(~mask, 1e6), valid=mask)
    assert torch.allclose(masked, band_power(holed), rtol=1e-5)


def test_numpy_and_single_images_are_accepted():
    image = _noise(5, (1, 32, 32))
    from_numpy = band_power(image.numpy())
    assert torch.allclose(from_numpy, band_power(image))
    assert band_power(image[0].numpy()).shape == (1, 3)


def test_bad_bands_and_sizes_are_one_line_errors():
    with pytest.raises(UserError, match="band"):
        band_power(_noise(0), [(0.3, 0.2)])
    with pytest.raises(UserError, match="shapes"):
        band_power_ratio(_noise(0, (1, 1, 32, 32)), _noise(1, (1, 1, 64, 64)))


def _coloured(strength, seed=6):
    generator = torch.Generator().manual_seed(seed)
    grey = 0.3 + 0.4 * torch.rand(2, 1, 32, 32, generator=generator)
    tint = torch.randn(2, 3, 32, 32, generator=generator) * 0.03 + torch.tensor(
        [0.05, -0.02, -0.04]
    ).view(1, 3, 1, 1)
    return grey.expand(2, 3, 32, 32) + strength * tint


def test_colourfulness_is_zero_for_grey_and_linear_in_chroma():
    reference = _coloured(1.0)
    grey = _coloured(0.0)
    assert torch.allclose(colourfulness_ratio(grey, reference), torch.zeros(2), atol=1e-5)
    assert torch.allclose(colourfulness_ratio(_coloured(0.5), reference), torch.full((2,), 0.5))
    assert torch.allclose(colourfulness_ratio(_coloured(2.0), reference), torch.full((2,), 2.0))
    assert torch.isnan(colourfulness_ratio(reference, grey)).all()  # no colour to compare with


def test_sliced_wasserstein_is_zero_for_the_same_patches_and_grows_with_a_shift():
    truth = _noise(7)
    assert float(patch_sliced_wasserstein(truth, truth)) == 0.0
    same_law = float(patch_sliced_wasserstein(_noise(8), truth))
    assert same_law < 0.08
    shifts = [float(patch_sliced_wasserstein(truth + d, truth)) for d in (0.25, 0.5, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]
    assert shifts[2] == pytest.approx(1.0, rel=0.15)  # a shift d reads about d
    # The same seed gives the same number; the patch distributions need not be the same size.
    assert float(patch_sliced_wasserstein(truth[:2], truth, seed=3)) == float(
        patch_sliced_wasserstein(truth[:2], truth, seed=3)
    )


def test_sliced_wasserstein_sees_blur_that_the_mean_hides():
    truth = _noise(9)
    blurred = gaussian_blur(truth, 1.5)
    assert float(patch_sliced_wasserstein(blurred, truth)) > 5 * float(
        patch_sliced_wasserstein(_noise(10), truth)
    )


def test_chroma_distance_ignores_brightness_and_sees_colour():
    truth = _coloured(1.0)
    brighter = truth + 0.1  # same colours, brighter
    assert float(chroma_sliced_wasserstein(brighter, truth)) < 1e-6
    grey = _coloured(0.0)
    assert float(chroma_sliced_wasserstein(grey, truth)) > 0.01
    with pytest.raises(UserError, match="RGB"):
        chroma_sliced_wasserstein(truth[:, :1], truth[:, :1])
