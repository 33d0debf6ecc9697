from pathlib import Path

import pytest

from astrorestore.cli import _split_argv, check_overrides, run_hydra
from astrorestore.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_valid_overrides_pass():
    check_overrides(
        CONFIGS,
        "train",
        [
            "model=supervised",
            "noise=gaussian",
            "data.pairing.noise.sigma=3",
            "trainer.max_epochs=2",
            "model.optimizer.lr=1e-3",
            "data.patch_size=32",
            "logger=csv",
            "seed=3",
        ],
    )


def test_misspelled_key_names_key_and_suggestion():
    with pytest.raises(UserError) as info:
        check_overrides(CONFIGS, "train", ["trainer.max_epoch=3"])
    message = str(info.value)
    assert "trainer.max_epoch" in message and "trainer.max_epochs" in message
    assert "\n" not in message


def test_misspelled_group_option_lists_options():
    with pytest.raises(UserError) as info:
        check_overrides(CONFIGS, "train", ["model=supervsied"])
    assert "model=supervised" in str(info.value)


def test_sweep_values_are_checked():
    with pytest.raises(UserError, match="csvv"):
        check_overrides(CONFIGS, "train", ["logger=csv,csvv"])


def test_key_from_selected_group_is_known():
    # data.pairing.noise.sigma only exists once noise=gaussian is chosen.
    with pytest.raises(UserError, match="data.pairing.noise.sigma"):
        check_overrides(CONFIGS, "train", ["data.pairing.noise.sigma=3"])
    check_overrides(CONFIGS, "train", ["noise=gaussian", "data.pairing.noise.sigma=3"])


def test_bad_value_type_is_one_line():
    with pytest.raises(UserError) as info:
        check_overrides(CONFIGS, "infer", ["tile_size=[1"])
    assert "\n" not in str(info.value)


def test_split_argv_skips_hydra_flags_and_keeps_config_location():
    overrides, flags = _split_argv(
        ["-m", "a=1", "--cfg", "job", "b=2", "-cd", "sweeps", "--config-name=lr", "-cp", "/x"]
    )
    assert overrides == ["a=1", "b=2"]
    assert flags == {"dir": "sweeps", "name": "lr", "path": "/x"}


def test_sweep_config_from_extra_dir_is_composed(tmp_path):
    # `-cd sweeps -cn learning_rate`: keys are checked against that config, not train.yaml.
    sweeps = CONFIGS.parent / "sweeps"
    check_overrides(CONFIGS, "learning_rate", ["trainer.max_epochs=1"], (sweeps,))
    extra = tmp_path / "extra.yaml"
    extra.write_text("defaults:\n  - train\n  - _self_\nmy_key: 1\n")
    check_overrides(CONFIGS, "extra", ["my_key=2"], (tmp_path,))
    with pytest.raises(UserError, match="my_kee"):
        check_overrides(CONFIGS, "extra", ["my_kee=2"], (tmp_path,))


def test_unknown_sweep_key_is_refused():
    with pytest.raises(UserError, match="did you mean 'model.optimizer.lr'"):
        check_overrides(CONFIGS, "train", ["model.optimizer.lrr=1,2"])


@pytest.mark.parametrize(
    "config, override, expected",
    [
        ("train", "trainer.max_epochs=abc", "trainer.max_epochs='abc' is not an integer"),
        ("train", "trainer.max_epochs=1.5", "is not an integer"),
        ("train", "model.optimizer.lr=abc", "model.optimizer.lr='abc' is not a number"),
        ("train", "data.batch_size=abc", "data.batch_size='abc' is not a number"),
        ("train", "model.optimizer.lr=1e-3,abc", "'abc' is not a number"),
        ("train", "test=maybe", "is not true or false"),
        ("infer", "tile_size=abc", "tile_size='abc' is not a number"),
    ],
)
def test_value_of_the_wrong_type_is_refused(config, override, expected):
    # Otherwise the run starts and fails deep inside Lightning or torch with a traceback.
    with pytest.raises(UserError, match=expected.replace(".", r"\.").replace("[", r"\[")):
        check_overrides(CONFIGS, config, [override])


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.devices=auto"],
        ["trainer.precision=16"],
        ["debug=fast_dev_run", "trainer.fast_dev_run=3"],
        ["trainer.max_epochs=null"],
        ["model.optimizer.lr=1"],
        ["model.net.bound_sigmas=null"],
    ],
)
def test_values_the_trainer_or_key_accepts_pass(overrides):
    check_overrides(CONFIGS, "train", overrides)


def test_integer_default_takes_a_fraction():
    check_overrides(
        CONFIGS, "infer", ["postprocess=psf_cores", "postprocess.psf_cores.max_chi2=2.5"]
    )


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        (
            "infer",
            ["psf_cores.enabled=true"],
            "psf_cores.enabled=true is now postprocess=psf_cores",
        ),
        (
            "infer",
            ["psf_cores.min_snr=10"],
            "psf_cores.min_snr is now postprocess.psf_cores.min_snr",
        ),
        ("infer", ["give_back.flux_sigma=1.5"], "now postprocess.give_back.detect_scale"),
        ("train", ["model.net.flux_footprint=2"], "now postprocess.give_back.footprint_scale"),
        ("train", ["model.net.photons_per_unit=16"], "now model.net.noise.photons_per_unit"),
    ],
)
def test_the_old_postprocess_spellings_name_the_new_ones(name, overrides, expected):
    with pytest.raises(UserError, match=expected) as info:
        check_overrides(CONFIGS, name, overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["train", "infer"])
def test_a_bad_postprocess_choice_names_the_group_and_its_options(name):
    with pytest.raises(
        UserError, match="no option 'sharpen' in config group 'postprocess'"
    ) as info:
        check_overrides(CONFIGS, name, ["postprocess=sharpen"])
    assert "give_back" in str(info.value) and "psf_cores" in str(info.value)


def test_unparsable_path_names_the_override_and_how_to_quote_it():
    with pytest.raises(UserError) as info:
        check_overrides(CONFIGS, "infer", ["tile_size=64", "input=/data/nébuleuse/raw"])
    message = str(info.value)
    assert "\n" not in message and "the override input=/data/nébuleuse/raw" in message
    assert "\"input='/data/nébuleuse/raw'\"" in message
    check_overrides(CONFIGS, "infer", ["input='/data/nébuleuse/raw dir'"])  # quoted: fine


def test_ctrl_c_outside_the_training_loop_exits_130(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.yaml").write_text("value: 1\n")
    monkeypatch.setattr("sys.argv", ["tiny.py", f"hydra.run.dir={tmp_path / 'out'}"])

    def entry(cfg):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_hydra(entry, tmp_path, "tiny")
    assert info.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"


def test_a_folder_key_from_other_tools_suggests_data_root():
    # data.path (the name other tools use) suggested data.patch_size, the closest spelling.
    for name in ("path", "dir", "folder"):
        with pytest.raises(UserError, match=r"did you mean 'data\.root'\?"):
            check_overrides(CONFIGS, "train", ["data=fits", f"data.{name}=/frames"])
