"""The output stages shared by the self-supervised nets: the noise bound and the flux give-back."""

import numpy as np
import torch
from scipy import ndimage

from astrorestore.nets.bounded import gaussian_blur, restore_low_frequencies
from astrorestore.nets.n2v_unet import N2VUNet


def test_gaussian_blur_matches_scipy_inside_and_keeps_flux():
    image = torch.zeros(1, 1, 48, 48)
    image[0, 0, 20, 25] = 1.0
    blurred = gaussian_blur(image, 3.0)
    reference = ndimage.gaussian_filter(image[0, 0].numpy(), 3.0, truncate=4.0)
    assert np.allclose(blurred[0, 0].numpy(), reference, atol=1e-6)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5
    flat = torch.full((2, 3, 8, 8), 2.5)  # smaller than the kernel: edges replicate
    assert torch.allclose(gaussian_blur(flat, 3.0), flat)


def test_light_taken_from_a_faint_star_is_given_back():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    star = 2.0 * torch.exp(-((yy - 32) ** 2 + (xx - 30) ** 2) / (2 * 1.5**2))
    z = torch.asinh(star)[None, None]
    shrunk = torch.asinh(0.5 * star)[None, None]  # a restoration that halved the star
    restored = restore_low_frequencies(z, shrunk, 2.0)
    aperture = ((yy - 32) ** 2 + (xx - 30) ** 2) <= 6.0**2
    flux = torch.sinh(restored)[0, 0][aperture].sum() / star[aperture].sum()
    assert abs(float(flux) - 1.0) < 0.03  # half the flux was missing, now ~all of it is back
    assert torch.allclose(restore_low_frequencies(z, z, 2.0), z, atol=1e-5)  # nothing to give


def test_flux_give_back_runs_at_evaluation_only():
    torch.manual_seed(0)
    net = N2VUNet(base_channels=4, depth=1, output="clamped", bound_sigmas=5.0, flux_sigma=2.0)
    plain = N2VUNet(base_channels=4, depth=1, output="clamped", bound_sigmas=5.0)
    plain.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(net.train()(x), plain.train()(x))  # the blind-spot loss sees the net only
    assert not torch.allclose(net.eval()(x), plain.eval()(x))
