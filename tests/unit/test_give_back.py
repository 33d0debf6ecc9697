"""The give-back post-processing stage: its blur, what it gives back, and its settings."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.errors import UserError
from astrorestore.postprocess.give_back import (
    GiveBack,
    _blur,
    give_back_removed_sources,
    stacked_correction,
)

SKY = AsinhNoise(3.0)  # sky noise is 1 / softening in the linear units of the normalisation


def test_gaussian_blur_matches_scipy_inside_and_keeps_flux():
    image = torch.zeros(1, 1, 48, 48)
    image[0, 0, 20, 25] = 1.0
    blurred = _blur(image, 3.0)
    reference = ndimage.gaussian_filter(image[0, 0].numpy(), 3.0, truncate=4.0)
    assert np.allclose(blurred[0, 0].numpy(), reference, atol=1e-6)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5
    flat = torch.full((2, 3, 8, 8), 2.5)  # smaller than the kernel: edges replicate
    assert torch.allclose(_blur(flat, 3.0), flat)


def test_a_faint_star_taken_away_is_given_back_where_it_was_and_sky_noise_is_not():
    softening = 3.0  # sky noise is 1 / softening in the linear units of the normalisation
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 1, 96, 96, generator=generator) / softening
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    # A faint undersampled star: peak 30 sky sigmas, FWHM 1.2 px, S/N ~ 11 in a 2.4 px aperture.
    star = (30.0 / softening) * torch.exp(-((yy - 48) ** 2 + (xx - 40) ** 2) / (2 * 0.51**2))
    z = torch.asinh(star + noise)
    flat = torch.zeros_like(z)  # a restoration that removed the noise and the star with it
    out = torch.sinh(give_back_removed_sources(z, flat, SKY))[0, 0]
    aperture = ((yy - 48) ** 2 + (xx - 40) ** 2) <= 2.4**2
    flux = out[aperture].sum() / (star + noise[0, 0])[aperture].sum()
    assert flux > 0.8  # given back at the star, not spread into a halo
    empty = ((yy - 48) ** 2 + (xx - 40) ** 2) > 10**2
    assert out[empty].std() < 0.25 * noise[0, 0][empty].std()  # most sky noise stays removed
    assert torch.allclose(give_back_removed_sources(z, z, SKY), z, atol=1e-5)


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
    out = torch.sinh(give_back_removed_sources(z, restored, SKY))[0, 0]
    aperture = r2 <= 36
    observed = (star + noise)[0, 0][aperture].sum()
    before = torch.sinh(restored)[0, 0][aperture].sum() / observed
    after = out[aperture].sum() / observed
    assert before > 1.2 and abs(float(after) - 1.0) < 0.05
    empty = r2 > 15**2
    assert out[empty].std() < 0.25 * noise[0, 0][empty].std()


def test_the_stage_is_its_function_with_its_settings():
    generator = torch.Generator().manual_seed(5)
    z = torch.asinh(torch.randn(1, 1, 32, 32, generator=generator) * 3)
    restored = torch.zeros_like(z)
    stage = GiveBack(detect_scale=1.5, footprint_scale=2.0, chi2_from=1.5)
    expected = give_back_removed_sources(
        z, restored, SKY, detect_scale=1.5, footprint_scale=2.0, chi2_from=1.5
    )
    assert torch.equal(stage(z, restored, SKY), expected)
    assert not torch.equal(expected, restored)


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
        out = give_back_removed_sources(z, restored, SKY, footprint_scale=footprint_px)
        out = torch.sinh(out)
        return float(out[0, 0][aperture].sum() / observed), out[0, 0]

    without, _ = aperture_ratio(None)
    with_footprint, out = aperture_ratio(1.0)
    assert without > 1.2  # the significance step alone leaves the halo
    assert abs(with_footprint - 1.0) < 0.02
    sky = r2 > 25**2  # the sky away from the source keeps its noise removed
    assert out[sky].std() < 0.15 * noise[0, 0][sky].std()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"ramp_from": 5.0}, "postprocess.give_back.ramp_from=5.0"),
        ({"chi2_from": 0.5}, "postprocess.give_back.chi2_from=0.5"),
        ({"detect_scale": 0.0}, "postprocess.give_back.detect_scale=0.0"),
        ({"detect_scale": None}, "postprocess.give_back.detect_scale=None"),
        ({"footprint_scale": -1.0}, "postprocess.give_back.footprint_scale=-1.0"),
        ({"stack_snr": "abc"}, "postprocess.give_back.stack_snr='abc'"),
        ({"threshold": True}, "postprocess.give_back.threshold=True"),
    ],
)
def test_settings_are_checked_naming_the_key(settings, key):
    with pytest.raises(UserError) as info:
        GiveBack(**settings)
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


def _bright_star_with_shot_noise(seed: int, photons_per_unit: float):
    """A bright star (peak 400 sky sigmas) in linear normaliser units, its noise sigma map
    (sky plus shot noise) and one noise draw."""
    softening = 3.0
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r2 = (yy - 32) ** 2 + (xx - 30) ** 2
    star = (400.0 / softening) * torch.exp(-r2 / (2 * 1.0**2))
    sigma = torch.sqrt(1.0 / softening**2 + star / photons_per_unit)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, 64, 64, generator=generator) * sigma
    return softening, star, sigma, noise, r2


def test_a_reshaped_core_is_given_back_but_removed_shot_noise_is_not():
    photons_per_unit = 16.0
    softening, star, sigma, noise, r2 = _bright_star_with_shot_noise(3, photons_per_unit)
    z = torch.asinh(star + noise)
    shot = AsinhNoise(softening, photons_per_unit)

    def linear(restored, **extra):
        out = give_back_removed_sources(
            z, torch.asinh(restored), shot, footprint_scale=None, **extra
        )
        return torch.sinh(out)[0, 0]

    # A restoration that removed exactly the noise, core included: nothing is given back (the
    # residual is the noise itself, chi-square ~1, no significant local mean).
    clean = star.expand_as(z)
    assert torch.allclose(linear(clean, chi2_from=1.5), star, atol=0.02 * float(star.max()))
    core = r2 <= 4
    kept = linear(clean, chi2_from=1.5) - star
    assert kept[core].pow(2).mean() < 0.25 * noise[0, 0][core].pow(2).mean()
    # A restoration that reshaped the core by 2.5 sigma with no net flux (first ring down, the
    # next up): the mean test misses it, the chi-square test gives it back.
    inner, outer = r2 <= 2, (r2 > 2) & (r2 <= 8)
    change = -2.5 * sigma * inner
    change = change + outer * sigma * (2.5 * sigma[inner].sum() / sigma[outer].sum())
    assert abs(float(change.sum())) < 1e-3 * float(star.sum())  # no net flux moved
    reshaped = clean + change
    without = linear(reshaped)
    with_chi2 = linear(reshaped, chi2_from=1.5)
    error = lambda image: float((image - star)[r2 <= 8].pow(2).mean())  # noqa: E731
    noisy_error = float(noise[0, 0][r2 <= 8].pow(2).mean())
    assert error(without) > 2 * noisy_error  # the reshaping survives the significance step
    assert error(with_chi2) < 1.5 * noisy_error  # given back: no worse than the input


def test_significance_with_shot_noise_keeps_a_bright_core_denoised():
    # Measured in sky sigma alone, the shot noise removed from a bright core looks like a
    # detection and is given back; with the pixel's own sigma it is noise and stays removed.
    photons_per_unit = 16.0
    softening, star, _, noise, r2 = _bright_star_with_shot_noise(4, photons_per_unit)
    z = torch.asinh(star + noise)
    clean = torch.asinh(star.expand_as(z))
    core = r2 <= 4

    def core_error(model):
        out = give_back_removed_sources(z, clean, model, footprint_scale=None)
        return float((torch.sinh(out)[0, 0] - star)[core].pow(2).mean())

    noisy_error = float(noise[0, 0][core].pow(2).mean())
    assert core_error(AsinhNoise(softening)) > 0.5 * noisy_error
    assert core_error(AsinhNoise(softening, photons_per_unit)) < 0.2 * noisy_error


def test_what_was_done_to_every_bright_peak_alike_is_given_back_at_each():
    generator = torch.Generator().manual_seed(6)
    residual = torch.randn(1, 1, 96, 96, generator=generator)  # noise units
    snr = torch.zeros(1, 1, 96, 96)
    # The same zero-flux reshaping (core lowered, one side raised) at 12 bright peaks.
    pattern = torch.zeros(7, 7)
    pattern[3, 3], pattern[3, 4], pattern[2, 3] = 1.5, -0.75, -0.75
    peaks = [(12 + 24 * (k // 4), 12 + 24 * (k % 4)) for k in range(12)]
    for y, x in peaks:
        residual[0, 0, y - 3 : y + 4, x - 3 : x + 4] += pattern
        snr[0, 0, y, x] = 50.0
    correction = stacked_correction(residual, snr, 20.0)
    for y, x in peaks:  # placed where it was, the right way round
        stamp = correction[0, 0, y - 3 : y + 4, x - 3 : x + 4]
        assert torch.allclose(stamp[3, 3], torch.tensor(1.5), atol=0.6)
        assert stamp[3, 4] < -0.2 and stamp[2, 3] < -0.2
    away = torch.ones(96, 96, dtype=torch.bool)
    for y, x in peaks:
        away[y - 3 : y + 4, x - 3 : x + 4] = False
    assert torch.all(correction[0, 0][away] == 0)  # nothing added away from the peaks
    # Fewer than 8 peaks, or peaks below the S/N: no correction (too few to tell from noise).
    assert torch.all(stacked_correction(residual, snr, 60.0) == 0)
    few = snr.clone()
    for y, x in peaks[7:]:
        few[0, 0, y, x] = 0.0
    assert torch.all(stacked_correction(residual, few, 20.0) == 0)
