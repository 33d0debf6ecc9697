"""The validation callback scores SR3 and the cGAN on the realism and consistency axes: one
fast_dev_run of each shipped config, tiny networks, in process."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from astrorestore.callbacks.astro_metrics import AstroMetrics
from astrorestore.train import build

ROOT = Path(__file__).resolve().parents[2]
TINY = ["debug=tiny_photos", "data.patch_size=32", "data.n_val=2", "data.num_workers=0"]
MODELS = {
    "sr3": [
        "model.net.base_channels=8",
        "model.net.depth=2",
        "model.sample_steps=2",
        "model.n_sample_images=2",
        "model.compute_lpips=false",
    ],
    "cgan_colorize": [
        "model.net.base_channels=8",
        "model.discriminator.base_channels=8",
        "model.compute_lpips=false",
    ],
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_validation_logs_realism_and_consistency(model, tmp_path):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", *TINY, *MODELS[model]])
    torch.manual_seed(0)
    datamodule, module = build(cfg)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        callbacks=[AstroMetrics()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/realism/power_0.25-0.5"] > 0
    assert logged["val/realism/patch_swd"] >= 0
    assert logged["val/consistency/error_sigma"] > 0
    if model == "cgan_colorize":
        # ycbcr keeps the input's luminance exactly: consistent to the rounding of 8-bit levels.
        assert logged["val/realism/colourfulness_ratio"] >= 0
        assert logged["val/consistency/error_sigma"] < 1.0
    else:
        assert "val/realism/colourfulness_ratio" in logged  # Hubble is RGB
