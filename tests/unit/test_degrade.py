"""Pairings of the generative methods and the photograph data modules' checks."""

import pytest
import torch

from astrorestore.colour import chroma, compose_rgb, luminance
from astrorestore.data.corruption.noise import GaussianNoise
from astrorestore.data.datamodules.photos import Galaxy10DataModule, HubbleDataModule
from astrorestore.data.normalization.photo import PhotoNormalizer
from astrorestore.data.pairings.base import SupervisedPairing
from astrorestore.data.pairings.colorization import ColorizationPairing
from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
from astrorestore.errors import UserError
from astrorestore.filters import gaussian_blur


def rgb_batch(b=2, size=16, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("space", ["rgb", "ycbcr", "lab"])
def test_colorization_pairing_gives_luminance_in_and_colour_out(space):
    rgb = rgb_batch()
    out = ColorizationPairing(space)({"clean": rgb})
    assert out["input"].shape == (2, 1, 16, 16)
    assert torch.equal(out["target"], rgb) and torch.equal(out["truth"], rgb)
    torch.testing.assert_close(out["input"], luminance(rgb, space))
    if space != "lab":
        expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
        torch.testing.assert_close(out["input"][:, 0], expected)


@pytest.mark.parametrize("space,tol", [("ycbcr", 1e-6), ("lab", 2e-3)])
def test_luminance_chroma_round_trip(space, tol):
    rgb = rgb_batch()
    back = compose_rgb(luminance(rgb, space), chroma(rgb, space), space)
    assert (back - rgb).abs().max().item() < tol


def test_colorization_refuses_grey_data_and_bad_spaces():
    with pytest.raises(UserError) as info:
        ColorizationPairing().check_data(1, frozenset({"clean"}), "simulated")
    assert "data=simulated" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="color_space"):
        ColorizationPairing("hsv")
    assert (
        ColorizationPairing().input_channels(3) == 1
        and ColorizationPairing().output_channels(1) == 3
    )


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_super_resolution_shapes_grey_and_colour(scale, channels):
    clean = torch.rand(2, channels, 32, 32)
    pairing = SuperResolutionPairing(scale, psf_sigma=1.0)
    out = pairing({"clean": clean})
    assert pairing.upscale_factor == scale
    assert out["input"].shape == (2, channels, 32 // scale, 32 // scale)
    assert torch.equal(out["target"], clean)


def test_area_downsampling_conserves_flux_and_blur_keeps_the_total():
    clean = torch.rand(1, 1, 32, 32) * 100
    low = SuperResolutionPairing(4, psf_sigma=0.0).degrade(clean)
    # each low-resolution pixel is the mean of its 4x4 footprint
    torch.testing.assert_close(low * 16, clean.view(1, 1, 8, 4, 8, 4).sum((3, 5)))
    point = torch.zeros(1, 1, 33, 33)
    point[..., 16, 16] = 1.0
    blurred = gaussian_blur(point, 1.5)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[..., 16, 16] < 0.2


def test_super_resolution_noise_is_drawn_on_the_low_resolution_frame():
    clean = torch.full((4, 3, 64, 64), 0.5)
    pairing = SuperResolutionPairing(2, psf_sigma=1.0, noise=GaussianNoise(sigma=0.05))
    out = pairing({"clean": clean}, torch.Generator().manual_seed(0))
    residual = out["input"] - pairing.degrade(clean)
    assert residual.std().item() == pytest.approx(0.05, rel=0.05)


def test_super_resolution_refuses_bad_values():
    with pytest.raises(UserError, match="scale=3"):
        SuperResolutionPairing(3)
    with pytest.raises(UserError, match="model.net.channels=1"):
        SuperResolutionPairing(2, channels=3).check_data(1, frozenset({"clean"}), "simulated")
    with pytest.raises(UserError, match="multiple of the scale"):
        SuperResolutionPairing(4).degrade(torch.zeros(1, 1, 30, 30))


def test_photo_normalizer_round_trip_maps_unit_range_to_pm1():
    x = torch.rand(2, 3, 8, 8) * 1.2 - 0.1  # beyond [0, 1]: nothing is clipped
    norm = PhotoNormalizer()
    offset, scale = norm.stats(x)
    z = norm.forward(x, offset, scale)
    assert offset.shape == (2, 1, 1, 1)
    torch.testing.assert_close(
        norm.forward(torch.tensor([0.0, 1.0]).view(1, 2, 1, 1), offset[:1], scale[:1]).flatten(),
        torch.tensor([-1.0, 1.0]),
    )
    torch.testing.assert_close(norm.inverse(z, offset, scale), x)


def test_photo_normalizer_takes_8_bit_images_to_the_same_range():
    norm = PhotoNormalizer()
    x = torch.rand(1, 3, 8, 8)
    x[..., 0, 0] = 1.0
    z_unit = norm.forward(x, *norm.stats(x))
    z_byte = norm.forward(255 * x, *norm.stats(255 * x))
    torch.testing.assert_close(z_unit, z_byte)


def test_photo_data_modules_refuse_denoising_pairings_and_bad_sizes(tmp_path):
    with pytest.raises(UserError) as info:
        HubbleDataModule(SupervisedPairing(GaussianNoise(1.0)), PhotoNormalizer())
    assert "data=hubble" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="patch_size=30"):
        HubbleDataModule(SuperResolutionPairing(4), PhotoNormalizer(), patch_size=30)
    with pytest.raises(UserError, match="data.path is not set"):
        Galaxy10DataModule(ColorizationPairing(), PhotoNormalizer())
    with pytest.raises(UserError, match="does not exist"):
        Galaxy10DataModule(ColorizationPairing(), PhotoNormalizer(), path=str(tmp_path / "x.h5"))


def test_hubble_module_pairs_fixed_held_out_examples():
    dm = HubbleDataModule(
        SuperResolutionPairing(2),
        PhotoNormalizer(),
        patch_size=32,
        patches_per_epoch=4,
        n_val=2,
        n_test=2,
    )
    dm.setup("fit")
    val = dm.val_set[0]
    assert val["input"].shape == (3, 16, 16) and val["truth"].shape == (3, 32, 32)
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["input"].shape[1:] == (3, 16, 16)
    assert batch["target"].min() >= -1.0 and batch["target"].max() <= 1.0  # [0, 1] -> [-1, 1]
