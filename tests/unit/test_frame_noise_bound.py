"""The noise bound of a network follows each frame's own noise (``photons_per_unit=frame``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from astrorestore.data.corruption.noise import GaussianNoise, PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import (
    AsinhNoise,
    AsinhNormalizer,
    asinh_noise_sigma,
    frame_noise,
)
from astrorestore.data.pairings.base import SupervisedPairing
from astrorestore.errors import UserError
from astrorestore.inference.restore import restore_image, restore_tensor
from astrorestore.inference.restorer import NetForward, Restorer
from astrorestore.nets.bounded import BoundedResidualUNet
from tests.unit.test_r2r_training import fits_folder  # noqa: F401, F811 (a fixture)

SOFTENING = 3.0


def _net(photons_per_unit) -> BoundedResidualUNet:
    torch.manual_seed(0)
    net = BoundedResidualUNet(
        base_channels=8,
        depth=2,
        dilations=(1, 2),
        noise=AsinhNoise(SOFTENING, photons_per_unit),
        bound_sigmas=4.0,
    )
    # A network that wants to move every pixel far: the bound decides the output.
    torch.nn.init.normal_(net.noise_head.weight, std=10.0)
    torch.nn.init.constant_(net.noise_head.bias, 1e3)
    return net.eval()


def _restorer(net: torch.nn.Module, frame_gain: bool) -> Restorer:
    return Restorer(
        fn=NetForward(net),
        normalizer=AsinhNormalizer(SOFTENING),
        in_channels=1,
        out_channels=1,
        scale=1,
        size_multiple=4,
        device=torch.device("cpu"),
        name="frame-bound",
        ckpt_path="/tmp/frame-bound.ckpt",
        frame_gain=frame_gain,
    )


def _star_frame(size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = 30.0 + 2e4 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / 2.0)
    return (rng.poisson(truth) + rng.normal(0, 3.0, truth.shape)).astype(np.float32)


def test_frame_noise_is_each_images_own_and_refused_without_one():
    noise = AsinhNoise(SOFTENING, "frame")
    z = torch.linspace(-2, 8, 40).reshape(2, 1, 4, 5)
    with pytest.raises(UserError, match="photons_per_unit=frame"):
        noise(z)
    photons = torch.tensor([5.0, 500.0]).view(2, 1, 1, 1)
    with frame_noise(photons):
        sigma = noise(z)
    for i, g in enumerate((5.0, 500.0)):
        torch.testing.assert_close(sigma[i : i + 1], asinh_noise_sigma(z[i : i + 1], SOFTENING, g))
    # Bright pixels of the low-gain image are noisier than the sky alone says.
    assert bool((sigma[0, 0, -1] > asinh_noise_sigma(z[0, 0, -1], SOFTENING) * 2).all())
    with pytest.raises(UserError, match="photons_per_unit"):
        AsinhNoise(SOFTENING, "frames")


def test_infinite_gain_is_exactly_the_sky_bound_and_a_finite_gain_moves_cores_further():
    frame = _star_frame()
    sky_only = restore_image(frame, _restorer(_net(None), False), tile=48, overlap=8)
    inf_gain = restore_image(frame, _restorer(_net("frame"), True), 48, 8, gain=math.inf)
    np.testing.assert_allclose(inf_gain, sky_only, rtol=1e-6, atol=1e-4)
    shot = restore_image(frame, _restorer(_net("frame"), True), 48, 8, gain=1.0)
    core = (slice(22, 27), slice(22, 27))
    # Below the sky there is no shot noise to add: the same bound as the sky alone.
    below = frame < np.median(frame)
    np.testing.assert_allclose(shot[below], sky_only[below], rtol=1e-5, atol=1e-3)
    # On the core the shot noise lets it move far more.
    assert np.abs(shot - frame)[core].max() > 5 * np.abs(sky_only - frame)[core].max()


def test_gain_from_the_frame_itself_when_none_is_given():
    # A sky rising across the frame gives the mean-variance fit levels to fit.
    rng = np.random.default_rng(1)
    truth = np.linspace(20.0, 3000.0, 160)[None, :] * np.ones((160, 1))
    truth[60:68, 60:68] += 2e4
    frame = (rng.poisson(truth) + rng.normal(0, 3.0, truth.shape)).astype(np.float32)
    restorer = _restorer(_net("frame"), True)
    fitted = restore_image(frame, restorer, 160, 8)
    given = restore_image(frame, restorer, 160, 8, gain=1.0)
    sky_only = restore_image(frame, restorer, 160, 8, gain=math.inf)
    # The mean-variance fit of this frame finds a gain near 1, so nearly the same bound, and
    # not the sky noise alone.
    assert np.abs(fitted - given).max() < 0.1 * np.abs(given - sky_only).max()


def test_batched_frames_each_get_their_own_gain():
    frames = [_star_frame(32, seed) for seed in range(3)]
    restorer = _restorer(_net("frame"), True)
    gains = [1.0, 4.0, math.inf]
    together = restore_image(frames, restorer, 32, 8, batch_size=2, gain=gains)
    for frame, gain, out in zip(frames, gains, together, strict=True):
        alone = restore_tensor(torch.from_numpy(frame)[None], restorer, 32, 8, gain=[gain])[0]
        np.testing.assert_allclose(out, alone.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("noise", "gain"),
    [(PoissonGaussianNoise(gain=2.0, read_noise=3.0), 2.0), (GaussianNoise(), math.inf)],
)
def test_training_batches_carry_photons_per_unit(noise, gain):
    dm = SimulatedFieldDataModule(
        SupervisedPairing(noise), AsinhNormalizer(SOFTENING), field_size=64, patch_size=32
    )
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(raw, 0)
    expected = gain * batch["scale"]
    torch.testing.assert_close(batch["photons_per_unit"], expected)
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    torch.testing.assert_close(val["photons_per_unit"], gain * val["scale"])


def test_frames_as_they_are_give_their_noise_models_gain_to_a_frame_bound_network(
    fits_folder,  # noqa: F811 (the imported fixture)
    tmp_path,
):
    # Noise2Void's clamped network bounded by each frame's noise: the FITS frames' noise models
    # are found at set-up although the blind-spot pairing does not ask for them.
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.unit.test_r2r_training import CONFIGS, _fit

    folder = fits_folder
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "model=n2v",
                "model.net.base_channels=4",
                "model.compute_lpips=false",
                "model.net.noise.photons_per_unit=frame",
                "data=fits",
                f"data.root={folder}",
                "data.patch_size=32",
                "data.batch_size=2",
                "data.tile_size=128",
                "data.stride=64",
                "data.val_patches=2",
                "data.progress=false",
            ],
        )
    datamodule, _ = _fit(cfg, tmp_path)
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
    torch.testing.assert_close(batch["photons_per_unit"], 1.0 * batch["scale"])


class _NoisyIdentity(torch.nn.Module):
    def __init__(self, noise):
        super().__init__()
        self.noise = noise

    def forward(self, x):
        return x


def test_recorrupted_mean_recorrupts_with_the_frames_noise_for_a_frame_bound_network():
    from astrorestore.nets.recorrupted_mean import RecorruptedMean

    z = torch.asinh(torch.tensor([0.0, 1.0, 100.0, 1e4]).view(1, 1, 2, 2))
    u = torch.sinh(z)
    photons = torch.full((1, 1, 1, 1), 10.0)
    draws = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    for noise, variance in (
        (AsinhNoise(SOFTENING, None), torch.full_like(u, 1 / SOFTENING**2)),
        (AsinhNoise(SOFTENING, "frame"), 1 / SOFTENING**2 + u.clamp_min(0) / 10.0),
    ):
        mean = RecorruptedMean(_NoisyIdentity(noise), alpha=0.5, passes=1, softening=SOFTENING)
        with frame_noise(photons):
            out = mean(z, torch.Generator().manual_seed(3))
        # alpha 0.5: the recorruption's sigma is the pixel's own noise sigma.
        torch.testing.assert_close(
            torch.sinh(out), u + variance.sqrt() * draws, rtol=1e-4, atol=1e-4
        )


def test_the_noise_weighted_loss_uses_each_images_own_noise_too():
    from astrorestore.losses.pixel import RestorationLoss

    def loss(photons_per_unit):
        return RestorationLoss(
            l1_weight=0.0, ssim_weight=0.0, gradient_weight=0.0, l2_weight=1.0,
            noise_weighting=True, softening=SOFTENING, photons_per_unit=photons_per_unit,
        )  # fmt: skip

    target = torch.asinh(torch.tensor([0.0, 10.0, 1e3, 1e4]).repeat(2, 1).view(2, 1, 2, 2))
    pred = target + 0.05
    with pytest.raises(UserError, match="model.loss.photons_per_unit=frame"):
        loss("frame")(pred, target)
    with frame_noise(torch.tensor([4.0, 400.0]).view(2, 1, 1, 1)):
        both, _ = loss("frame")(pred, target)
    first, _ = loss(4.0)(pred[:1], target[:1])
    second, _ = loss(400.0)(pred[1:], target[1:])
    torch.testing.assert_close(both, (first + second) / 2)


class _SpyNet(torch.nn.Module):
    """Records the shot noise each pass is given (the identity otherwise)."""

    def __init__(self):
        super().__init__()
        self.noise = AsinhNoise(SOFTENING, "frame")
        self.given = []

    def forward(self, x):
        from astrorestore.data.normalization.asinh import given_photons

        self.given.append(given_photons("frame"))
        return x


@pytest.mark.parametrize(
    ("header", "override", "gain"),
    [
        ({"GAIN": 2.5}, {}, 2.5),
        ({"BUNIT": "ELECTRONS"}, {}, 1.0),
        ({}, {"gain": 4.0}, 4.0),
        ({}, {}, math.inf),
    ],
)
def test_infer_gives_each_frame_its_headers_gain(tmp_path, capsys, header, override, gain):
    from astropy.io import fits
    from omegaconf import OmegaConf

    from astrorestore.inference.runner import run_inference

    src = tmp_path / "flat.fits"
    data = np.random.default_rng(0).normal(50.0, 5.0, (64, 64)).astype(np.float32)
    fits.PrimaryHDU(data, header=fits.Header(header)).writeto(src)
    net = _SpyNet()

    def loader(ckpt_path, device, **postprocess):
        return _restorer(net, True)

    cfg = {"ckpt_path": "/m.ckpt", "input": str(src), "output": str(tmp_path / "o.fits"),
           "tile_size": 64, "overlap": 8, "batch_size": 4, "device": "cpu", "hdu": None,
           "progress": False}  # fmt: skip
    if override:
        cfg["eval"] = override
    run_inference(OmegaConf.create(cfg), loader)
    scale = AsinhNormalizer(SOFTENING).stats(torch.from_numpy(data)[None, None])[1]
    torch.testing.assert_close(net.given[0], gain * scale)
    assert "noise bound" in capsys.readouterr().out


def test_a_crowded_frame_refused_for_its_sky_map_is_restored_with_smaller_boxes(tmp_path):
    # The shipped denoiser normalises around a sky map: a frame crowded with stars is one line
    # naming sky_box_size, nothing written; sky_box_size=8 restores it.
    from astropy.io import fits
    from omegaconf import OmegaConf

    from astrorestore.inference.restorer import load_restorer
    from astrorestore.inference.runner import run_inference
    from astrorestore.inference.settings import InferSettings

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:192, :192]
    truth = np.full((192, 192), 20.0)
    for y, x in rng.uniform(0, 192, (300, 2)):
        truth += 400.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 8.0)
    src, out = tmp_path / "crowded.fits", tmp_path / "out.fits"
    noisy = (rng.poisson(truth) + rng.normal(0, 3.0, truth.shape)).astype(np.float32)
    fits.PrimaryHDU(noisy, header=fits.Header({"GAIN": 1.0})).writeto(src)
    cfg = {"input": str(src), "output": str(out), "progress": False, "device": "cpu"}
    with pytest.raises(UserError, match="sky_box_size=8"):
        run_inference(OmegaConf.create(cfg), load_restorer)
    assert not out.exists()
    run_inference(OmegaConf.create(cfg | {"sky_box_size": 8}), load_restorer)
    assert fits.getdata(out).shape == (192, 192)
    # The box size changes the pixels: resumed surveys redo outputs made with another one.
    digest = InferSettings.from_config(OmegaConf.create(cfg)).restoration_digest()
    assert (
        digest
        != InferSettings.from_config(
            OmegaConf.create(cfg | {"sky_box_size": 8})
        ).restoration_digest()
    )
