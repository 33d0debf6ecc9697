"""The NaN guard stops at the first non-finite loss or gradient and keeps the last checkpoint."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from astrorestore.callbacks.nan_guard import NanGuard
from astrorestore.errors import UserError


class TinyRegression(L.LightningModule):
    """y = w x, with a NaN loss or a NaN gradient injected at one global step."""

    def __init__(self, nan_loss_at: int = -1, nan_grad_at: int = -1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.nan_loss_at = nan_loss_at
        self.nan_grad_at = nan_grad_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if self.global_step == self.nan_loss_at:
            loss = loss * float("nan")
        if self.global_step == self.nan_grad_at:
            self.layer.weight.register_hook(lambda grad: grad * float("inf"))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, module, **guard):
    data = TensorDataset(torch.randn(32, 2), torch.randn(32, 1))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[NanGuard(**guard), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    return trainer


def test_nan_loss_stops_with_one_line_naming_the_step_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(UserError) as info:
        _fit(tmp_path, TinyRegression(nan_loss_at=3))
    message = str(info.value)
    assert "\n" not in message
    assert "non-finite loss (nan) at step 3" in message
    assert str(tmp_path / "last.ckpt") in message
    kept = torch.load(tmp_path / "last.ckpt", weights_only=True)
    # The checkpoint is from the last good step, and its weights are finite.
    assert kept["global_step"] == 3
    assert all(torch.isfinite(value).all() for value in kept["state_dict"].values())


def test_nan_gradient_stops_before_the_optimiser_step(tmp_path):
    module = TinyRegression(nan_grad_at=2)
    with pytest.raises(UserError, match="non-finite gradient at step 2"):
        _fit(tmp_path, module)
    # The optimiser never applied the poisoned gradient.
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_without_gradient_check_the_loss_check_fires_one_step_later(tmp_path):
    module = TinyRegression(nan_grad_at=2)
    with pytest.raises(UserError, match="non-finite loss .* at step 3"):
        _fit(tmp_path, module, check_gradients=False)
    assert not math.isfinite(float(module.layer.weight.sum()))


def test_finite_run_is_untouched(tmp_path):
    trainer = _fit(tmp_path, TinyRegression())
    assert trainer.global_step == 16
