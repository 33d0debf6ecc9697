import torch

from astrorestore.metrics.no_truth import bright_flux_ratio, no_truth_measures, sky_noise_ratio


def _frame(seed=0):
    g = torch.Generator().manual_seed(seed)
    sky = 20.0 + 5.0 * torch.randn(2, 1, 64, 64, generator=g)
    star = torch.zeros(2, 1, 64, 64)
    star[:, :, 30:33, 30:33] = 2000.0
    return sky, star


def test_sky_noise_ratio_measures_noise_removed():
    sky, star = _frame()
    before = sky + star
    after = 20.0 + 0.5 * (sky - 20.0) + star  # half the noise
    assert abs(sky_noise_ratio(before, after).item() - 0.5) < 0.05
    assert abs(sky_noise_ratio(before, before).item() - 1.0) < 1e-6


def test_bright_flux_ratio_detects_moved_light():
    sky, star = _frame()
    before = sky + star
    assert abs(bright_flux_ratio(before, before).item() - 1.0) < 1e-6
    dimmer = sky + 0.8 * star
    assert abs(bright_flux_ratio(before, dimmer).item() - 0.8) < 0.02
    assert torch.isnan(bright_flux_ratio(sky, sky))  # no bright source: nothing to say


def test_no_truth_measures_leave_out_what_a_batch_cannot_tell():
    sky, star = _frame()
    both = no_truth_measures(sky + star, sky + 0.8 * star)
    assert set(both) == {"sky_noise_ratio", "bright_flux_ratio"}
    assert abs(both["bright_flux_ratio"].item() - 0.8) < 0.02
    assert set(no_truth_measures(sky, sky)) == {"sky_noise_ratio"}  # no bright source
