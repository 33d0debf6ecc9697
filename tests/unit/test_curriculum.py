from types import SimpleNamespace

import pytest
import torch

from astrorestore.callbacks.curriculum import Curriculum
from astrorestore.data.noise import PoissonGaussianNoise
from astrorestore.errors import UserError

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
    datamodule = SimpleNamespace(noise=PoissonGaussianNoise(), source_patch_fraction=0.0)
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
                datamodule.noise.exposure_range,
                datamodule.source_patch_fraction,
                optimizer.param_groups[0]["lr"],
            )
        )
    assert seen[0] == ((2.0, 4.0), 0.0, 0.5)
    assert seen[3] == ((0.25, 1.0), 0.0, 0.5)
    assert seen[9] == ((0.25, 1.0), 0.8, pytest.approx(0.05))
