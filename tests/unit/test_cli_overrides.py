from pathlib import Path

import pytest

from astrorestore.cli import _cli_overrides, check_overrides
from astrorestore.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_valid_overrides_pass():
    check_overrides(
        CONFIGS,
        "train",
        [
            "model=supervised",
            "noise=gaussian",
            "data.noise.sigma=3",
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
    # data.noise.sigma only exists once noise=gaussian is chosen.
    with pytest.raises(UserError, match="data.noise.sigma"):
        check_overrides(CONFIGS, "train", ["data.noise.sigma=3"])
    check_overrides(CONFIGS, "train", ["noise=gaussian", "data.noise.sigma=3"])


def test_bad_value_type_is_one_line():
    with pytest.raises(UserError) as info:
        check_overrides(CONFIGS, "infer", ["tile_size=[1"])
    assert "\n" not in str(info.value)


def test_cli_overrides_skip_hydra_flags():
    assert _cli_overrides(["-m", "a=1", "--cfg", "job", "b=2"]) == ["a=1", "b=2"]
