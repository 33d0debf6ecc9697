"""On a CUDA device (skipped elsewhere): every kind of training step under ``trainer=gpu``
(bf16-mixed), DDP through NCCL on the GPUs present, and inference on the GPU against the CPU.

Run them with ``python -m pytest -m gpu`` on a machine with a GPU; CI has none."""

import json
import math

import numpy as np
import pytest
import torch

from astrorestore.diffusion.sampler import sample
from astrorestore.diffusion.schedule import NoiseSchedule
from astrorestore.nets.sr3_unet import SR3UNet
from tests.integration.conftest import restore_sci

pytestmark = pytest.mark.gpu

SHORT = ["logger=csv", "test=false", "trainer.max_epochs=1", "callbacks.progress_bar=null"]
# One model per kind of training step (the supervised family shares one module, so do the
# three blind-spot variants); photographs have their own tiny preset.
MODELS = {
    "bounded": "debug=tiny",
    "n2v2": "debug=tiny",
    "structn2v": "debug=tiny",
    "n2n": "debug=tiny",
    "cgan_colorize": "debug=tiny_photos",
    "sr3": "debug=tiny_photos",
    "sr_regression": "debug=tiny_photos",
}


def _run_dir(root):
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    return run_dir


def _finite_weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    floats = [v for v in state.values() if v.is_floating_point()]
    return bool(floats) and all(torch.isfinite(v).all() for v in floats)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_each_kind_of_training_step_runs_on_one_gpu_in_bf16(run, tmp_path, model):
    result = run("train.py", f"model={model}", "trainer=gpu", MODELS[model], *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 1
    assert all(math.isfinite(v) for v in summary["best"].values() if isinstance(v, float))
    assert _finite_weights(run_dir / "checkpoints" / "last.ckpt")
    hparams = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "accelerator: gpu" in hparams and "precision: bf16-mixed" in hparams


def test_ddp_over_the_gpus_present_trains_and_checkpoints(run, tmp_path):
    result = run("train.py", "trainer=ddp", "debug=tiny", *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _finite_weights(_run_dir(tmp_path) / "checkpoints" / "last.ckpt")


def test_infer_on_the_gpu_matches_the_cpu_within_the_noise(run, trained_run, noisy_fits, tmp_path):
    _, run_dir, _ = trained_run
    ckpt = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    path, noisy, truth, _ = noisy_fits
    outputs = {}
    for name, switches in (
        ("cpu", ["device=cpu"]),
        ("cuda", ["device=cuda"]),
        ("cuda_bf16", ["device=cuda", "precision=bf16"]),
    ):
        outputs[name], header = restore_sci(run, ckpt, path, tmp_path / f"{name}.fits", *switches)
        assert header["CTYPE1"] == "RA---TAN" and header["CRVAL1"] == pytest.approx(150.1)
    sigma = np.sqrt(np.clip(truth, 0, None) + 25.0)
    removed = np.std((noisy - outputs["cpu"]) / sigma)
    assert removed > 0.5  # the network did restore something
    # TF32/cuDNN against the CPU: tiny against the local noise; bf16 stays small too.
    fp32 = np.abs(outputs["cuda"] - outputs["cpu"]) / sigma
    bf16 = np.abs(outputs["cuda_bf16"] - outputs["cpu"]) / sigma
    assert np.percentile(fp32, 99) < 0.01 and fp32.max() < 0.1
    assert np.percentile(bf16, 99) < 0.1


def test_sr3_sampling_on_the_gpu_stays_float32_and_repeats_with_a_seed():
    device = torch.device("cuda")
    net = SR3UNet(channels=3, scale=2, base_channels=8, depth=2, dropout=0.0).to(device).eval()
    cond = torch.randn(2, 3, 16, 16, device=device)
    schedule = NoiseSchedule(100)
    draws = []
    for _ in range(2):
        generator = torch.Generator(device=device).manual_seed(0)
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            draws.append(sample(net, cond, schedule, 5, "ancestral", "v", generator))
    assert draws[0].dtype == torch.float32 and schedule.sampling_gammas.dtype == torch.float32
    assert draws[0].device.type == "cuda" and torch.isfinite(draws[0]).all()
    torch.testing.assert_close(draws[0], draws[1], atol=1e-3, rtol=0)
