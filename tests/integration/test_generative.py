"""Generative methods through the real entry points: train.py (cGAN, SR3, SR regression) and
infer.py on tiny checkpoints (a colour output from grey, a x2 output)."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import run_script

TINY_PHOTOS = ["debug=tiny_photos", "logger=csv", "test=false", "data.patches_per_epoch=8"]
TINY_NETS = {
    "cgan_colorize": ["model.net.base_channels=8", "model.discriminator.base_channels=8"],
    "sr3": [
        "model.net.base_channels=8",
        "model.net.depth=2",
        "model.sample_steps=2",
        "model.n_sample_images=2",
        "data.n_val=2",
    ],
    "sr_regression": ["model.net.base_channels=8", "model.net.depth=2", "data.n_val=2"],
}


@pytest.mark.parametrize("model", sorted(TINY_NETS))
def test_fast_dev_run(run, model):
    result = run(
        "train.py", f"model={model}", "debug=fast_dev_run", "logger=csv", *TINY_NETS[model]
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _train(tmp_path_factory, model, *extra):
    root = tmp_path_factory.mktemp(model)
    result = run_script(
        "train.py",
        f"model={model}",
        *TINY_PHOTOS,
        "trainer.max_epochs=1",
        *TINY_NETS[model],
        *extra,
        root=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((root / "logs" / "train" / "runs").iterdir())
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def sr3_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "sr3")


@pytest.fixture(scope="module")
def cgan_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "cgan_colorize", "data.pairing.color_space=ycbcr")


def test_sr3_checkpoint_exports_ema_sampler(sr3_ckpt):
    record = torch.load(sr3_ckpt, map_location="cpu", weights_only=True)["astrorestore"]
    assert record["weights"] == "ema" and record["restorer"]["steps"] == 2
    assert record["restorer"]["target"] == "residual" and record["restorer"]["residual_scale"] > 0
    assert record["restorer"]["_target_"].endswith("SuperResolutionSampler")
    assert record["io"]["scale"] == 2 and record["io"]["in_channels"] == 3


def test_infer_super_resolves_x2_reproducibly(run, sr3_ckpt, tmp_path):
    rgb = (np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    outs = []
    for name, seed in (("a.png", 1), ("b.png", 1), ("c.png", 2)):
        result = run(
            "infer.py",
            f"ckpt_path={sr3_ckpt}",
            f"input={tmp_path / 'in.png'}",
            f"output={tmp_path / name}",
            "tile_size=24",
            "overlap=0",
            "device=cpu",
            f"seed={seed}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outs.append(np.asarray(Image.open(tmp_path / name)))
    assert outs[0].shape == (48, 48, 3) and outs[0].dtype == np.uint8
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    # The sampler and step count chosen at inference replace the exported ones (ddim, 2).
    result = run(
        "infer.py",
        f"ckpt_path={sr3_ckpt}",
        f"input={tmp_path / 'in.png'}",
        f"output={tmp_path / 'd.png'}",
        "tile_size=24",
        "overlap=0",
        "device=cpu",
        "seed=1",
        "sample_steps=3",
        "sampler=ancestral",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "d.png")), outs[0])


def test_infer_colorizes_grey_keeping_its_luminance(run, cgan_ckpt, tmp_path):
    grey = (np.random.default_rng(1).random((32, 32)) * 200 + 20).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    result = run(
        "infer.py",
        f"ckpt_path={cgan_ckpt}",
        f"input={tmp_path / 'grey.png'}",
        f"output={tmp_path / 'colour.png'}",
        "tile_size=32",
        "overlap=0",
        "device=cpu",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.asarray(Image.open(tmp_path / "colour.png")).astype(np.float64)
    assert out.shape == (32, 32, 3)
    luma = 0.299 * out[..., 0] + 0.587 * out[..., 1] + 0.114 * out[..., 2]
    # chroma-only (ycbcr) keeps the grey input's luminance, up to 8-bit rounding, where no
    # channel was clipped to [0, 255] when the PNG was written
    inside = ((out > 0) & (out < 255)).all(-1)
    assert inside.mean() > 0.3
    assert np.abs(luma - grey)[inside].max() <= 2.0


@pytest.mark.slow  # trains a tiny checkpoint (shared per module)
def test_pipeline_colorizes_then_super_resolves_and_reports(run, cgan_ckpt, sr3_ckpt, tmp_path):
    import json

    grey_dir, ref_dir = tmp_path / "grey", tmp_path / "refs"
    grey_dir.mkdir()
    ref_dir.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(grey_dir / name)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(ref_dir / name)
    result = run(
        "pipeline.py",
        f"ckpt_paths=[{cgan_ckpt},{sr3_ckpt}]",
        f"input={grey_dir}",
        f"output={tmp_path / 'out'}",
        f"references={ref_dir}",
        "tile_size=32",
        "overlap=0",
        "device=cpu",
        "bilateral={kernel_size: 5, sigma_color: 0.1, sigma_space: 1.5}",
        "sample_steps=3",
        "sampler=ancestral",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (64, 64, 3)  # grey -> colour -> x2
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # The override reaches SR3 (exported: ddim, 2 steps); the colorizer has nothing to sample.
    assert report["sampling"] == [None, {"steps": 3, "sampler": "ancestral"}]
    assert [row["image"] for row in report["images"]] == ["a.png", "b.png"]
    ssims = [row["ssim"] for row in report["images"]]
    assert report["summary"]["mean_ssim"] == pytest.approx(np.mean(ssims))
    assert report["summary"]["best_ssim"] == pytest.approx(max(ssims))
    assert "MEAN" in (tmp_path / "out" / "report.csv").read_text()
    # A chain without a stochastic stage refuses sampling settings, as infer.py does.
    result = run(
        "pipeline.py",
        f"ckpt_paths=[{cgan_ckpt}]",
        f"input={grey_dir}",
        f"output={tmp_path / 'out2'}",
        "tile_size=32",
        "device=cpu",
        "sampler=ddim",
    )
    assert result.returncode != 0
    assert "no checkpoint of this chain samples" in result.stdout + result.stderr
