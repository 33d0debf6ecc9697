"""model=sure: Poisson-Gaussian SURE as a training loss, computed in the training step in the
linear units u = sinh(z) with the frame's per-pixel noise model."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.pairings.frame_noise import FrameNoisePairing
from astrorestore.errors import UserError
from astrorestore.losses.noise_model import sure_poisson_gaussian_map
from astrorestore.modules.sure import SureModule
from astrorestore.train import build
from tests.unit.test_r2r_training import ONE_STEP, fits_folder  # noqa: F401
from tests.unit.test_r2r_training import _fits_cfg as r2r_fits_cfg

DRAWS = 2000
SIZE = 24
KERNEL = torch.tensor(
    [[0.05, 0.10, 0.02], [0.12, 0.40, 0.08], [0.03, 0.15, 0.05]], dtype=torch.float64
)[None, None]


class LinearInU(nn.Module):
    """A fixed 3x3 filter of u = sinh(z), as a network of the normalised z: F(u) = K * u."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.asinh(F.conv2d(torch.sinh(z), KERNEL, padding=1))


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(
        torch.linspace(0, 1, SIZE, dtype=torch.float64),
        torch.linspace(0, 1, SIZE, dtype=torch.float64),
        indexing="ij",
    )


def test_the_training_steps_sure_has_the_supervised_mse_as_expectation_with_noise_maps():
    # Frame units: sky 30..76 e- and a 400 e- star; gain 0.5..2 e-/unit and read variance
    # 4..16 units^2 as maps; a sky map as the normaliser's offset and a scale per image.
    y, x = _grid()
    star = 400.0 * torch.exp(-(((x - 0.4) * SIZE) ** 2 + ((y - 0.6) * SIZE) ** 2) / 6.0)
    truth = (30.0 + 46.0 * x + star)[None, None]
    gain, read_variance = (0.5 + 1.5 * x)[None, None], (4.0 + 12.0 * y)[None, None]
    offset, scale = (28.0 + 40.0 * x)[None, None], torch.tensor(6.0, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    counts = torch.poisson((truth * gain).expand(DRAWS, 1, SIZE, SIZE).contiguous(), generator)
    read = torch.randn(counts.shape, generator=generator, dtype=torch.float64)
    noisy = counts / gain + read_variance.sqrt() * read
    batch = {
        "input": torch.asinh((noisy - offset) / scale),
        "offset": offset.expand_as(noisy),
        "scale": scale.view(1, 1, 1, 1).expand(DRAWS, 1, 1, 1),
        "poisson_scale": (1.0 / gain).expand_as(noisy),
        "read_variance": read_variance.expand_as(noisy),
    }
    module = SureModule(LinearInU(), optimizer=lambda params: None, compute_lpips=False)
    values = module.sure(module.net, batch, generator).flatten(1).mean(1)
    # The supervised MSE in u: the filter's bias on the truth plus its noise (K^2 * variance).
    truth_u = (truth - offset) / scale
    variance_u = (truth / gain + read_variance) / scale**2
    expected = float(
        (F.conv2d(truth_u, KERNEL, padding=1) - truth_u).square().mean()
        + F.conv2d(variance_u, KERNEL.square(), padding=1).mean()
    )
    mean, error = float(values.mean()), float(values.std()) / math.sqrt(DRAWS)
    assert abs(mean - expected) < 4 * error, (mean, expected, error)
    assert abs(mean - expected) < 0.02 * expected
    # Without the divergence (a plain MSE to the noisy input) it would be far off: the test
    # can tell an estimate from the residual alone.
    residual = F.conv2d(torch.sinh(batch["input"]), KERNEL, padding=1) - torch.sinh(batch["input"])
    assert abs(float(residual.square().mean()) - expected) > 0.2 * expected


def test_the_pairing_passes_the_frame_and_its_noise_model_per_pixel():
    noisy = torch.full((2, 1, 8, 8), 100.0)
    gain = torch.tensor([2.0, 0.5]).view(2, 1, 1, 1)
    read = torch.tensor([3.0, 1.0]).view(2, 1, 1, 1)
    out = FrameNoisePairing()({"noisy": noisy, "noise_gain": gain, "noise_read": read})
    assert torch.equal(out["input"], noisy) and torch.equal(out["target"], noisy)
    assert out["poisson_scale"].shape == noisy.shape
    assert torch.equal(out["poisson_scale"][:, 0, 0, 0], torch.tensor([0.5, 2.0]))
    assert torch.equal(out["read_variance"][:, 0, 0, 0], torch.tensor([9.0, 1.0]))
    # An ERR map: its variance as it is, no Poisson part.
    sigma = torch.rand(2, 1, 8, 8) + 1.0
    out = FrameNoisePairing()({"noisy": noisy, "sigma": sigma})
    assert torch.equal(out["poisson_scale"], torch.zeros_like(noisy))
    torch.testing.assert_close(out["read_variance"], sigma.square())
    # Simulated fields: the noise group's gain and read noise.
    clean = torch.full((2, 1, 8, 8), 50.0)
    out = FrameNoisePairing(PoissonGaussianNoise(gain=4.0, read_noise=5.0))({"clean": clean})
    assert torch.allclose(out["poisson_scale"], torch.tensor(0.25))
    assert torch.allclose(out["read_variance"], torch.tensor(25.0))


def test_a_noise_map_of_the_wrong_shape_is_one_line():
    noisy = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UserError, match=r"noise variance map has shape \(2, 1, 4, 8\)") as info:
        FrameNoisePairing()({"noisy": noisy, "sigma": torch.ones(2, 1, 4, 8)})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="gain map has shape"):
        FrameNoisePairing()(
            {"noisy": noisy, "noise_gain": torch.ones(3, 1, 1, 1), "noise_read": torch.ones(1)}
        )


