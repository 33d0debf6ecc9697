"""Pairings: what each kind of training example is, and what each refuses."""

import pytest
import torch

from astrorestore.data.corruption.noise import GaussianNoise, PoissonGaussianNoise
from astrorestore.data.pairings.base import Noise2NoisePairing, SupervisedPairing
from astrorestore.errors import UserError


def _clean(value=100.0):
    return torch.full((4, 1, 16, 16), value)


def test_supervised_pairs_noisy_input_with_clean_truth():
    pairing = SupervisedPairing(GaussianNoise(sigma=5.0))
    out = pairing({"clean": _clean()}, torch.Generator().manual_seed(0))
    assert set(out) == {"input", "target", "truth"}
    assert torch.equal(out["target"], out["truth"]) and torch.equal(out["truth"], _clean())
    assert 4.0 < (out["input"] - out["truth"]).std().item() < 6.0


def test_noise2noise_targets_are_independent_draws_of_one_scene():
    pairing = Noise2NoisePairing(GaussianNoise(sigma=5.0))
    out = pairing({"clean": _clean()}, torch.Generator().manual_seed(0))
    first, second = out["input"] - out["truth"], out["target"] - out["truth"]
    assert abs(torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]) < 0.1
    assert 4.0 < second.std().item() < 6.0


def test_noise2noise_uses_real_exposure_pairs_as_given():
    noisy, noisy2 = _clean(1.0), _clean(2.0)
    out = Noise2NoisePairing()({"noisy": noisy, "noisy2": noisy2})
    assert torch.equal(out["input"], noisy) and torch.equal(out["target"], noisy2)
    assert "truth" not in out


def test_valid_pixels_become_the_loss_mask():
    valid = torch.ones(4, 1, 16, 16, dtype=torch.bool)
    valid[:, :, 0, 0] = False
    out = Noise2NoisePairing()({"noisy": _clean(1.0), "noisy2": _clean(2.0), "valid": valid})
    assert torch.equal(out["loss_mask"], valid)


def test_fixed_exposure_noise_keeps_the_scene_as_truth():
    pairing = SupervisedPairing(PoissonGaussianNoise(read_noise=0.0))
    out = pairing({"clean": _clean()}, torch.Generator().manual_seed(1))
    assert torch.equal(out["truth"], _clean())


def test_pairings_refuse_data_they_cannot_use():
    with pytest.raises(UserError, match="supervised training needs clean images.*model=n2v"):
        SupervisedPairing(GaussianNoise()).check_data(1, frozenset({"noisy"}), "jwst")
    with pytest.raises(UserError, match="Noise2Noise needs"):
        Noise2NoisePairing(GaussianNoise()).check_data(1, frozenset({"noisy"}), "jwst")
    Noise2NoisePairing().check_data(1, frozenset({"noisy", "noisy2"}), "jwst")
    with pytest.raises(UserError, match="needs a noise model"):
        SupervisedPairing()({"clean": _clean()})


def test_the_protocol_is_declared_on_the_base_and_overridden_where_it_differs():
    from astrorestore.data.pairings.blind_spot import BlindSpotPairing
    from astrorestore.data.pairings.colorization import ColorizationPairing
    from astrorestore.data.pairings.super_resolution import SuperResolutionPairing

    plain = SupervisedPairing(GaussianNoise(sigma=1.0))
    # Defaults every caller may rely on without getattr/hasattr.
    assert plain.upscale_factor == 1 and plain.structured_axis is None
    assert not plain.for_photographs and not plain.makes_loss_mask
    assert plain.check_patch(8) is None and plain.check_net(object()) is None
    assert SuperResolutionPairing(4).upscale_factor == 4
    assert SuperResolutionPairing(2).for_photographs and ColorizationPairing().for_photographs
    struct = BlindSpotPairing(struct_axis="row", struct_span=3)
    assert struct.structured_axis == "row" and struct.makes_loss_mask
    with pytest.raises(UserError, match="struct_span=3"):
        struct.check_patch(3)
    # One name for the super-resolution factor (``scale`` also names a normalisation statistic).
    assert not hasattr(SuperResolutionPairing(4), "scale")
