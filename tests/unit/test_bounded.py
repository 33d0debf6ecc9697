"""The output stages of the self-supervised nets: the blur and the flux give-back."""

import numpy as np
import torch
from scipy import ndimage

from astrorestore.nets.bounded import gaussian_blur, give_back_removed_sources
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


def test_a_faint_star_taken_away_is_given_back_where_it_was_and_sky_noise_is_not():
    softening = 3.0  # sky noise is 1 / softening in the linear units of the normalisation
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 1, 96, 96, generator=generator) / softening
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    # A faint undersampled star: peak 30 sky sigmas, FWHM 1.2 px, S/N ~ 11 in a 2.4 px aperture.
    star = (30.0 / softening) * torch.exp(-((yy - 48) ** 2 + (xx - 40) ** 2) / (2 * 0.51**2))
    z = torch.asinh(star + noise)
    flat = torch.zeros_like(z)  # a restoration that removed the noise and the star with it
    out = torch.sinh(give_back_removed_sources(z, flat, softening))[0, 0]
    aperture = ((yy - 48) ** 2 + (xx - 40) ** 2) <= 2.4**2
    flux = out[aperture].sum() / (star + noise[0, 0])[aperture].sum()
    assert flux > 0.8  # given back at the star, not spread into a halo
    empty = ((yy - 48) ** 2 + (xx - 40) ** 2) > 10**2
    assert out[empty].std() < 0.25 * noise[0, 0][empty].std()  # most sky noise stays removed
    assert torch.allclose(give_back_removed_sources(z, z, softening), z, atol=1e-5)


def test_light_added_around_a_bright_star_is_taken_back_and_sky_noise_stays_removed():
    softening = 3.0
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 1, 96, 96, generator=generator) / softening
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    r2 = (yy - 48) ** 2 + (xx - 40) ** 2
    star = (200.0 / softening) * torch.exp(-r2 / (2 * 1.1**2))
    z = torch.asinh(star + noise)
    # An overshooting restoration: the star without noise, wings raised by 4 sky sigmas.
    wings = (4.0 / softening) * ((r2 > 1) & (r2 <= 36)).float()
    restored = torch.asinh((star + wings).expand_as(z))
    out = torch.sinh(give_back_removed_sources(z, restored, softening))[0, 0]
    aperture = r2 <= 36
    observed = (star + noise)[0, 0][aperture].sum()
    before = torch.sinh(restored)[0, 0][aperture].sum() / observed
    after = out[aperture].sum() / observed
    assert before > 1.2 and abs(float(after) - 1.0) < 0.05
    empty = r2 > 15**2
    assert out[empty].std() < 0.25 * noise[0, 0][empty].std()


def test_flux_give_back_runs_at_evaluation_only():
    torch.manual_seed(0)
    net = N2VUNet(base_channels=4, depth=1, output="clamped", bound_sigmas=5.0, flux_sigma=1.5)
    plain = N2VUNet(base_channels=4, depth=1, output="clamped", bound_sigmas=5.0)
    plain.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(net.train()(x), plain.train()(x))  # the blind-spot loss sees the net only
    assert not torch.allclose(net.eval()(x), plain.eval()(x))


def test_light_spread_into_the_wings_of_a_faint_star_is_given_back_on_its_footprint():
    softening = 3.0
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    r2 = (yy - 48) ** 2 + (xx - 40) ** 2
    # Sky noise away from the star only, so the star's aperture flux is known exactly.
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 1, 96, 96, generator=generator) / softening * (r2 > 20**2)
    star = (12.0 / softening) * torch.exp(-r2 / (2 * 1.1**2))
    z = torch.asinh(star + noise)
    # A restoration that kept the star but raised its wings by half a sky sigma per pixel:
    # no 1.5 px mean of it is a significant detection, yet the aperture gains 40 % flux.
    halo = (0.5 / softening) * ((r2 > 2) & (r2 <= 16)).float()
    restored = torch.asinh((star + halo).expand_as(z))
    aperture = r2 <= 49
    observed = star[aperture].sum()

    def aperture_ratio(footprint_px):
        out = give_back_removed_sources(z, restored, softening, footprint_px=footprint_px)
        out = torch.sinh(out)
        return float(out[0, 0][aperture].sum() / observed), out[0, 0]

    without, _ = aperture_ratio(None)
    with_footprint, out = aperture_ratio(1.0)
    assert without > 1.2  # the significance step alone leaves the halo
    assert abs(with_footprint - 1.0) < 0.02
    sky = r2 > 25**2  # the sky away from the source keeps its noise removed
    assert out[sky].std() < 0.15 * noise[0, 0][sky].std()


def test_flux_ramp_must_start_below_the_threshold():
    import pytest

    from astrorestore.errors import UserError

    with pytest.raises(UserError, match="flux_ramp_from"):
        N2VUNet(output="clamped", bound_sigmas=5.0, flux_sigma=1.5, flux_ramp_from=5.0)