def _fits_cfg(folder, *extra):
    return r2r_fits_cfg(folder, *extra, model="sure")


# ~4 s on a quiet 2-core machine
def test_sure_trains_on_fits_frames_with_each_frames_header_noise_model(fits_folder, tmp_path):  # noqa: F811
    datamodule, model = build(_fits_cfg(fits_folder))
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    trainer = L.Trainer(default_root_dir=tmp_path, **ONE_STEP)
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    # The headers say gain 1 (electrons) and RDNOISE = 4: what the training batches carry.
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert torch.all(batch["poisson_scale"] == 1.0) and torch.all(batch["read_variance"] == 16.0)
    assert model.restorer_spec()["_target_"].endswith("NetForward")  # one plain pass


def test_a_pixel_loss_or_half_precision_is_refused(fits_folder):  # noqa: F811
    with pytest.raises(UserError, match="drop the loss= override"):
        build(_fits_cfg(fits_folder, "loss=l2"))
    with pytest.raises(UserError, match="model.tau=0.5 is invalid"):
        build(_fits_cfg(fits_folder, "model.tau=0.5"))
    _, model = build(_fits_cfg(fits_folder))
    model.trainer = type("T", (), {"precision": "bf16-mixed"})()
    with pytest.raises(UserError, match="trainer.precision=32"):
        model.on_fit_start()


def test_the_second_order_term_estimates_the_poisson_curvature_with_per_pixel_steps():
    # F(u) = 0.1 u^2 pixel by pixel: F'' = 0.2, so the term is -2 gamma r F'' = -0.4 gamma r at
    # every pixel, whatever each pixel's step (steps from 1e-3 to 1e-1 across the frame).
    generator = torch.Generator().manual_seed(5)
    noisy = 3.0 + torch.randn((400, 1, 16, 16), generator=generator, dtype=torch.float64)
    gamma, read = 0.5, 2.0
    steps = torch.logspace(-3, -1, 16, dtype=torch.float64).view(1, 1, 1, 16)
    terms = {}
    for second_order in (True, False):
        terms[second_order] = sure_poisson_gaussian_map(
            lambda u: 0.1 * u.square(),
            noisy,
            gamma,
            read,
            tau=steps,
            curvature_tau=steps,
            second_order=second_order,
            generator=torch.Generator().manual_seed(6),
        )
    difference = terms[True] - terms[False]
    assert float(difference.mean()) == pytest.approx(-0.4 * gamma * read, rel=0.03)
