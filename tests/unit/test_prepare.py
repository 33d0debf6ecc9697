"""Tests of prepare_folder: manifest, skips, splits, tile cache, normalisation, reuse, QC, CLI."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.preparation.manifest import SPLITS, split_counts
from astrorestore.data.preparation.prepare import main, prepare_folder
from astrorestore.data.preparation.tile_cache import Prepared, run_qc, tile_stats
from astrorestore.errors import UserError
from tests.unit.fits_factory import write_jwst, write_plain

KW = dict(tile_size=64, stride=32, progress=False)


def _jwst_folder(root, n=6, **kw):
    root.mkdir(exist_ok=True)
    for i in range(n):
        # Distinct RA per file: distinct pointings, so each frame is its own split group.
        write_jwst(root / f"jw{i:02d}_cal.fits", seed=i, gain=2.0, ra=150.0 + 0.01 * i, **kw)
    return root


def test_prepare_writes_manifest_splits_tiles_and_skips_bad_files(tmp_path) -> None:
    root = _jwst_folder(tmp_path / "frames")
    (root / "broken.fits").write_bytes(b"not a fits file at all")
    write_plain(root / "nan.fits", np.full((80, 80), np.nan, np.float32))
    write_plain(root / "tiny.fits", np.ones((32, 40), np.float32))
    prepared = prepare_folder(root, tmp_path / "cache", **KW)

    assert len(prepared.info["skipped"]) == 3
    assert {SPLITS[0]: 4, SPLITS[1]: 1, SPLITS[2]: 1} == {
        s: len(prepared.frames[s]) for s in SPLITS
    }
    assert all(len(prepared.tiles[s]) > 0 for s in SPLITS)
    with open(prepared.path / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["telescope"] == "JWST" and rows[0]["units"] == "MJy/sr"
    assert rows[0]["sha1"] == hashlib.sha1((root / rows[0]["path"]).read_bytes()).hexdigest()
    on_disk = json.loads((prepared.path / "splits.json").read_text())
    assert sorted(sum((on_disk[s] for s in SPLITS), [])) == sorted(r["path"] for r in rows)
    assert prepared.units == "electron" and prepared.has_sigma
    assert prepared.info["pixel_scale"] == pytest.approx(0.031)


def test_cached_values_are_electrons_and_normalisation_inverts(tmp_path) -> None:
    root = _jwst_folder(tmp_path / "frames", n=3)
    prepared = prepare_folder(root, tmp_path / "cache", **KW)
    row = prepared.frame_row("train", 0)
    written = write_jwst(tmp_path / "again.fits", seed=int(row.path[2:4]), gain=2.0)
    data, valid, sigma = prepared.frame("train", 0)
    factor = 100.0 * 2.0 / 0.5  # XPOSURE * GAIN / PHOTMJSR
    np.testing.assert_allclose(data[valid], written["data"][valid] * factor, rtol=1e-6)
    np.testing.assert_allclose(sigma[valid], factor, rtol=1e-5)  # ERR = 1 MJy/sr
    assert not valid[3, 4] and np.isnan(data[3, 4])

    rec = prepared.tiles["train"][0]
    tile = np.array(data[rec["y"] : rec["y"] + rec["h"], rec["x"] : rec["x"] + rec["w"]])
    assert rec["offset"] == pytest.approx(np.nanmedian(tile), rel=1e-5)
    norm = AsinhNormalizer(prepared.softening)
    x = torch.from_numpy(tile)
    off, sc = torch.tensor(rec["offset"]), torch.tensor(rec["scale"])
    back = norm.inverse(norm.forward(x, off, sc), off, sc)
    ok = torch.isfinite(x)
    torch.testing.assert_close(back[ok], x[ok], rtol=1e-5, atol=1e-3 * float(sc))


def test_cache_reused_then_invalidated_by_a_changed_file(tmp_path) -> None:
    root = _jwst_folder(tmp_path / "frames", n=3)
    first = prepare_folder(root, tmp_path / "cache", **KW)
    stamp = (first.path / "prepared.json").stat().st_mtime_ns
    again = prepare_folder(root, tmp_path / "cache", **KW)
    assert again.path == first.path
    assert (again.path / "prepared.json").stat().st_mtime_ns == stamp
    write_jwst(root / "jw00_cal.fits", seed=99, gain=2.0, ra=150.0)
    changed = prepare_folder(root, tmp_path / "cache", **KW)
    assert changed.path != first.path and not first.path.exists()
    other = prepare_folder(root, tmp_path / "cache", **{**KW, "stride": 64})
    assert other.path != changed.path


def test_mixed_units_and_scales_are_refused_unless_allowed(tmp_path) -> None:
    root = _jwst_folder(tmp_path / "units", n=2)
    write_plain(root / "plain.fits", np.ones((80, 80), np.float32), BUNIT="DN")
    with pytest.raises(UserError, match="mixes units") as info:
        prepare_folder(root, tmp_path / "c1", **KW)
    assert "\n" not in str(info.value)
    assert prepare_folder(root, tmp_path / "c2", allow_mixed=True, **KW).units == "mixed"

    scales = tmp_path / "scales"
    scales.mkdir()
    write_jwst(scales / "a.fits", gain=2.0, scale=0.031)
    write_jwst(scales / "b.fits", gain=2.0, scale=0.063, ra=151.0)
    with pytest.raises(UserError, match="mixes pixel scales"):
        prepare_folder(scales, tmp_path / "c3", **KW)


def test_empty_and_unusable_folders_fail_in_one_line(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no FITS files"):
        prepare_folder(tmp_path / "empty", tmp_path / "c", **KW)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.fits").write_bytes(b"garbage")
    write_plain(bad / "nan.fits", np.full((80, 80), np.nan, np.float32))
    with pytest.raises(UserError, match=r"none of the 2 FITS files.*; replace or remove the files"):
        prepare_folder(bad, tmp_path / "c", **KW)
    with pytest.raises(UserError, match="data.stride=0"):
        prepare_folder(bad, tmp_path / "c", tile_size=64, stride=0, progress=False)


def test_tile_compressed_frames_are_training_frames(tmp_path) -> None:
    from astropy.io import fits

    root = tmp_path / "fz"
    root.mkdir()
    data = np.random.default_rng(0).normal(100, 5, (80, 80)).astype(np.float32)
    sci = fits.CompImageHDU(data, name="SCI")
    sci.header["BUNIT"] = "electron"
    fits.HDUList([fits.PrimaryHDU(), sci]).writeto(root / "c4d_ooi.fits.fz")
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    assert sum(len(prepared.frames[s]) for s in SPLITS) == 1 and prepared.units == "electron"


def test_cube_folder_needs_plane(tmp_path) -> None:
    root = tmp_path / "cubes"
    root.mkdir()
    write_plain(root / "cube.fits", np.ones((2, 80, 80), np.float32))
    with pytest.raises(UserError, match="data.plane"):
        prepare_folder(root, tmp_path / "c", **KW)
    assert len(prepare_folder(root, tmp_path / "c", plane=1, **KW).frames["train"]) == 1


def test_small_frame_gives_one_tile_of_its_size(tmp_path) -> None:
    root = tmp_path / "small"
    root.mkdir()
    write_plain(root / "s.fits", np.random.default_rng(0).normal(5, 1, (70, 90)).astype(np.float32))
    prepared = prepare_folder(root, tmp_path / "c", tile_size=512, stride=256, progress=False)
    tiles = prepared.tiles["train"]
    assert len(tiles) == 1 and (tiles["h"][0], tiles["w"][0]) == (70, 90)
    assert len(prepared.frames["val"]) == 0  # one frame: nothing to validate on, no error


def test_exposures_of_one_pointing_share_a_split(tmp_path) -> None:
    root = tmp_path / "pairs"
    root.mkdir()
    for i in range(6):
        write_jwst(root / f"p{i}.fits", seed=i, gain=2.0, ra=150.0 + 0.01 * (i // 2))
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    split_of = {
        prepared.frame_row(s, i).path: s for s in SPLITS for i in range(len(prepared.frames[s]))
    }
    for i in range(0, 6, 2):
        assert split_of[f"p{i}.fits"] == split_of[f"p{i + 1}.fits"]


def test_qc_catches_leaks_and_bad_statistics(tmp_path) -> None:
    prepared = prepare_folder(_jwst_folder(tmp_path / "f", n=3), tmp_path / "c", **KW)
    leaked = Prepared.load(prepared.path)
    leaked.frames["val"].append(leaked.frames["train"][0])
    with pytest.raises(UserError, match="is in train and val"):
        run_qc(leaked)
    broken = Prepared.load(prepared.path)
    broken.tiles["train"]["scale"][0] = np.nan
    with pytest.raises(UserError, match="non-finite normalisation"):
        run_qc(broken)
    data = np.load(prepared.path / "train_data.npy", mmap_mode="r+")
    valid = np.load(prepared.path / "train_valid.npy", mmap_mode="r")
    data[int(np.flatnonzero(valid)[0])] = np.inf
    data.flush()
    del data
    with pytest.raises(UserError, match="non-finite valid pixels"):
        run_qc(Prepared.load(prepared.path))


def test_split_counts_keep_a_training_group() -> None:
    assert split_counts(1, 0.15, 0.15) == (1, 0, 0)
    assert split_counts(2, 0.15, 0.15) == (1, 1, 0)
    assert split_counts(20, 0.15, 0.15) == (14, 3, 3)


def test_cli_prints_summary_and_reports_errors(tmp_path, capsys) -> None:
    root = _jwst_folder(tmp_path / "f", n=3)
    args = [str(root), "--cache", str(tmp_path / "c"), "--tile-size", "64", "--stride", "32"]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "prepared 3 frames" in out and "units: electron" in out
    assert main([str(tmp_path / "missing"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: data.root=")


def test_tile_stats_match_the_normalizer() -> None:
    rng = np.random.default_rng(4)
    for softening in (1.0, 3.0):
        tile = rng.normal(50.0, 4.0, (64, 80)).astype(np.float32)
        tile[:5] = np.nan
        tile[rng.random(tile.shape) < 0.1] = np.nan
        tile[30, 30] = 1e5  # a star core: the medians must ignore it
        offset, scale = tile_stats(tile, softening)
        t_off, t_scale = AsinhNormalizer(softening).stats(torch.from_numpy(tile)[None, None])
        assert offset == pytest.approx(float(t_off), rel=1e-6)
        assert scale == pytest.approx(float(t_scale), rel=1e-5)
    flat = np.full((64, 64), 7.0, np.float32)  # constant: sigma 0, the floor applies
    assert tile_stats(flat, 3.0)[1] == pytest.approx(
        float(AsinhNormalizer().stats(torch.from_numpy(flat)[None, None])[1])
    )


def test_one_frame_is_cut_into_training_validation_and_test_bands(tmp_path, capsys) -> None:
    # Noise2Void on the one frame a user has: no second pointing to validate on, so the frame
    # is cut across its longer side into disjoint bands (it used to leave val and test empty,
    # and training then stopped: "the val split ... has no tiles", whatever the fractions).
    root = tmp_path / "one"
    root.mkdir()
    yy, xx = np.mgrid[:300, :200]
    data = (1000.0 * yy + xx).astype(np.float32)
    write_plain(root / "f.fits", data)
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    run_qc(prepared)
    pieces = {s: prepared.frame(s, 0)[0] for s in SPLITS}
    assert [pieces[s].shape for s in SPLITS] == [(172, 200), (64, 200), (64, 200)]
    np.testing.assert_array_equal(np.concatenate([pieces[s] for s in SPLITS]), data)
    assert all(len(prepared.tiles[s]) for s in SPLITS)
    # The summary counts the one file, and its splits as bands (it said "prepared 3 frames").
    assert main([str(root), "--cache", str(tmp_path / "c"), "--tile-size", "64", "--stride",
                 "32", "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "prepared 1 frame (" in out and "val  :    1 bands" in out
    # Wider than tall: cut across columns; too narrow for a test band beside the others:
    # training and validation only.
    write_plain(root / "f.fits", data[:100, :150])
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    assert [prepared.frame(s, 0)[0].shape for s in SPLITS[:2]] == [(100, 86), (100, 64)]
    np.testing.assert_array_equal(prepared.frame("val", 0)[0], data[:100, 86:150])
    assert not prepared.frames["test"]


def test_exposures_of_one_pointing_are_cut_into_the_same_bands(tmp_path) -> None:
    root = tmp_path / "pair"
    root.mkdir()
    for i in range(2):
        write_jwst(root / f"p{i}.fits", (256, 160), seed=i, gain=2.0)
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    for s in SPLITS:
        rows = {prepared.frame_row(s, i).path for i in range(len(prepared.frames[s]))}
        shapes = {prepared.frame(s, i)[0].shape for i in range(len(prepared.frames[s]))}
        assert rows == {"p0.fits", "p1.fits"} and len(shapes) == 1


def test_one_mosaic_is_cut_within_its_valid_pixels(tmp_path) -> None:
    # An i2d-like mosaic with an empty (NaN) border: bands cut over the whole frame put the
    # test band in the border, and QC failed ("split test has frames but no tile").
    root = tmp_path / "mosaic"
    root.mkdir()
    data = np.random.default_rng(0).normal(50, 5, (320, 200)).astype(np.float32)
    data[220:] = np.nan
    write_plain(root / "m_i2d.fits", data)
    prepared = prepare_folder(root, tmp_path / "c", **KW)
    for s in SPLITS:
        band, valid, _ = prepared.frame(s, 0)
        assert valid.sum() >= 64 * 200 and len(prepared.tiles[s])


def test_a_patch_wider_than_the_validation_band_names_its_fraction(tmp_path) -> None:
    from astrorestore.data.sources.tile_dataset import FixedTileCrops

    root = tmp_path / "one"
    root.mkdir()
    write_plain(root / "f.fits", np.random.default_rng(0).normal(50, 5, (256, 256)))
    prepared = prepare_folder(root, tmp_path / "c", tile_size=128, stride=64, progress=False)
    with pytest.raises(UserError, match=r"patch_size <= 64, or widen the val band .*val_fraction"):
        FixedTileCrops(prepared, "val", 128, n=4)


@pytest.mark.parametrize("gain", [-1.0, 0.0, float("nan")])
def test_a_non_positive_gain_is_refused_before_any_work(tmp_path, gain) -> None:
    # data.gain=-1 reached the tile cache and failed its QC ("non-positive noise sigma ...
    # report it if it repeats"), as if the cache were broken.
    root = _jwst_folder(tmp_path / "f", n=2)
    with pytest.raises(UserError, match=r"data.gain=.* is invalid: use the detector gain"):
        prepare_folder(root, tmp_path / "c", **KW, gain=gain)
    assert not (tmp_path / "c").exists()


def test_with_exposure_pairs_single_exposures_only_train(tmp_path) -> None:
    # data.pairs=true: two pointings of two exposures and two lone exposures. A lone exposure
    # drawn into val or test left that split without a pair, and training stopped or not
    # depending on data.seed ("no two test frames ... share a pointing id").
    root = tmp_path / "pairs"
    root.mkdir()
    for i, pointing in enumerate([0, 0, 1, 1, 2, 3]):
        write_jwst(root / f"p{i}.fits", seed=i, gain=2.0, ra=150.0 + 0.01 * pointing)
    for seed in range(4):
        prepared = prepare_folder(root, tmp_path / f"c{seed}", **KW, seed=seed, pairs=True)
        for s in SPLITS:
            groups = [prepared.frame_row(s, i).group for i in range(len(prepared.frames[s]))]
            assert all(groups.count(g) == 2 for g in groups) or s == "train", (seed, s, groups)
        assert prepared.frames["val"]
    # Without pairs the lone exposures are split like any pointing, in a cache of its own.
    plain = prepare_folder(root, tmp_path / "c0", **KW, seed=0)
    assert plain.path != prepare_folder(root, tmp_path / "c0", **KW, seed=0, pairs=True).path
