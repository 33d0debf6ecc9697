"""Tests of the simulated-field LightningDataModule."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.base import SupervisedPairing
from astrorestore.errors import UserError

# The gain of the noise drawn and its photons per normaliser unit ride along (frame bound).
KEYS = {"input", "target", "truth", "offset", "scale", "noise_gain", "photons_per_unit"}


def _datamodule(**overrides) -> SimulatedFieldDataModule:
    kwargs = dict(
        field_size=96,
        n_train_fields=2,
        n_val_fields=1,
        n_test_fields=1,
        patch_size=32,
        batch_size=4,
        patches_per_epoch=8,
        val_patches_per_field=4,
        seed=0,
        scene={"n_stars": 20, "n_galaxies": 8},
    )
    kwargs.update(overrides)
    return SimulatedFieldDataModule(
        SupervisedPairing(PoissonGaussianNoise(read_noise=5.0, exposure_range=(0.5, 2.0))),
        AsinhNormalizer(softening=3.0),
        **kwargs,
    )


def test_train_and_val_batches_after_transfer() -> None:
    dm = _datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"clean"} and batch["clean"].shape == (4, 1, 32, 32)
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) == KEYS
    for key in ("input", "target", "truth"):
        assert out[key].shape == (4, 1, 32, 32) and out[key].dtype == torch.float32
    assert torch.equal(out["target"], out["truth"])  # supervised: the target is the truth
    assert out["offset"].shape == out["scale"].shape == (4, 1, 1, 1)
    # Successive training batches get fresh noise from the kept generator.
    again = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out["input"], again["input"])

    val = next(iter(dm.val_dataloader()))
    assert set(val) == {"input", "target", "truth", "noise_gain"}  # paired once, at set-up
    out = dm.on_after_batch_transfer(val, 0)
    assert set(out) == KEYS
    # The normalisation is invertible batch-wise and uses the noisy input's statistics.
    back = dm.normalizer.inverse(out["input"], out["offset"], out["scale"])
    torch.testing.assert_close(back, val["input"], rtol=1e-5, atol=1e-3)
    truth = dm.normalizer.inverse(out["truth"], out["offset"], out["scale"])
    torch.testing.assert_close(truth, val["truth"], rtol=1e-5, atol=1e-3)


def test_fields_and_catalogs_are_kept() -> None:
    dm = _datamodule()
    dm.setup("test")
    assert dm.val_fields.shape == (1, 96, 96) and dm.test_fields.shape == (1, 96, 96)
    assert len(dm.val_catalogs) == 1 and len(dm.test_catalogs) == 1
    assert {"x", "y", "flux", "kind", "sky"} <= set(dm.test_catalogs[0])
    assert len(dm.test_dataloader().dataset) == 4


def test_val_set_is_identical_for_same_seed() -> None:
    a, b = _datamodule(), _datamodule()
    torch.manual_seed(123)  # global state must not matter
    a.setup("fit")
    torch.manual_seed(456)
    b.setup("fit")
    assert torch.equal(a.val_set.tensors["input"], b.val_set.tensors["input"])
    assert torch.equal(a.val_set.tensors["truth"], b.val_set.tensors["truth"])
    other = _setup(_datamodule(seed=1)).val_set.tensors["input"]
    assert not torch.equal(a.val_set.tensors["input"], other)


def _setup(dm: SimulatedFieldDataModule) -> SimulatedFieldDataModule:
    dm.setup("fit")
    return dm


def _train_patches(seed: int, num_workers: int = 0) -> torch.Tensor:
    L.seed_everything(seed, workers=True, verbose=False)
    dm = _setup(_datamodule(num_workers=num_workers))
    return torch.cat([b["clean"] for b in dm.train_dataloader()])


def test_train_patches_are_reproducible() -> None:
    a, b, c = _train_patches(7), _train_patches(7), _train_patches(8)
    assert a.shape == (8, 1, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_patches_are_reproducible_with_workers() -> None:
    a, b = _train_patches(7, num_workers=2), _train_patches(7, num_workers=2)
    assert torch.equal(a, b)
    # Two workers must not produce the same crops.
    assert not torch.equal(a[:4], a[4:])


def _source_rate(dm: SimulatedFieldDataModule) -> float:
    patches = torch.cat([b["clean"] for b in dm.train_dataloader()])
    return (patches.flatten(1).amax(dim=1) > 20.0 + 100.0).float().mean().item()


def test_source_patch_fraction_forces_sources() -> None:
    L.seed_everything(0, workers=True, verbose=False)
    dm = _setup(_datamodule(patches_per_epoch=64, scene={"n_stars": 40, "n_galaxies": 10}))
    base = _source_rate(dm)
    dm.source_patch_fraction = 1.0
    assert dm.train_set.source_patch_fraction == 1.0
    forced = _source_rate(dm)
    assert forced > 0.9 and forced > base
    with pytest.raises(UserError, match="source_patch_fraction"):
        dm.source_patch_fraction = 1.5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"patch_size": 0}, "data.patch_size"),
        ({"patch_size": 128}, "data.patch_size"),
        ({"batch_size": 0}, "data.batch_size"),
    ],
)
def test_bad_values_raise_user_error(overrides: dict, key: str) -> None:
    with pytest.raises(UserError, match=key):
        _datamodule(**overrides)


def test_ranks_draw_different_patches_and_noise() -> None:
    # DDP: the same global seed on every rank must not give every rank the same data.
    from types import SimpleNamespace

    draws = []
    for rank in (0, 1):
        L.seed_everything(3, workers=True)
        dm = _datamodule()
        dm.trainer = SimpleNamespace(global_rank=rank)
        dm.setup("fit")
        clean = next(iter(dm.train_dataloader()))
        noise = dm.on_after_batch_transfer({"clean": torch.full_like(clean["clean"], 50.0)}, 0)
        draws.append((clean["clean"], noise["input"]))
    assert not torch.equal(draws[0][0], draws[1][0])
    assert not torch.equal(draws[0][1], draws[1][1])


def test_augment_runs_on_training_batches_before_pairing() -> None:
    from astrorestore.data.augment import Augment

    dm = _datamodule(augment=Augment(flips=True, rot90=True))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    calls = []
    original = dm.pairing.__call__

    def spy(inner, generator=None):
        calls.append(inner["clean"].clone())
        return original(inner, generator)

    dm.pairing = type("Spy", (), {"__call__": staticmethod(spy)})()
    dm.on_after_batch_transfer(batch, 0)
    seen = calls[0]
    assert not torch.equal(seen, batch["clean"])  # transformed before the pairing saw it
    torch.testing.assert_close(seen.sum(), batch["clean"].sum(), rtol=1e-3, atol=1.0)


def test_messages_name_the_data_option_the_user_chose() -> None:
    # data=simulated_randomized builds the same class: its errors must not say data=simulated.
    for name in ("simulated", "simulated_randomized"):
        with pytest.raises(UserError, match=f"which data={name} with"):
            _datamodule(name=name).apply_stage(bogus_setting=1)


def _map_datamodule(**overrides) -> SimulatedFieldDataModule:
    dm = _datamodule(**overrides)
    dm.normalizer = AsinhNormalizer(softening=3.0, background="map")
    return dm


def test_sky_map_crops_follow_the_patch_rotation_and_flip() -> None:
    from astrorestore.data.datamodules.simulated import RandomPatchDataset

    fields = torch.arange(2 * 40 * 40, dtype=torch.float32).reshape(2, 40, 40).numpy()
    crops = RandomPatchDataset(fields, fields[:, 0, 0], 8, 16, sky_maps=fields + 0.5)
    for i in range(16):
        item = crops[i]
        assert torch.equal(item["background"], item["clean"] + 0.5)


def test_background_map_is_the_offset_and_follows_the_exposure() -> None:
    dm = _map_datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["background"].shape == batch["clean"].shape
    # The flat 20 e- sky of the simulated fields, measured on a noise draw of each field.
    torch.testing.assert_close(batch["background"].median(), torch.tensor(20.0), atol=1.0, rtol=0)
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) == KEYS and out["offset"].shape == (4, 1, 32, 32)
    assert out["scale"].shape == (4, 1, 1, 1)
    # Exposure factors in [0.5, 2]: the map is scaled with the scene it belongs to.
    truth = dm.normalizer.inverse(out["truth"], out["offset"], out["scale"])
    exposure = truth.sum((1, 2, 3)) / batch["clean"].sum((1, 2, 3))
    assert float((exposure - 1).abs().max()) > 0.05
    expected = batch["background"] * exposure.view(-1, 1, 1, 1)
    torch.testing.assert_close(out["offset"], expected, rtol=1e-4, atol=1e-3)
    # Validation: fixed crops carry their map; the normalisation inverts exactly.
    val = next(iter(dm.val_dataloader()))
    out = dm.on_after_batch_transfer(val, 0)
    assert out["offset"].shape == val["input"].shape
    back = dm.normalizer.inverse(out["input"], out["offset"], out["scale"])
    torch.testing.assert_close(back, val["input"], rtol=1e-5, atol=1e-3)


def test_map_needs_same_size_pairs() -> None:
    from astrorestore.data.pairings.super_resolution import SuperResolutionPairing

    with pytest.raises(UserError, match="background=map cannot normalise a super-resolution"):
        SimulatedFieldDataModule(
            SuperResolutionPairing(noise=PoissonGaussianNoise()),
            AsinhNormalizer(background="map"),
            field_size=96,
            patch_size=32,
        )


def test_a_field_too_crowded_for_a_map_falls_back_to_its_median(caplog) -> None:
    from astrorestore.data.datamodules.simulated import _sky_maps

    fields = np.full((2, 64, 64), 20.0, np.float32)
    fields[1] += 3000.0 * np.exp(-np.hypot(*np.mgrid[-32:32, -32:32]) / 6.0)  # one huge galaxy
    noise = PoissonGaussianNoise(read_noise=3.0)
    with caplog.at_level("WARNING"):
        maps = _sky_maps(
            fields, AsinhNormalizer(background="map"), noise, np.random.SeedSequence(0)
        )
    assert maps.shape == fields.shape
    assert np.ptp(maps[1]) == 0 and 20.0 < maps[1, 0, 0] < 200.0  # flat, at the field's median
    assert abs(float(maps[0].mean()) - 20.0) < 1.0
    assert "1 of 2 simulated fields are too crowded" in caplog.text


def test_the_exposure_is_read_back_where_a_crop_sums_to_zero() -> None:
    from astrorestore.data.datamodules.base import follow_exposure

    clean = torch.full((2, 1, 8, 8), -1.0)  # an over-subtracted sky ...
    clean[:, 0, 0, 0] = 63.0  # ... and a source: each crop sums to exactly 0
    clean[1] += 1e-3  # or to almost 0
    t = torch.tensor([2.0, 0.5]).view(-1, 1, 1, 1)
    out = follow_exposure(torch.ones_like(clean), clean, {"truth": t * clean})
    torch.testing.assert_close(out, t.expand_as(clean))
    flat = torch.zeros_like(clean)  # nothing to read a factor from: the map is kept
    assert torch.equal(follow_exposure(clean, flat, {"truth": flat}), clean)
