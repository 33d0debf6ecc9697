import math

import pytest
import torch

from astrorestore.metrics.image_quality import RestorationMetrics, psnr_per_image, ssim_per_image
from astrorestore.metrics.lpips_metric import build_lpips, find_backbone_weights, lpips_distance


def test_psnr_uses_truth_range_per_image():
    truth = torch.zeros(2, 1, 8, 8)
    truth[0, 0, 0, 0] = 10.0  # range 10
    truth[1, 0, 0, 0] = 2.0  # range 2
    pred = truth + 0.1  # MSE = 0.01 for both
    psnr = psnr_per_image(pred, truth)
    assert psnr[0].item() == pytest.approx(10 * math.log10(100 / 0.01), rel=1e-4)
    assert psnr[1].item() == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-4)


def test_ssim_is_one_for_identical_images():
    truth = torch.rand(2, 1, 32, 32)
    assert torch.allclose(ssim_per_image(truth, truth), torch.ones(2), atol=1e-4)


def test_metric_accumulates_mean_over_images():
    truth = torch.rand(4, 1, 16, 16)
    pred = truth + 0.05 * torch.randn_like(truth)
    metric = RestorationMetrics()
    metric.update(pred[:1], truth[:1])
    metric.update(pred[1:], truth[1:])
    result = metric.compute()
    assert result["psnr"].item() == pytest.approx(
        psnr_per_image(pred, truth).mean().item(), rel=1e-5
    )


def test_lpips_missing_weights_warns_once_and_returns_none(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import astrorestore.metrics.lpips_metric as module

    monkeypatch.setattr(module, "_warned", False)
    assert find_backbone_weights() is None
    with caplog.at_level("WARNING"):
        assert build_lpips() is None
        assert build_lpips() is None
    assert sum("LPIPS skipped" in r.message for r in caplog.records) == 1


def test_lpips_bad_path_is_user_error():
    from astrorestore.errors import UserError

    with pytest.raises(UserError, match="lpips_weights"):
        find_backbone_weights("/nonexistent/alexnet.pth")


def test_lpips_plumbing_with_random_backbone_and_weight_loading(tmp_path):
    # Random backbone: plumbing only (shapes, zero distance for identical images).
    model = build_lpips(random_backbone=True)
    truth = torch.rand(2, 1, 32, 32)
    distance = lpips_distance(model, truth, truth)
    assert distance.shape == (2,)
    assert torch.allclose(distance, torch.zeros(2), atol=1e-6)
    # A file in torchvision's AlexNet layout is loaded into lpips' slices.
    import torchvision

    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    loaded = build_lpips(str(path))
    torch.testing.assert_close(loaded.net.slice1[0].weight, alexnet.features[0].weight)


def test_psnr_range_comes_from_the_truth_not_the_prediction():
    # pred has another range than the truth: the data range must still be the truth's (4).
    truth = torch.zeros(1, 1, 4, 4)
    truth[0, 0, 0, 0] = 4.0
    pred = truth.clone()
    pred[0, 0, 1, 1] = 8.0  # pred range 8; squared error 64 at one of 16 pixels -> MSE 4
    value = psnr_per_image(pred, truth)[0].item()
    assert value == pytest.approx(10 * math.log10(4.0**2 / 4.0), rel=1e-5)
