"""``infer.py num_samples=N`` and ``truth= report=`` for generative checkpoints, in process on
a tiny hand-made SR3 checkpoint (random weights, 2 DDIM steps): the mean of N samples is the
output, SR_STD carries their spread, and the report holds both axes."""

import json

import numpy as np
import pytest
import torch
from astropy.io import fits
from PIL import Image

from astrorestore.checkpoint import CHECKPOINT_FORMAT
from astrorestore.errors import UserError
from astrorestore.inference.restore import restore_image
from astrorestore.inference.restorer import load_restorer
from astrorestore.inference.runner import run_inference
from astrorestore.io.images import std_path
from astrorestore.nets.sr3_unet import SR3UNet
from tests.unit.fits_factory import _wcs_cards

SR3_NET = {
    "_target_": "astrorestore.nets.sr3_unet.SR3UNet",
    "channels": 1,
    "scale": 2,
    "base_channels": 8,
    "depth": 2,
    "dropout": 0.0,
}
PAIRING = {
    "_target_": "astrorestore.data.pairings.super_resolution.SuperResolutionPairing",
    "scale": 2,
    "psf_sigma": 1.0,
    "channels": None,
    "noise": {"_target_": "astrorestore.data.corruption.noise.GaussianNoise", "sigma": 0.01},
}


