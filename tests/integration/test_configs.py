"""Every shipped config composes and instantiates; combinations that cannot work say why.

Like the lightning-hydra-template's config tests: nothing is trained here, but every object a
run would build is built (data module, model, callbacks, trainer), so a typo in a YAML file or a
broken cross-check fails in CI rather than in a user's first run.
"""

import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict

from astrorestore.errors import UserError
from astrorestore.train import build, resolve_monitor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SCRATCH = Path(tempfile.gettempdir()) / "astrorestore-config-test"
OPTIONS = {
    group: sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
    for group in ("model", "data", "experiment")
}
# model x data combinations that are meant to work; every other one must fail in one line.
WORKS = {
    # the default: the PSF-robust bounded residual U-Net (issue 10), on fixed and randomised
    # scenes; `bounded` is its alias, `supervised_unbounded` the previous, unbounded default
    ("supervised", "simulated"),
    ("supervised", "simulated_randomized"),
    ("bounded", "simulated"),
    ("bounded", "simulated_randomized"),
    ("supervised_unbounded", "simulated"),
    ("supervised_unbounded", "simulated_randomized"),
    ("cgan_colorize", "hubble"),
    ("sr3", "hubble"),
    ("sr_regression", "hubble"),
    # galaxy10 works with data.path=<Galaxy10_DECals.h5>; without the file it must fail in one line.
}
# Self-supervised methods train on simulated fields too (noise drawn on the fly; truth kept),
# and the blind-spot ones on real frames as they are (data=jwst: demo frames without a root).
WORKS |= {
    (m, d)
    for m in ("n2v", "n2v2", "structn2v", "n2n", "r2r", "sure")
    for d in ("simulated", "simulated_randomized", "simulated_realistic")
}
# Fields that look like real frames (data=simulated_realistic) serve the supervised models too.
WORKS |= {(m, "simulated_realistic") for m in ("supervised", "bounded", "supervised_unbounded")}
# r2r on the JWST-like demo frames recorrupts with their ERR maps; sure uses them as its noise.
WORKS |= {(m, "jwst") for m in ("n2v", "n2v2", "structn2v", "r2r", "sure")}
# The tiny debug preset of each data family (debug=tiny sets keys of the simulated fields).
PHOTO_DATA = {"hubble", "galaxy10"}


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        # Nothing a built data module writes (e.g. demo frames) may land in the repository.
        cfg.paths.root_dir = cfg.paths.output_dir = str(SCRATCH)
    return cfg


def _build(cfg):
    datamodule, model = build(cfg)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    return datamodule, model, trainer


@pytest.mark.parametrize("experiment", OPTIONS["experiment"])
def test_every_experiment_builds(experiment):
    datamodule, model, _ = _build(_compose([f"experiment={experiment}"]))
    assert model.restorer_spec()["_target_"]
    assert datamodule.pairing is not None


@pytest.mark.parametrize("model", OPTIONS["model"])
@pytest.mark.parametrize("data", OPTIONS["data"])
def test_model_data_combinations(model, data):
    tiny = "debug=tiny_photos" if data in PHOTO_DATA else "debug=tiny"
    cfg = _compose([f"model={model}", f"data={data}", tiny])
    if (model, data) in WORKS:
        datamodule, module, _ = _build(cfg)
        # One real batch goes through pairing, normalisation and the training step.
        datamodule.setup("fit")
        batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
        if module.automatic_optimization:
            loss = module.training_step(batch, 0)
        else:  # manual optimisation (GAN) steps its optimisers: it needs a trainer
            trainer = L.Trainer(
                fast_dev_run=1, logger=False, enable_progress_bar=False, accelerator="cpu"
            )
            trainer.fit(module, datamodule=datamodule)
            loss = trainer.callback_metrics["train/g_loss"]
        assert torch.isfinite(loss)
    else:
        # build() re-raises the UserError behind Hydra's wrapping: one line, as the CLI prints.
        with pytest.raises(UserError) as info:
            _build(cfg)
        assert "\n" not in str(info.value)


