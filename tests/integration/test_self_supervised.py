"""Self-supervised models end to end: composed configs, real training steps, inference.

The in-process test trains Noise2Void on noisy frames only (what real data provide) and checks
that the run is judged by what can be known without a truth. The others run train.py and
infer.py as a user would (every model through train.py only with ``--runslow``).
"""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from astropy.io import fits
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch.utils.data import Dataset

from astrorestore.data.datamodules.base import PairedDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.simulation.scene import render_field
from astrorestore.train import check_parts, resolve_monitor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = ("n2v", "n2v2", "structn2v", "n2n", "r2r", "sure")


class NoisyCrops(Dataset):
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = torch.from_numpy(frames)[:, None]

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"noisy": self.frames[index]}


class NoisyFramesDataModule(PairedDataModule):
    """Real-frame stand-in: noisy crops only, no clean truth, no second exposure."""

    data_name = "noisy_frames"
    provides = frozenset({"noisy"})
    patch_size = 32

    def build_sets(self):
        truth, _ = render_field(96, np.random.default_rng(3), n_stars=15, n_galaxies=3)
        rng = np.random.default_rng(4)
        noisy = (rng.poisson(truth) + rng.normal(0, 5.0, truth.shape)).astype(np.float32)
        crops = np.stack([noisy[y : y + 32, x : x + 32] for y in (0, 32, 64) for x in (0, 32, 64)])
        return NoisyCrops(crops[:6]), NoisyCrops(crops[6:8]), NoisyCrops(crops[8:])


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_n2v_trains_on_noisy_frames_and_is_judged_without_truth(tmp_path):
    cfg = _compose(["model=n2v", "debug=tiny"])
    pairing = instantiate(cfg.data.pairing)
    datamodule = NoisyFramesDataModule(pairing, AsinhNormalizer(), batch_size=2)
    metric, mode = resolve_monitor("auto", "auto", datamodule.has_truth)
    assert (metric, mode) == ("val/loss", "min")
    parts = {key: instantiate(cfg.model[key]) for key in ("net", "loss")}
    check_parts(datamodule, parts)
    model = instantiate(cfg.model, **parts, monitor=metric, scheduler=None)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=datamodule)
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["val/loss"])
    assert "val/sky_noise_ratio" in logged  # a no-truth measure, in electrons
    assert not any("psnr" in key for key in logged)  # never PSNR against the noisy input
    changed = any(not torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    assert changed


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_each_model_runs_through_train_py(run, model):
    result = run(
        "train.py",
        f"model={model}",
        "debug=tiny",
        "+trainer.fast_dev_run=true",
        "test=false",
        "logger=csv",
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(("model", "own"), [("structn2v", "blind_spot"), ("n2n", "noise2noise")])
def test_a_method_with_another_pairing_fails_at_start_in_one_line(run, tmp_path, model, own):
    # A sweep over pairing= (sweeps/noise_method.yaml) with model=n2v trained the N2V network on
    # clean targets and labelled the run and its checkpoint n2v. The model YAML's
    # model_pairings says which pairings make the method (structn2v inherits n2v's).
    result = run("train.py", f"model={model}", "pairing=supervised", "debug=fast_dev_run")
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pairing={own}" in errors[0], errors
    assert "pairing=supervised with model=supervised" in errors[0]
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.ckpt"))


def test_n2v2_partial_bundle_fails_at_start_in_one_line(run):
    result = run("train.py", "model=n2v2", "data.pairing.strategy=uniform", "debug=tiny")
    assert result.returncode != 0
    assert "model=n2v2" in result.stderr and "data.pairing.strategy=median" in result.stderr


def test_n2v_checkpoint_restores_a_fits_frame_with_infer_py(run, tmp_path):
    result = run("train.py", "model=n2v", "debug=tiny", "trainer.max_epochs=1", "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "logs" / "train" / "runs").iterdir())
    ckpt = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    truth, _ = render_field(64, np.random.default_rng(8), n_stars=6, n_galaxies=2)
    rng = np.random.default_rng(9)
    noisy = (rng.poisson(truth) + rng.normal(0, 5.0, truth.shape)).astype(np.float32)
    frame, out = tmp_path / "frame.fits", tmp_path / "restored.fits"
    fits.PrimaryHDU(noisy).writeto(frame)
    result = run(
        "infer.py",
        f"ckpt_path={ckpt}",
        f"input={frame}",
        f"output={out}",
        "tile_size=64",
        "overlap=16",
        "progress=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    restored = fits.getdata(out)
    assert restored.shape == noisy.shape and np.isfinite(restored).all()
    assert not np.array_equal(restored, noisy)
