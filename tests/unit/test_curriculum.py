from types import SimpleNamespace

import pytest
import torch

from astrorestore.callbacks.curriculum import Curriculum
from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.base import SupervisedPairing
from astrorestore.errors import UserError


def _datamodule() -> SimulatedFieldDataModule:
    return SimulatedFieldDataModule(
        SupervisedPairing(PoissonGaussianNoise()), AsinhNormalizer(), field_size=64, patch_size=32
    )


STAGES = [
    {"name": "easy", "fraction": 0.3, "exposure_range": [2.0, 4.0], "lr_scale": 1.0},
    {"name": "hard", "fraction": 0.5, "exposure_range": [0.25, 1.0], "lr_scale": 1.0},
    {"name": "filter", "fraction": 0.2, "source_patch_fraction": 0.8, "lr_scale": 0.1},
]


def test_stage_boundaries_follow_fractions():
    curriculum = Curriculum(STAGES)
    assert [curriculum.stage_index(e, 10) for e in range(10)] == [0] * 3 + [1] * 5 + [2] * 2


@pytest.mark.parametrize(
    "stages", [[], [{"name": "a", "fraction": 0.5}], [{"name": "a", "fraction": 1.2}]]
)
def test_bad_stages_rejected(stages):
    with pytest.raises(UserError):
        Curriculum(stages)


def test_stages_change_noise_patches_and_lr():
    curriculum = Curriculum(STAGES)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    datamodule = _datamodule()
    trainer = SimpleNamespace(
        max_epochs=10, current_epoch=0, datamodule=datamodule, optimizers=[optimizer]
    )
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    seen = []
    for epoch in range(10):
        trainer.current_epoch = epoch
        curriculum.on_train_epoch_start(trainer, module)
        seen.append(
            (
                datamodule.pairing.noise.exposure_range,
                datamodule.source_patch_fraction,
                optimizer.param_groups[0]["lr"],
            )
        )
    assert seen[0] == ((2.0, 4.0), 0.0, 0.5)
    assert seen[3] == ((0.25, 1.0), 0.0, 0.5)
    assert seen[9] == ((0.25, 1.0), 0.8, pytest.approx(0.05))


def _trainer(datamodule, optimizer):
    return SimpleNamespace(
        max_epochs=10, current_epoch=0, datamodule=datamodule, optimizers=[optimizer]
    )


def test_stage_keeps_a_rate_the_scheduler_lowered():
    # The curriculum must not undo ReduceLROnPlateau: a stage scales the current rate.
    curriculum = Curriculum(STAGES)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    trainer = _trainer(_datamodule(), optimizer)
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    curriculum.on_train_epoch_start(trainer, module)
    optimizer.param_groups[0]["lr"] = 0.2  # the scheduler halved... and more
    for epoch in range(1, 9):
        trainer.current_epoch = epoch
        curriculum.on_train_epoch_start(trainer, module)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * 0.1)


def test_resumed_stage_does_not_scale_the_rate_twice():
    curriculum = Curriculum(STAGES)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    trainer = _trainer(_datamodule(), optimizer)
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    trainer.current_epoch = 9
    curriculum.on_train_epoch_start(trainer, module)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    resumed = Curriculum(STAGES)
    resumed.load_state_dict(curriculum.state_dict())
    fresh_dm = _datamodule()
    trainer = _trainer(fresh_dm, optimizer)  # the optimizer state comes back with its rate
    trainer.current_epoch = 9
    resumed.on_train_epoch_start(trainer, module)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert fresh_dm.source_patch_fraction == 0.8  # data settings are applied again


def test_unsupported_stage_setting_fails_at_fit_start():
    stages = [{"name": "a", "fraction": 1.0, "blur_sigma": 2.0}]
    curriculum = Curriculum(stages)
    trainer = _trainer(_datamodule(), torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1))
    with pytest.raises(UserError, match="blur_sigma.*exposure_range, source_patch_fraction"):
        curriculum.on_fit_start(trainer, None)


def test_early_stopping_counts_only_in_the_last_stage():
    from lightning.pytorch.callbacks import EarlyStopping

    curriculum = Curriculum(STAGES)
    stopper = EarlyStopping(monitor="val/psnr", mode="max", patience=2)
    trainer = SimpleNamespace(
        max_epochs=10,
        current_epoch=0,
        datamodule=_datamodule(),
        optimizers=[torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)],
        callbacks=[stopper],
    )
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    waits = []
    for epoch in range(10):
        trainer.current_epoch = epoch
        curriculum.on_train_epoch_start(trainer, module)
        waits.append(stopper.wait_count)
        stopper.wait_count += 1  # a validation without improvement
    # reset before every epoch of 'easy' and 'hard', counting on through 'filter' (epochs 8-9)
    assert waits == [0] * 8 + [1, 2]
