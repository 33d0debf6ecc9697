"""Tests of the Galaxy10 DECaLS reader: schema checks, split, values and resizing."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from astrorestore.data.sources.galaxy10 import Galaxy10, check_galaxy10, galaxy10_splits
from astrorestore.errors import UserError


def _write(path, n=20, size=32, images=True, ans=True, dtype=np.uint8):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as fh:
        if images:
            fh["images"] = rng.integers(0, 256, (n, size, size, 3)).astype(dtype)
        if ans:
            fh["ans"] = np.arange(n) % 10
    return path


def test_items_are_float_rgb_in_unit_range_with_labels(tmp_path) -> None:
    path = _write(tmp_path / "g.h5")
    ds = Galaxy10(path, "train", size=None, seed=0)
    item = ds[0]
    i = int(ds.indices[0])
    with h5py.File(path) as fh:
        expected = fh["images"][i].transpose(2, 0, 1) / 255.0
    assert item["rgb"].dtype == torch.float32 and item["rgb"].shape == (3, 32, 32)
    np.testing.assert_allclose(item["rgb"].numpy(), expected, rtol=1e-6)
    assert item["label"].item() == i % 10


def test_resize_keeps_range(tmp_path) -> None:
    ds = Galaxy10(_write(tmp_path / "g.h5"), "val", size=16)
    rgb = ds[0]["rgb"]
    assert rgb.shape == (3, 16, 16) and 0.0 <= rgb.min() and rgb.max() <= 1.0


def test_split_is_seeded_disjoint_and_complete() -> None:
    a = galaxy10_splits(100, seed=1)
    assert np.array_equal(np.sort(np.concatenate(list(a.values()))), np.arange(100))
    assert [len(a[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert all(np.array_equal(a[s], galaxy10_splits(100, seed=1)[s]) for s in a)
    assert not np.array_equal(a["val"], galaxy10_splits(100, seed=2)["val"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": False}, "no 'images' dataset"),
        ({"ans": False}, "no 'ans' labels"),
        ({"dtype": np.float32}, "uint8 images of shape"),
    ],
)
def test_wrong_schema_names_what_is_missing(tmp_path, kwargs, message) -> None:
    with pytest.raises(UserError, match=message) as info:
        check_galaxy10(_write(tmp_path / "bad.h5", **kwargs))
    assert "\n" not in str(info.value)


def test_missing_or_non_hdf5_file(tmp_path) -> None:
    with pytest.raises(UserError, match="download Galaxy10_DECals.h5"):
        Galaxy10(tmp_path / "absent.h5")
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        check_galaxy10(tmp_path / "x.h5")


@pytest.mark.parametrize(
    ("n", "fractions", "message"),
    [
        (0, {}, r"holds 0 galaxies.*train/val/test split empty.*at least 3"),
        (1, {}, r"holds 1 galaxies.*the val/test split empty.*at least 3"),
        (20, {"val_fraction": 0.0}, r"the val split empty.*above 0"),
    ],
)
def test_a_file_too_small_to_split_is_a_one_line_error(tmp_path, n, fractions, message) -> None:
    # It crashed with an IndexError while building the empty validation set.
    from astrorestore.data.datamodules.photos import Galaxy10DataModule
    from astrorestore.data.pairings.colorization import ColorizationPairing

    path = _write(tmp_path / "g.h5", n=n)
    with pytest.raises(UserError, match=message):
        Galaxy10DataModule(ColorizationPairing(), None, path=str(path), patch_size=16, **fractions)
