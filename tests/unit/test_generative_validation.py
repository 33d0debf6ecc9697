"""The validation callback scores SR3 and the cGAN on the realism and consistency axes: on a
hand-made panel (fast), and in one fast_dev_run of each shipped config, tiny networks, in
process (slow: a Lightning fit each)."""

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from astrorestore.callbacks.astro_metrics import AstroMetrics
from astrorestore.data.normalization.photo import PhotoNormalizer
from astrorestore.data.pairings.super_resolution import SuperResolutionPairing
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


def test_a_super_resolved_panel_is_logged_on_realism_and_consistency():
    truth = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pairing = SuperResolutionPairing(2, psf_sigma=1.0)
    low = pairing.degrade(truth) + 0.01 * torch.randn(2, 3, 16, 16)
    normalizer = PhotoNormalizer()
    offset, scale = normalizer.stats(truth)
    bicubic = torch.nn.functional.interpolate(low, scale_factor=2, mode="bicubic")
    z = lambda x: normalizer.forward(x, offset, scale)  # noqa: E731
    panel = {"input": z(low), "restored": z(bicubic), "truth": z(truth)}
    logged = {}
    module = SimpleNamespace(
        panel=panel | {"offset": offset, "scale": scale},
        log=lambda k, v: logged.__setitem__(k, float(v)),
    )
    datamodule = SimpleNamespace(normalizer=normalizer, pairing=pairing)
    trainer = SimpleNamespace(datamodule=datamodule, sanity_checking=False)
    AstroMetrics().on_validation_epoch_end(trainer, module)
    assert logged["val/realism/power_0.25-0.5"] < 0.5  # bicubic is smooth
    assert logged["val/consistency/input_sigma"] == pytest.approx(0.01, rel=0.1)
    assert logged["val/consistency/error_sigma"] > 1.0  # never blurred again
    assert 0 < logged["val/realism/colourfulness_ratio"] < 1.5
    assert not any(key.startswith("val/astro/") for key in logged)


@pytest.mark.slow  # a Lightning fast_dev_run of each model (~10 s each on the loaded 2-core CPU)
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
