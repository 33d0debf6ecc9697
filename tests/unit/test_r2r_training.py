"""model=r2r trains end to end on simulated fields and on a folder of FITS frames, each with its
frame's own noise model (one fast_dev_run step each, in process)."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from astrorestore.data.simulation.scene import render_field
from astrorestore.errors import UserError
from astrorestore.train import build
from tests.unit.fits_factory import write_plain

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# One training and one validation batch on the CPU, nothing logged.
ONE_STEP = {"fast_dev_run": True, "accelerator": "cpu", "logger": False,
            "enable_progress_bar": False, "enable_model_summary": False}  # fmt: skip
TINY = [
    "model.net.base_channels=4",
    "model.net.depth=2",
    "model.net.dilations=[1]",
    "model.compute_lpips=false",
    "data.patch_size=32",
    "data.batch_size=2",
]


def _compose(overrides, model="r2r"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"model={model}", *TINY, *overrides])


def _fit(cfg, tmp_path):
    datamodule, model = build(cfg)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    trainer = L.Trainer(default_root_dir=tmp_path, **ONE_STEP)
    trainer.fit(model, datamodule=datamodule)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    return datamodule, trainer


# ~6 s on a quiet 2-core machine (25 s under load 15)
def test_r2r_trains_on_simulated_fields_with_the_noise_configs_model(tmp_path):
    cfg = _compose(
        [
            "data.field_size=64",
            "data.n_train_fields=1",
            "data.n_val_fields=1",
            "data.n_test_fields=1",
            "data.val_patches_per_field=2",
        ]  # fmt: skip
    )
    datamodule, trainer = _fit(cfg, tmp_path)
    assert "val/psnr" in trainer.callback_metrics  # judged on the plain noisy frame vs truth
    assert datamodule.pairing.noise.read_noise == 5.0


@pytest.fixture
def fits_folder(tmp_path):
    """Three 128 px frames in electrons whose headers say RDNOISE = 4 (noise drawn with 4)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        truth, _ = render_field(128, np.random.default_rng(i), n_stars=10, n_galaxies=2)
        rng = np.random.default_rng(10 + i)
        noisy = (rng.poisson(truth) + rng.normal(0.0, 4.0, truth.shape)).astype(np.float32)
        write_plain(folder / f"f{i}.fits", noisy, BUNIT="ELECTRONS", RDNOISE=4.0)
    return folder


def _fits_cfg(folder, *extra, model="r2r"):
    """A one-step run of ``model`` on the frames of ``folder`` (also model=sure's tests)."""
    return _compose(
        [
            "data=fits",
            f"data.root={folder}",
            "data.tile_size=128",
            "data.stride=64",
            "data.val_patches=2",
            "data.progress=false",
            *extra,
        ],  # fmt: skip
        model,
    )


# ~4 s on a quiet 2-core machine (18 s under load 15)
def test_r2r_trains_on_fits_frames_with_each_frames_header_noise_model(fits_folder, tmp_path):
    datamodule, _ = _fit(_fits_cfg(fits_folder), tmp_path)
    models = [m for split in datamodule.frame_noise.values() for m in split]
    assert len(models) == 3
    for noise in models:
        assert noise.gain == 1.0 and noise.read_noise == 4.0
        assert noise.read_noise_source == "header RDNOISE (e-)"
    item = datamodule.train_set[0]
    assert item["noise_gain"].item() == 1.0 and item["noise_read"].item() == 4.0


def test_a_fits_frame_whose_noise_cannot_be_told_is_one_line(tmp_path):
    # No RDNOISE, no map, and a flat frame: the fit has no levels to work with.
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        flat = np.random.default_rng(i).normal(50.0, 3.0, (128, 128)).astype(np.float32)
        write_plain(folder / f"f{i}.fits", flat, BUNIT="ELECTRONS")
    cfg = _fits_cfg(folder)
    with pytest.raises(UserError, match=r"f\d.fits: cannot tell this frame's read noise"):
        datamodule, _ = build(cfg)
        datamodule.setup("fit")
    # data.read_noise states it instead.
    datamodule, _ = build(_fits_cfg(folder, "data.read_noise=3.0"))
    datamodule.setup("fit")
    assert datamodule.frame_noise["train"][0].read_noise_source == "data.read_noise (e-)"


def test_a_training_frame_with_a_noise_map_of_the_wrong_shape_is_one_line(fits_folder):
    from astropy.io import fits

    with fits.open(fits_folder / "f0.fits", mode="update") as hdul:
        hdul.append(fits.ImageHDU(np.ones((64, 128), np.float32), name="ERR"))
    datamodule, _ = build(_fits_cfg(fits_folder))
    with pytest.raises(UserError, match=r"f0.fits: its ERR map is 64x128 but the science"):
        datamodule.setup("fit")
    cache = fits_folder / ".astrorestore-cache"
    assert not cache.exists() or not any(cache.glob("*/prepared.json"))  # nothing prepared
