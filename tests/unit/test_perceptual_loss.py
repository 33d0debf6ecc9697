"""Perceptual loss term: real weights only, skipped otherwise, never in the state dict."""

import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.losses import perceptual
from astrorestore.losses.perceptual import PerceptualRestorationLoss
from astrorestore.metrics.lpips_metric import build_lpips

PIXEL = {"l1_weight": 1.0, "ssim_weight": 0.0, "gradient_weight": 0.0}


def test_without_weights_the_term_is_skipped_and_the_pixel_loss_remains(monkeypatch):
    monkeypatch.setattr(perceptual, "build_lpips", lambda path: None)
    loss = PerceptualRestorationLoss(perceptual_weight=0.5, **PIXEL)
    assert loss.perceptual_weight == 0.0
    pred, target = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    total, terms = loss(pred, target)
    assert set(terms) == {"l1"} and total.item() == pytest.approx(1.0)


def test_with_a_backbone_the_term_is_added_differentiable_and_kept_out_of_state(monkeypatch):
    # A random backbone stands in for the real weights here: this checks plumbing only.
    monkeypatch.setattr(perceptual, "build_lpips", lambda path: build_lpips(random_backbone=True))
    loss = PerceptualRestorationLoss(perceptual_weight=0.5, **PIXEL)
    torch.manual_seed(0)
    target = torch.rand(2, 1, 32, 32)
    pred = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    total, terms = loss(pred, target)
    assert "perceptual" in terms and terms["perceptual"] > 0
    assert total.item() == pytest.approx((terms["l1"] + 0.5 * terms["perceptual"]).item())
    total.backward()
    assert pred.grad.abs().sum() > 0
    assert len(loss.state_dict()) == 0


def test_a_mask_is_refused_while_the_term_is_active(monkeypatch):
    monkeypatch.setattr(perceptual, "build_lpips", lambda path: build_lpips(random_backbone=True))
    loss = PerceptualRestorationLoss(perceptual_weight=0.5, **PIXEL)
    with pytest.raises(UserError, match="perceptual_weight=0"):
        loss.check_mask_support()
    with pytest.raises(UserError, match="perceptual_weight"):
        PerceptualRestorationLoss(perceptual_weight=-1.0)
