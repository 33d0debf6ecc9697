"""The recorrupting pairing (model=r2r): input and target noises from the frame's own model."""

import numpy as np
import pytest
import torch

from astrorestore.data.corruption.noise import GaussianNoise, PoissonGaussianNoise
from astrorestore.data.pairings.recorrupted import RecorruptedPairing
from astrorestore.errors import UserError
from astrorestore.nets.recorrupted_mean import RecorruptedMean


def _noisy_frame(variance: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, clean)``: a flat scene of 100 with Gaussian noise of the given variance map."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.full(variance.shape, 100.0)
    return clean + variance.sqrt() * torch.randn(variance.shape, generator=g), clean


def test_a_per_pixel_variance_map_gives_input_and_target_their_variances():
    # Left half variance 4, right half 64 (an ERR map's sigma^2). alpha = 0.5 and 0.2: the input
    # carries v / (1 - alpha), the target v / alpha, and their noises are uncorrelated.
    variance = torch.full((64, 1, 32, 32), 4.0)
    variance[..., 16:] = 64.0
    noisy, clean = _noisy_frame(variance)
    for alpha in (0.5, 0.2):
        out = RecorruptedPairing(alpha=alpha)(
            {"noisy": noisy, "sigma": variance.sqrt()}, torch.Generator().manual_seed(1)
        )
        assert torch.equal(out["observed"], noisy) and "truth" not in out
        first, second = out["input"] - clean, out["target"] - clean
        for half, v in ((slice(0, 16), 4.0), (slice(16, 32), 64.0)):
            assert first[..., half].var().item() == pytest.approx(v / (1 - alpha), rel=0.05)
            assert second[..., half].var().item() == pytest.approx(v / alpha, rel=0.05)
        r = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1].item()
        assert abs(r) < 0.02


def test_frame_gain_and_read_noise_give_the_poisson_gaussian_variance():
    # No map: each item's noise_gain / noise_read (the frame's FrameNoise) set the variance
    # y / gain + read^2, per item. Item 0: gain 2, read 3 -> 100/2 + 9 = 59; item 1: gain 0.5,
    # read 1 -> 201.
    gain = torch.tensor([2.0, 0.5]).view(2, 1, 1, 1)
    read = torch.tensor([3.0, 1.0]).view(2, 1, 1, 1)
    variance = (100.0 / gain + read**2).expand(2, 1, 128, 128)
    noisy, clean = _noisy_frame(variance.contiguous(), seed=2)
    out = RecorruptedPairing()(
        {"noisy": noisy, "noise_gain": gain, "noise_read": read}, torch.Generator().manual_seed(3)
    )
    for i, v in enumerate((59.0, 201.0)):
        assert (out["input"][i] - clean[i]).var().item() == pytest.approx(2 * v, rel=0.05)
        assert (out["target"][i] - clean[i]).var().item() == pytest.approx(2 * v, rel=0.05)


def test_simulated_fields_use_the_noise_configs_model_and_keep_the_truth():
    noise = PoissonGaussianNoise(gain=1.0, read_noise=5.0)
    clean = torch.full((32, 1, 32, 32), 75.0)
    out = RecorruptedPairing(noise)({"clean": clean}, torch.Generator().manual_seed(4))
    assert torch.equal(out["truth"], clean)
    # Var(y) = 75 + 25 = 100; the recorruption adds 100 more to each side.
    assert (out["observed"] - clean).var().item() == pytest.approx(100.0, rel=0.05)
    assert (out["input"] - clean).var().item() == pytest.approx(200.0, rel=0.05)
    assert (out["target"] - clean).var().item() == pytest.approx(200.0, rel=0.05)
    # A model without gain (Gaussian) recorrupts with its sigma.
    out = RecorruptedPairing(GaussianNoise(sigma=3.0))({"clean": clean}, torch.Generator())
    assert (out["target"] - clean).var().item() == pytest.approx(18.0, rel=0.05)