def _save_checkpoint(path, channels=1, normalizer="asinh"):
    torch.manual_seed(0)
    net = SR3UNet(**{k: v for k, v in SR3_NET.items() if k != "_target_"} | {"channels": channels})
    norm = {
        "asinh": {"_target_": "astrorestore.data.normalization.asinh.AsinhNormalizer"},
        "photo": {"_target_": "astrorestore.data.normalization.photo.PhotoNormalizer"},
    }[normalizer]
    record = {
        "format": CHECKPOINT_FORMAT,
        "version": "x",
        "model": "sr3",
        "restorer": {
            "_target_": "astrorestore.diffusion.sampler.SuperResolutionSampler",
            "scale": 2,
            "steps": 2,
            "sampler": "ddim",
            "prediction": "v",
            "target": "residual",
            "residual_scale": 0.07,
            "schedule": {"num_train_steps": 50},
        },
        "weights": "ema",
        "net": SR3_NET | {"channels": channels},
        "normalizer": norm,
        "io": {"in_channels": channels, "out_channels": channels, "scale": 2, "size_multiple": 4},
        "postprocess": {},
        "config": {"data": {"pairing": PAIRING}},
    }
    state = {f"ema.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "astrorestore": record}, path)
    return path


@pytest.fixture
def sr3_ckpt(tmp_path):
    return _save_checkpoint(tmp_path / "sr3.ckpt")


def _fits_frame(path, data, bunit="MJy/sr"):
    header = fits.Header()
    _wcs_cards(header, data.shape, 0.108)  # 3e-5 deg per pixel
    header["BUNIT"] = bunit
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SIMULATED"
    fits.HDUList([primary, fits.ImageHDU(data, header=header, name="SCI")]).writeto(path)
    return path


def _infer(ckpt, src, dst, **extra):
    cfg = {
        "ckpt_path": str(ckpt),
        "input": str(src),
        "output": str(dst),
        "tile_size": 16,
        "overlap": 4,
        "device": "cpu",
        "progress": False,
        "workers": 0,
    }
    return run_inference(cfg | extra, load_restorer)


def _truth_and_input(size=32, seed=1):
    rng = np.random.default_rng(seed)
    truth = (100.0 + 20.0 * rng.standard_normal((size, size))).astype(np.float32)
    low = truth.reshape(size // 2, 2, size // 2, 2).mean((1, 3))
    return truth, (low + rng.normal(0, 1.0, low.shape)).astype(np.float32)


def test_num_samples_writes_their_mean_and_sr_std_keeping_header_and_wcs(sr3_ckpt, tmp_path):
    _, low = _truth_and_input(32)
    src = _fits_frame(tmp_path / "in.fits", low)
    _infer(sr3_ckpt, src, tmp_path / "mean.fits", num_samples=3, seed=5)
    _infer(sr3_ckpt, src, tmp_path / "one.fits", seed=5)
    with fits.open(tmp_path / "one.fits") as hdul:
        assert "SR_STD" not in hdul  # one sample: no spread to write
        first = hdul["SCI"].data.astype(np.float64)
    # Sample k is drawn with seed 5 + k; sample 0 is the one-sample output.
    restorer = load_restorer(sr3_ckpt)
    samples = [restore_image(low, restorer, 16, 4, seed=5 + k) for k in range(3)]
    np.testing.assert_allclose(samples[0], first, rtol=0, atol=1e-5)
    with fits.open(tmp_path / "mean.fits") as hdul:
        mean, std = hdul["SCI"].data, hdul["SR_STD"].data
        sci, ext = hdul["SCI"].header, hdul["SR_STD"].header
        assert hdul[0].header["TELESCOP"] == "SIMULATED"
    stack = np.stack(samples)
    np.testing.assert_allclose(mean, stack.mean(0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(std, stack.std(0, ddof=1), rtol=0, atol=1e-4)
    assert std.shape == mean.shape == (32, 32) and float(std.mean()) > 0
    assert ext["BUNIT"] == sci["BUNIT"] == "MJy/sr"
    assert "standard deviation of 3 samples" in str(ext["COMMENT"])
    # The science WCS is rescaled for x2 and the extension carries the same.
    assert sci["CDELT2"] == pytest.approx(1.5e-5) and ext["CDELT2"] == pytest.approx(1.5e-5)
    assert ext["CRPIX1"] == sci["CRPIX1"]
    assert any("mean of 3 samples" in str(line) for line in sci["HISTORY"])


def test_report_with_truth_holds_both_axes_and_calibration(sr3_ckpt, tmp_path):
    truth, low = _truth_and_input(32)
    src = _fits_frame(tmp_path / "in.fits", low)
    np.save(tmp_path / "truth.npy", truth)
    _fits_frame(tmp_path / "truth.fits", truth)
    _infer(
        sr3_ckpt,
        src,
        tmp_path / "out.fits",
        num_samples=2,
        truth=str(tmp_path / "truth.fits"),
        report=str(tmp_path / "report"),
    )
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    axes = report["generative"]["images"][0]["axes"]
    assert axes["distortion"]["psnr"] < 60 and 0 < axes["distortion"]["ssim"] < 1
    assert set(axes["realism"]) >= {"power_0.25-0.5", "patch_swd"}
    assert axes["consistency"]["error_sigma"] > 0
    assert axes["consistency"]["sigma_source"].startswith("measured")
    assert axes["calibration"]["n_samples"] == 2
    assert 0 <= axes["calibration"]["coverage_1sigma"] <= axes["calibration"]["coverage_2sigma"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "### distortion" in summary and "### realism" in summary


def test_a_folder_of_photographs_gets_a_std_image_beside_each_output(tmp_path):
    ckpt = _save_checkpoint(tmp_path / "sr3rgb.ckpt", channels=3, normalizer="photo")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in/a.png")
    _infer(ckpt, tmp_path / "in", str(tmp_path / "out") + "/", num_samples=2)
    assert std_path(tmp_path / "out" / "a.png").name == "a_std.png"
    std = np.asarray(Image.open(tmp_path / "out" / "a_std.png"))
    assert std.shape == (32, 32, 3) and std.max() > 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [frame["status"] for frame in manifest["frames"]] == ["done"]
    # An input named like another's std image: refused before anything is written.
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        tmp_path / "in/a_std.png"
    )
    with pytest.raises(UserError, match=r"standard deviation of a.png would be written to"):
        _infer(ckpt, tmp_path / "in", str(tmp_path / "out2") + "/", num_samples=2)
    assert not (tmp_path / "out2").exists()


def test_bad_inputs_fail_in_one_line_before_anything_is_written(sr3_ckpt, tmp_path):
    truth, low = _truth_and_input(32)
    src = _fits_frame(tmp_path / "in.fits", low)
    out = tmp_path / "out" / "o.fits"
    with pytest.raises(UserError, match=r"num_samples=0 must be at least 1"):
        _infer(sr3_ckpt, src, out, num_samples=0)
    with pytest.raises(UserError, match=r"num_samples=4: noisy restores in one deterministic"):
        _infer(None, src, out, num_samples=4, method="noisy", ckpt_path=None)
    _fits_frame(tmp_path / "small_truth.fits", truth[:16, :16])
    with pytest.raises(UserError, match=r"truth small_truth.fits has shape \(16, 16\).*\(32, 32\)"):
        _infer(
            sr3_ckpt, src, out, truth=str(tmp_path / "small_truth.fits"), report=str(tmp_path / "r")
        )
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert not (tmp_path / "r").exists()


def test_a_deterministic_checkpoint_refuses_num_samples(tmp_path):
    from tests.unit.test_restorer_checkpoint import _net, _record, _save

    ckpt = tmp_path / "det.ckpt"
    _save(ckpt, _record(), _net())
    src = _fits_frame(tmp_path / "in.fits", np.ones((16, 16), np.float32))
    with pytest.raises(UserError, match=r"num_samples=2: m restores in one deterministic pass"):
        _infer(ckpt, src, tmp_path / "o.fits", num_samples=2)
    assert not (tmp_path / "o.fits").exists()
