"""Colorization GAN: generator/discriminator shapes, receptive field, one adversarial step."""

import lightning as L
import pytest
import torch

from astrorestore.colour import from_unit, luminance, to_unit
from astrorestore.data.datamodules.photos import HubbleDataModule
from astrorestore.data.normalization.photo import PhotoNormalizer
from astrorestore.data.pairings.colorization import ColorizationPairing
from astrorestore.errors import UserError
from astrorestore.losses.pixel import RestorationLoss
from astrorestore.metrics.colour import colour_measures, colourfulness, delta_e76
from astrorestore.modules.adversarial import AdversarialModule, discriminator_loss
from astrorestore.nets.patch_discriminator import PatchDiscriminator
from astrorestore.nets.unet_generator import ColorizationGenerator, UNetGenerator, fitted_depth


def test_generator_depth_fits_the_image_size():
    assert fitted_depth(64) == 4 and fitted_depth(128) == 5 and fitted_depth(16) == 2
    net = UNetGenerator(1, 3, base_channels=8, image_size=64)
    assert net.size_multiple == 16
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("space", ["rgb", "ycbcr", "lab"])
def test_colorization_generator_shapes(space):
    net = ColorizationGenerator(space, base_channels=8, image_size=32).eval()
    grey = from_unit(torch.rand(2, 1, 32, 32))
    assert net(grey).shape == (2, 3, 32, 32)


def test_chroma_only_generator_keeps_the_luminance_exactly():
    net = ColorizationGenerator("ycbcr", base_channels=8, image_size=32).eval()
    grey = from_unit(torch.rand(2, 1, 32, 32))
    with torch.no_grad():
        # Untrained, the chroma head is zero: the output is the grey copy, the baseline.
        torch.testing.assert_close(net(grey), grey.expand(-1, 3, -1, -1), atol=1e-6, rtol=0)
        torch.nn.init.normal_(net.unet.head[-1].weight, std=0.1)  # now it colours
        rgb = to_unit(net(grey))
    assert rgb.std(1).mean() > 1e-3
    torch.testing.assert_close(luminance(rgb, "ycbcr"), to_unit(grey), atol=1e-5, rtol=0)


def test_discriminator_patch_logits_and_receptive_field_smaller_than_input():
    disc = PatchDiscriminator(4, base_channels=8, n_layers=2)
    logits = disc(torch.randn(1, 1, 64, 64), torch.randn(1, 3, 64, 64))
    assert logits.shape[:2] == (1, 1) and logits.shape[-1] > 1  # one logit per patch
    assert disc.receptive_field == 34 < 64
    assert PatchDiscriminator(4, 8, n_layers=3).receptive_field == 70  # the pix2pix design
    # Measured: the input pixels that move one central logit span at most the field (without
    # normalisation, whose image-wide statistics would reach every pixel).
    image = torch.randn(1, 3, 64, 64, requires_grad=True)
    out = PatchDiscriminator(4, base_channels=8, n_layers=2, norm="none")(
        torch.zeros(1, 1, 64, 64), image
    )
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = (image.grad.abs().sum((0, 1, 3)) > 0).nonzero()
    assert 0 < rows.max() - rows.min() + 1 <= disc.receptive_field


def test_discriminator_losses_prefer_separated_logits():
    for kind in ("vanilla", "lsgan", "hinge"):
        good = discriminator_loss(torch.full((4,), 3.0), torch.full((4,), -3.0), kind)
        bad = discriminator_loss(torch.full((4,), -3.0), torch.full((4,), 3.0), kind)
        assert good < bad


def test_colour_metrics():
    rgb = torch.rand(2, 3, 16, 16)
    grey = rgb.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert delta_e76(rgb, rgb).max() < 1e-3 and delta_e76(grey, rgb).min() > 1.0
    assert colourfulness(grey).max() < 1e-3 < colourfulness(rgb).min()
    measures = colour_measures(grey, rgb)  # what the module logs: batch means by name
    assert measures["delta_e"] == delta_e76(grey, rgb).mean()
    assert measures["colourfulness"] < 1e-3


def _module(adversarial_weight=1.0, discriminator=None, **extra):
    adam = lambda params: torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))  # noqa: E731
    return AdversarialModule(
        net=ColorizationGenerator("rgb", base_channels=8, image_size=32),
        discriminator=discriminator or PatchDiscriminator(4, 8, n_layers=1),
        loss=RestorationLoss(1.0, 0.0, 0.0),
        optimizer=adam,
        discriminator_optimizer=adam,
        scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5),
        discriminator_scheduler=lambda optimizer: torch.optim.lr_scheduler.StepLR(
            optimizer, 1, 0.5
        ),
        adversarial_weight=adversarial_weight,
        compute_lpips=False,
        n_panel_images=2,  # base arguments are saved only when passed
        **extra,
    )