def test_gr2r_thins_photon_counts_into_independent_poisson_halves():
    rng = np.random.default_rng(5)
    counts = torch.from_numpy(rng.poisson(40.0, (64, 1, 32, 32)).astype(np.float32))
    out = RecorruptedPairing(kind="gr2r")(
        {
            "noisy": counts,
            "noise_gain": torch.ones(64, 1, 1, 1),
            "noise_read": torch.zeros(64, 1, 1, 1),
        },
        torch.Generator().manual_seed(6),
    )
    # Halves of a Poisson(40) count, each scaled back: mean 40, variance 40 / 0.5 = 80.
    for key in ("input", "target"):
        assert out[key].mean().item() == pytest.approx(40.0, rel=0.02)
        assert out[key].var().item() == pytest.approx(80.0, rel=0.05)
    assert torch.allclose(0.5 * (out["input"] + out["target"]), counts)


def test_bad_settings_and_data_without_a_noise_model_are_refused_in_one_line():
    with pytest.raises(UserError, match="data.pairing.kind='sure' is invalid"):
        RecorruptedPairing(kind="sure")
    with pytest.raises(UserError, match=r"data.pairing.alpha=1.0 is invalid"):
        RecorruptedPairing(alpha=1.0)
    pairing = RecorruptedPairing()
    with pytest.raises(UserError, match="no noise model for its frames"):
        pairing.check_data(1, frozenset({"noisy"}), "custom")
    with pytest.raises(UserError, match="data.pairs=true"):
        pairing.check_data(1, frozenset({"noisy", "noisy2"}), "jwst")
    with pytest.raises(UserError, match="noise=<poisson_gaussian"):
        pairing.check_data(1, frozenset({"clean"}), "simulated")
    pairing.check_data(1, frozenset({"noisy", "frame_noise"}), "fits")  # accepted
    with pytest.raises(UserError, match="kind=gr2r .* needs the frame's gain"):
        RecorruptedPairing(kind="gr2r")(
            {"noisy": torch.ones(1, 1, 8, 8), "sigma": torch.ones(1, 1, 8, 8)}
        )


def test_a_noise_map_of_the_wrong_shape_is_one_line():
    noisy = torch.ones(2, 1, 16, 16)
    with pytest.raises(UserError, match=r"map has shape \(2, 1, 8, 8\) but the batch is"):
        RecorruptedPairing()({"noisy": noisy, "sigma": torch.ones(2, 1, 8, 8)})


def test_restoring_averages_the_network_over_recorruptions_of_the_sky_noise():
    # An identity network returns asinh(u + a eps / softening) per pass: the mean over the
    # passes is the input plus noise of sigma a / (softening sqrt(passes)) in u = sinh(z).
    z = torch.asinh(torch.linspace(-3.0, 3.0, 64 * 64).view(1, 1, 64, 64))
    for passes in (1, 16):
        mean = RecorruptedMean(torch.nn.Identity(), alpha=0.5, passes=passes, softening=2.0)
        out = mean(z, torch.Generator().manual_seed(0))
        spread = (torch.sinh(out) - torch.sinh(z)).std().item()
        assert spread == pytest.approx(0.5 / passes**0.5, rel=0.1)
        assert torch.equal(out, mean(z, torch.Generator().manual_seed(0)))  # seeded: repeats
    with pytest.raises(UserError, match="model.recorrupted_mean.passes=0 is invalid"):
        RecorruptedMean(torch.nn.Identity(), passes=0)


def test_an_r2r_checkpoint_restores_with_the_mean_over_recorruptions():
    # The module's restorer spec is what load_restorer instantiates with the loaded network.
    from hydra.utils import instantiate

    from astrorestore.losses.pixel import RestorationLoss
    from astrorestore.modules.regression import RegressionModule

    def module(**options):
        net, loss = torch.nn.Identity(), RestorationLoss()
        return RegressionModule(net, loss, torch.optim.Adam, compute_lpips=False, **options)

    options = {"alpha": 0.5, "passes": 4, "softening": 3.0}
    spec = module(recorrupted_mean=options).restorer_spec()
    assert spec.pop("weights") == "net" and spec.pop("net_config") == "net"
    fn = instantiate(spec, net=torch.nn.Identity())
    assert isinstance(fn, RecorruptedMean) and (fn.passes, fn.alpha) == (4, 0.5)
    assert module().restorer_spec()["_target_"].endswith("NetForward")