def test_default_is_the_bounded_net_on_randomised_scenes_and_the_old_one_stays_available():
    _, module, _ = _build(_compose(["debug=tiny"]))
    cfg = _compose([])
    assert type(module.net).__name__ == "BoundedResidualUNet"
    assert module.net.bound.bound_sigmas == 4.0
    # the net's sigma uses the normaliser's softening: one fact, taken from the data config
    assert module.net.noise.softening == cfg.data.normalizer.softening
    assert not module.postprocess.on_tiles  # no post-processing by default
    assert list(cfg.data.scene.psf_fwhm) == [1.2, 5.0]
    assert _compose(["model=bounded"]) == cfg
    old = _compose(["model=supervised_unbounded"])
    assert old.data.scene.psf_fwhm == 2.5 and old.model.net.bound_sigmas is None
    # the command line still chooses the data of the default model
    assert _compose(["data=simulated"]).data.scene.psf_fwhm == 2.5


@pytest.mark.parametrize(
    ("overrides", "give_back"),
    [
        (["model=n2v"], {"detect_scale": 1.5, "footprint_scale": 1.0}),
        (["experiment=bounded_shot_noise"], {"chi2_from": 1.5, "stack_snr": 20.0}),
        (["experiment=faint_photometry"], {"footprint_scale": 2.0}),
        (["postprocess=give_back", "postprocess.give_back.threshold=4"], {"threshold": 4.0}),
        (["model=n2v", "postprocess=none"], None),
    ],
)
def test_postprocess_group_reaches_validation_and_the_checkpoint(overrides, give_back):
    cfg = _compose([*overrides, "debug=tiny"])
    _, module, _ = _build(cfg)
    stage = module.postprocess.give_back
    if give_back is None:
        assert stage is None and cfg.postprocess.give_back is None
        return
    assert all(getattr(stage, key) == value for key, value in give_back.items())
    # the tile stages use the network's own noise model
    assert module.postprocess.noise is module.net.noise


def test_psf_cores_in_training_fails_at_start_up():
    from astrorestore.train import check_config

    with pytest.raises(UserError, match="postprocess.psf_cores works on whole frames"):
        check_config(_compose(["postprocess=psf_cores"]))


@pytest.mark.parametrize(
    "loss, option", [("noise_weighted", "noise_weighting"), ("restoration_flux", "flux_weight")]
)
def test_noise_model_losses_take_the_normalisers_softening_and_train_a_step(loss, option):
    cfg = _compose([f"loss={loss}", "data.normalizer.softening=2.5", "debug=tiny"])
    datamodule, module, _ = _build(cfg)
    assert getattr(module.loss, option) and module.loss.softening == 2.5
    assert module.loss.photons_per_unit == cfg.model.loss.photons_per_unit > 0
    datamodule.setup("fit")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert torch.isfinite(module.training_step(batch, 0))


def test_monitor_is_one_fact_used_everywhere():
    cfg = _compose([])
    datamodule, model, trainer = _build(cfg)
    assert (cfg.monitor.metric, cfg.monitor.mode) == ("val/psnr", "max")
    assert trainer.checkpoint_callback.monitor == "val/psnr"
    assert trainer.checkpoint_callback.mode == "max"
    early = next(c for c in trainer.callbacks if type(c).__name__ == "EarlyStopping")
    assert early.monitor == "val/psnr" and early.mode == "max"
    summary = next(c for c in trainer.callbacks if type(c).__name__ == "RunSummary")
    assert (summary.monitor, summary.mode) == ("val/psnr", "max")
    scheduler = model.configure_optimizers()["lr_scheduler"]
    assert scheduler["monitor"] == "val/psnr" and scheduler["scheduler"].mode == "max"


def test_scheduler_lowers_the_rate_on_a_plateau_of_the_monitor():
    _, model, _ = _build(_compose([]))
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lr0 = optimizer.param_groups[0]["lr"]
    for value in (30.0, 31.0, 32.0, 33.0, 34.0):  # PSNR rising: no reduction
        scheduler.step(value)
    assert optimizer.param_groups[0]["lr"] == lr0
    for _ in range(4):  # PSNR flat: reduced after `patience` epochs
        scheduler.step(34.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr0 * 0.5)


def test_monitor_auto_without_truth_picks_lowest_validation_loss():
    assert resolve_monitor("auto", "auto", has_truth=False) == ("val/loss", "min")
    assert resolve_monitor("val/ssim", "auto", has_truth=True) == ("val/ssim", "max")
    with pytest.raises(UserError, match="needs a clean truth"):
        resolve_monitor("val/psnr", "auto", has_truth=False)
    with pytest.raises(UserError, match="monitor.mode"):
        resolve_monitor("val/something", "auto", has_truth=True)
