"""Tests of the datasets over a prepared tile cache: random/fixed crops and exposure pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from astrorestore.data.preparation.prepare import prepare_folder
from astrorestore.data.sources.tile_dataset import ExposurePairs, FixedTileCrops, RandomTileCrops
from astrorestore.errors import UserError
from tests.unit.fits_factory import write_jwst, write_plain

P = 32


def _coded_frame(tmp_path, nan_left: int = 0):
    """One plain 128x128 frame whose value encodes its position: v = 1000 y + x."""
    root = tmp_path / "coded"
    root.mkdir()
    yy, xx = np.mgrid[:128, :128]
    data = (1000.0 * yy + xx).astype(np.float32)
    data[:, :nan_left] = np.nan
    write_plain(root / "f.fits", data)
    # No validation or test split: the whole frame is the training split (one frame of one
    # pointing would otherwise be cut into bands).
    prepared = prepare_folder(
        root, tmp_path / "c", tile_size=128, stride=64, val_fraction=0.0, test_fraction=0.0,
        progress=False,
    )  # fmt: skip
    return prepared, data


def _orientations(window: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(window, k)
        out += [r, r[:, ::-1]]
    return out


def test_random_crops_are_oriented_windows_of_the_frame(tmp_path) -> None:
    prepared, data = _coded_frame(tmp_path)
    ds = RandomTileCrops(prepared, "train", P, length=16)
    torch.manual_seed(0)
    for i in range(16):
        item = ds[i]
        assert item["noisy"].shape == (1, P, P) and item["noisy"].dtype == torch.float32
        assert item["valid"].dtype == torch.bool and item["valid"].all()
        assert "sigma" not in item and item["offset"].shape == (1, 1, 1)
        crop = item["noisy"][0].numpy()
        y, x = int(crop.min() // 1000), int(crop.min() % 1000)  # top-left of the window
        window = data[y : y + P, x : x + P]
        assert any(np.array_equal(crop, o) for o in _orientations(window))


def test_random_crops_reject_mostly_invalid_windows(tmp_path) -> None:
    prepared, _ = _coded_frame(tmp_path, nan_left=64)  # the tile is half NaN
    ds = RandomTileCrops(prepared, "train", P, length=40)
    torch.manual_seed(1)
    fractions = [ds[i]["valid"].float().mean().item() for i in range(40)]
    assert min(fractions) >= 0.5
    item = ds[0]
    assert torch.isfinite(item["noisy"]).all()  # invalid pixels filled, never NaN
    assert torch.all(item["noisy"][~item["valid"]] == item["offset"].flatten())


def test_random_crops_are_seeded_per_rank(tmp_path) -> None:
    prepared, _ = _coded_frame(tmp_path)

    def draw(rank: int) -> torch.Tensor:
        ds = RandomTileCrops(prepared, "train", P, length=4)
        ds.rank = rank
        torch.manual_seed(3)
        return torch.stack([ds[i]["noisy"] for i in range(4)])

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_patch_size_and_empty_split_errors(tmp_path) -> None:
    prepared, _ = _coded_frame(tmp_path)
    with pytest.raises(UserError, match=r"data.patch_size=256 is larger than every train tile"):
        RandomTileCrops(prepared, "train", 256, length=4)
    with pytest.raises(UserError, match="the val split .* has no frames: .* second pointing"):
        FixedTileCrops(prepared, "val", P, n=4)


def test_fixed_crops_are_deterministic_and_spread(tmp_path) -> None:
    prepared, data = _coded_frame(tmp_path, nan_left=20)
    a = FixedTileCrops(prepared, "train", P, n=9)
    b = FixedTileCrops(prepared, "train", P, n=9)
    assert len(a) == 9
    corners = set()
    for i in range(9):
        assert torch.equal(a[i]["noisy"], b[i]["noisy"])
        assert a[i]["valid"].float().mean() >= 0.5
        corners.add(tuple(a.crops[i][1:]))
    assert len(corners) == 9


def test_exposure_pairs_match_regions_and_rescale_exposure(tmp_path) -> None:
    root = tmp_path / "pairs"
    root.mkdir()
    # Same sky (same seed) seen for 100 s and 300 s at one pointing: in electrons the second is
    # 3x the first, so after rescaling noisy2 must equal noisy wherever both are valid.
    write_jwst(root / "a_cal.fits", seed=5, gain=2.0, xposure=100.0)
    write_jwst(root / "b_cal.fits", seed=5, gain=2.0, xposure=300.0)
    write_jwst(root / "c_cal.fits", seed=6, gain=2.0, ra=151.0)  # another field: no partner
    prepared = prepare_folder(
        root,
        tmp_path / "c",
        tile_size=64,
        stride=32,
        val_fraction=0.0,
        test_fraction=0.0,
        progress=False,
    )
    ds = ExposurePairs(prepared, "train", P, length=8)
    torch.manual_seed(0)
    for i in range(8):
        item = ds[i]
        v = item["valid"][0]
        assert {"noisy", "noisy2", "valid", "sigma", "sigma2"} <= item.keys()
        torch.testing.assert_close(item["noisy2"][0][v], item["noisy"][0][v], rtol=1e-5, atol=0)
        torch.testing.assert_close(item["sigma2"][0][v], item["sigma"][0][v])
    fixed = ExposurePairs(prepared, "train", P, length=4, fixed_seed=7)
    again = ExposurePairs(prepared, "train", P, length=4, fixed_seed=7)
    torch.manual_seed(123)  # fixed pairs ignore the global seed
    assert all(torch.equal(fixed[i]["noisy"], again[i]["noisy"]) for i in range(4))


def test_exposure_pairs_need_a_shared_pointing(tmp_path) -> None:
    root = tmp_path / "single"
    root.mkdir()
    write_jwst(root / "a.fits", gain=2.0)
    write_jwst(root / "b.fits", gain=2.0, ra=151.0)
    prepared = prepare_folder(
        root,
        tmp_path / "c",
        tile_size=64,
        stride=32,
        val_fraction=0.0,
        test_fraction=0.0,
        progress=False,
    )
    # The line says what makes a pointing and which keys to use instead (it said "use
    # injected-noise pairs" without naming a key).
    with pytest.raises(UserError, match=r"share a pointing id \(same instrument.*WCS") as info:
        ExposurePairs(prepared, "train", P, length=4)
    assert "model=n2v" in str(info.value) and "data.deep_as_clean=true" in str(info.value)
