"""Tests of the detector artefacts: drop-outs, cosmic rays, hot/dead pixels and 1/f striping."""

from __future__ import annotations

import pytest
import torch

from astrorestore.data.corruption.artifacts import (
    BernoulliDropout,
    CosmicRays,
    HotDeadPixels,
    Striping,
)
from astrorestore.errors import UserError


def _constant(value: float = 100.0, batch: int = 16, size: int = 128) -> torch.Tensor:
    return torch.full((batch, 1, size, size), value)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


def test_dropout_zeroes_a_fraction_p_and_keeps_the_rest() -> None:
    model = BernoulliDropout(p=0.3)
    noisy, target = model(_constant(), torch.Generator().manual_seed(0))
    dropped = noisy == 0
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert torch.equal(noisy[~dropped], target[~dropped])
    assert model.noise_sigma(target) is None
    # Independent per pixel: neighbouring drop-outs are uncorrelated.
    assert abs(_corr(dropped[..., 1:].float(), dropped[..., :-1].float())) < 0.01


def test_cosmic_rays_rate_energy_and_tracks() -> None:
    model = CosmicRays(rate=2000.0, energy_range=(1e3, 1e3), max_length=0.0)
    image = torch.zeros(64, 1, 128, 128)
    hits = model(image, torch.Generator().manual_seed(0))[0]
    # Point hits of 1000 e- each: the count per megapixel is the rate, nothing is negative.
    n_hits = (hits.sum() / 1e3).item()
    expected = 2000.0 * 64 * 128 * 128 / 1e6
    assert n_hits == pytest.approx(expected, rel=0.05)
    assert hits.min() >= 0 and torch.all((hits == 0) | (hits % 1e3 < 1e-3))
    # Tracks: with a length up to 8 px one hit lights several pixels in a line.
    tracks = CosmicRays(rate=200.0, energy_range=(1e3, 1e4), max_length=8.0)(
        image, torch.Generator().manual_seed(1)
    )[0]
    lit_per_hit = (tracks > 0).sum().item() / (200.0 * 64 * 128 * 128 / 1e6)
    assert 2.0 < lit_per_hit < 9.0
    # Charge is conserved when no track leaves the frame: total = sum of the drawn energies.
    assert tracks.sum().item() > 1e3 * 0.9 * (200.0 * 64 * 128 * 128 / 1e6)


def test_cosmic_ray_energies_follow_the_power_law() -> None:
    model = CosmicRays(energy_range=(100.0, 1e4), energy_slope=1.0)
    energy = model._energies(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert energy.min() >= 100.0 and energy.max() <= 1e4
    # N(>E) ~ E^-1 - 1e-4 (truncated at 1e4): 0.0099 / 0.0009 = 11 times more above 100 than 1000.
    ratio = (energy > 100).sum().item() / (energy > 1000).sum().item()
    assert ratio == pytest.approx(11.0, rel=0.05)


def test_cosmic_rays_are_added_on_top_and_differ_between_a_pair() -> None:
    model = CosmicRays(rate=1000.0)
    n1, n2, target = model.sample_pair(_constant(), torch.Generator().manual_seed(0))
    assert torch.all(n1 >= target) and torch.all(n2 >= target)
    assert not torch.equal(n1 > target, n2 > target)


def test_hot_dead_pixels_fractions_levels_and_shared_map() -> None:
    model = HotDeadPixels(hot_fraction=0.01, dead_fraction=0.02, hot_level=(500.0, 900.0))
    n1, n2, target = model.sample_pair(_constant(), torch.Generator().manual_seed(0))
    dead, hot = n1 == 0, n1 > target
    assert dead.float().mean().item() == pytest.approx(0.02, abs=0.002)
    assert hot.float().mean().item() == pytest.approx(0.01, abs=0.0015)
    added = (n1 - target)[hot]
    assert added.min() >= 500.0 and added.max() <= 900.0
    assert added.mean().item() == pytest.approx(700.0, rel=0.03)
    # One detector: both frames of a pair have the same defects; the rest is untouched.
    assert torch.equal(n1, n2)
    assert torch.equal(model.defect_mask, dead | hot)
    assert torch.equal(n1[~(dead | hot)], target[~(dead | hot)])
    # A new draw is a new map.
    n3, _ = model(_constant(), torch.Generator().manual_seed(1))
    assert not torch.equal(n3, n1)


@pytest.mark.parametrize("axis", ["row", "column"])
def test_striping_correlates_along_the_stripe_not_across(axis: str) -> None:
    model = Striping(amplitude=3.0, axis=axis)
    noisy, target = model(_constant(batch=32), torch.Generator().manual_seed(0))
    stripes = noisy - target
    along_x = _corr(stripes[..., 1:], stripes[..., :-1])
    along_y = _corr(stripes[..., 1:, :], stripes[..., :-1, :])
    along, across = (along_x, along_y) if axis == "row" else (along_y, along_x)
    # 1/f has equal power per octave, so even the neighbour correlation is well below 1.
    assert along > 0.5
    assert abs(across) < 0.02
    assert stripes.double().std().item() == pytest.approx(3.0, rel=0.05)
    assert stripes.double().mean().item() == pytest.approx(0.0, abs=0.1)
    assert model.noise_sigma(target).unique().tolist() == [3.0]


def test_striping_has_a_one_over_f_spectrum() -> None:
    stripes = Striping(amplitude=1.0, alpha=1.0).stripes(
        torch.Size((64, 1, 16, 256)), torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    power = torch.fft.rfft(stripes.double(), dim=-1).abs().pow(2).mean(dim=(0, 1, 2))
    # 1/f: the power at frequency 4/256 is ~8 times that at 32/256.
    assert (power[3:6].mean() / power[30:35].mean()).item() == pytest.approx(8.0, rel=0.25)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BernoulliDropout(p=1.5), r"noise.p=1.5 is invalid: use a value in \[0, 1\)"),
        (lambda: CosmicRays(rate=-1.0), "noise.rate"),
        (lambda: CosmicRays(energy_range=(10.0, 1.0)), "noise.energy_range"),
        (lambda: HotDeadPixels(hot_fraction=0.6, dead_fraction=0.5), "keep their sum below 1"),
        (lambda: Striping(axis="diagonal"), "noise.axis"),
        (lambda: Striping(amplitude=-1.0), "noise.amplitude"),
    ],
)
def test_bad_artifact_parameters_raise_one_line_user_error(make, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        make()
    assert "\n" not in str(info.value)
