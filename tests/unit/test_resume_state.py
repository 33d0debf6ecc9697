"""The resume callback: after a restore, the next random draws and the curriculum stage are
those the uninterrupted run would have had.

The trainer is a stand-in holding a real simulated data module, so the test runs in about a
second; the hooks are called in Lightning's order (setup, batches, save; then in the resumed
process setup, load, train start).
"""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from astrorestore.callbacks.curriculum import Curriculum
from astrorestore.callbacks.resume_state import ResumeRandomState
from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.base import SupervisedPairing

STAGES = [
    {"name": "easy", "fraction": 0.3, "exposure_range": [2.0, 4.0]},
    {"name": "hard", "fraction": 0.7, "exposure_range": [0.25, 1.0]},
]
MAX_EPOCHS = 10
BATCH = 2


def _run():
    """A fresh process's objects: data module (set up), curriculum, callback, trainer."""
    datamodule = SimulatedFieldDataModule(
        SupervisedPairing(PoissonGaussianNoise()),
        AsinhNormalizer(),
        field_size=32,
        patch_size=16,
        n_train_fields=2,
        n_val_fields=1,
        n_test_fields=1,
        val_patches_per_field=1,
        batch_size=BATCH,
    )
    datamodule.setup("fit")
    callback = ResumeRandomState()
    trainer = SimpleNamespace(
        global_rank=0,
        max_epochs=MAX_EPOCHS,
        datamodule=datamodule,
        callbacks=[Curriculum(STAGES), callback],
    )
    module = SimpleNamespace(device=torch.device("cpu"))
    callback.setup(trainer, module, "fit")
    return datamodule, callback, trainer, module


def _fetch(datamodule) -> torch.Tensor:
    """One training batch as the loader draws it (items in this process)."""
    return torch.stack([datamodule.train_set[i]["clean"] for i in range(BATCH)])


def _next_draws(datamodule, fetched_ahead: torch.Tensor | None = None) -> dict:
    """The draws the next training step makes, from every stream the callback restores."""
    generator = datamodule.device_generator(torch.device("cpu"))
    return {
        "crops": fetched_ahead if fetched_ahead is not None else _fetch(datamodule),
        "torch": torch.rand(4),
        "numpy": np.random.rand(4),
        "python": [random.random() for _ in range(4)],
        "device": torch.rand(4, generator=generator),
    }


@pytest.mark.parametrize("finished_epoch", [False, True])
def test_restore_gives_the_uninterrupted_draws_and_stage(finished_epoch):
    torch.manual_seed(7)
    np.random.seed(7)
    random.seed(7)
    datamodule, callback, trainer, module = _run()
    datamodule.device_generator(torch.device("cpu"))
    # Train two batches; Lightning has fetched the third ahead when the checkpoint is written.
    for batch_idx in range(2):
        callback.on_train_batch_start(trainer, module, {"clean": _fetch(datamodule)}, batch_idx)
        torch.rand(3), np.random.rand(3), random.random()  # the step's own draws
    ahead = _fetch(datamodule)
    epoch = 2 if finished_epoch else 3  # either way the next batch is in epoch 3 ('hard')
    checkpoint = {
        "epoch": epoch,
        "loops": {"fit_loop": {"epoch_loop.batch_progress": {"is_last_batch": finished_epoch}}},
    }
    callback.on_save_checkpoint(trainer, module, checkpoint)
    expected = _next_draws(datamodule, fetched_ahead=ahead)
    expected_stage = tuple(STAGES[1]["exposure_range"])

    # Another process: other seeds, a fresh data module in the first stage's settings.
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    datamodule, callback, trainer, module = _run()
    datamodule.apply_stage(exposure_range=[2.0, 4.0])
    _fetch(datamodule), datamodule.device_generator(torch.device("cpu")).seed()
    callback.on_load_checkpoint(trainer, module, checkpoint)
    callback.on_train_start(trainer, module)

    assert datamodule.pairing.noise.exposure_range == expected_stage
    resumed = _next_draws(datamodule)
    for stream, values in expected.items():
        np.testing.assert_array_equal(np.asarray(resumed[stream]), np.asarray(values), stream)


def test_checkpoint_without_random_state_leaves_the_streams_alone():
    datamodule, callback, trainer, module = _run()
    state = torch.get_rng_state()
    callback.on_load_checkpoint(trainer, module, {"epoch": 0})
    assert torch.equal(torch.get_rng_state(), state)