def _fit(module, steps=1):
    data = HubbleDataModule(
        ColorizationPairing("rgb"),
        PhotoNormalizer(),
        patch_size=32,
        batch_size=2,
        patches_per_epoch=2 * steps,
        n_val=2,
        n_test=1,
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def test_one_gan_step_updates_both_networks_with_finite_losses():
    module = _module()
    g0 = [p.detach().clone() for p in module.net.parameters()]
    d0 = [p.detach().clone() for p in module.discriminator.parameters()]
    trainer = _fit(module)
    assert any(not torch.equal(a, b) for a, b in zip(g0, module.net.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters(), strict=True)
    )
    metrics = trainer.callback_metrics
    for key in ("train/d_loss", "train/g_loss", "train/g_adversarial", "val/delta_e", "val/psnr"):
        assert torch.isfinite(metrics[key]), key
    # requires_grad is restored after the toggled half-steps
    assert all(p.requires_grad for p in module.parameters() if p.dtype.is_floating_point)
    # both schedulers stepped once (epoch end)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [5e-4, 5e-4]


def test_l1_only_generator_leaves_the_discriminator_alone():
    module = _module(adversarial_weight=0.0)
    d0 = [p.detach().clone() for p in module.discriminator.parameters()]
    trainer = _fit(module)
    assert all(
        torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters(), strict=True)
    )
    assert "train/d_loss" not in trainer.callback_metrics


def test_adversarial_weight_warms_up_then_ramps():
    module = _module(0.4, adversarial_warmup_steps=3, adversarial_ramp_steps=4)
    weights = [module.adversarial_weight_at(b) for b in range(9)]
    assert weights == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert _module(0.4, adversarial_warmup_steps=3).adversarial_weight_at(3) == 0.4
    with pytest.raises(UserError, match="adversarial_ramp_steps=-1"):
        _module(adversarial_ramp_steps=-1)
    # During the warm-up the generator learns from L1 alone while the discriminator trains.
    warm = _module(adversarial_warmup_steps=2)
    d0 = [p.detach().clone() for p in warm.discriminator.parameters()]
    trainer = _fit(warm, steps=2)
    assert trainer.global_step == 4  # two optimiser steps per batch
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, warm.discriminator.parameters(), strict=True)
    )
    assert "train/g_adversarial" not in trainer.callback_metrics
    assert trainer.callback_metrics["train/adversarial_weight"] == 0


def test_feature_matching_compares_hidden_features_and_is_zero_for_the_true_image():
    module = _module(feature_matching_weight=10.0)
    disc = module.discriminator
    condition, real = torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32)
    features = disc.features(condition, real)
    assert torch.equal(features[-1], disc(condition, real))  # the logits come last
    assert len(features) == 3  # one per hidden layer (n_layers=1: two) + logits
    assert float(module.feature_matching(features, condition, real)) == 0.0
    other = disc.features(condition, torch.rand_like(real))
    assert float(module.feature_matching(other, condition, real)) > 0.0
    trainer = _fit(module)
    assert torch.isfinite(trainer.callback_metrics["train/g_feature_matching"])
    with pytest.raises(UserError, match="feature_matching_weight=-1"):
        _module(feature_matching_weight=-1.0)


def test_chroma_discriminator_sees_scaled_chroma_only():
    module = _module(
        discriminator=PatchDiscriminator(3, 8, n_layers=1),
        discriminator_input="chroma",
        chroma_gain=10.0,
    )
    # A grey image has zero chroma. Known answer for a bluish grey, RGB (0.5, 0.5, 0.6):
    # Y = 0.5 + 0.114 * 0.1 (BT.601), Cb = (B - Y) / 1.772, Cr = (R - Y) / 1.402, times the gain.
    grey = from_unit(torch.full((1, 3, 4, 4), 0.5))
    assert module.judged(grey).shape == (1, 2, 4, 4)
    assert module.judged(grey).abs().max() < 1e-6
    blue = from_unit(torch.tensor([0.5, 0.5, 0.6]).view(1, 3, 1, 1).expand(1, 3, 4, 4))
    y = 0.5 + 0.114 * 0.1
    expected = torch.tensor([(0.6 - y) / 1.772, (0.5 - y) / 1.402]) * 10.0
    torch.testing.assert_close(module.judged(blue)[0, :, 0, 0], expected, atol=1e-5, rtol=0)
    trainer = _fit(module)
    assert torch.isfinite(trainer.callback_metrics["train/d_loss"])
    # The RGB view passes the image through; a discriminator of the wrong width is refused.
    assert torch.equal(_module().judged(blue), blue)
    with pytest.raises(UserError, match="in_channels=4 does not fit.*use 3"):
        _module(discriminator_input="chroma")
    with pytest.raises(UserError, match="discriminator_input='lab'"):
        _module(discriminator_input="lab")
