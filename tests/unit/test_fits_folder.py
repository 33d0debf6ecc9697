"""The FITS-folder data module: what it provides per mode, splits, masks, demo frames, and how
its normalisation compares with the whole-image normalisation of inference."""

import numpy as np
import pytest
import torch
from astropy.io import fits

from astrorestore.data.corruption.noise import GaussianNoise, PoissonGaussianNoise
from astrorestore.data.datamodules.fits_folder import FitsFolderDataModule, SourceTileCrops
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.base import Noise2NoisePairing, Pairing, SupervisedPairing
from astrorestore.data.preparation.tile_cache import tile_stats
from astrorestore.data.simulation.scene import render_field
from astrorestore.data.sources.demo_frames import DEMO_GAIN, ensure_demo_frames, write_demo_frames
from astrorestore.errors import UserError
from tests.unit.fits_factory import sky, write_plain


class AsObserved(Pairing):
    """The frame as it is, as input and target (a stand-in for a self-supervised pairing)."""

    def __call__(self, batch, generator=None):
        noisy, _ = self.observe(batch, generator)
        return self._finish({"input": noisy, "target": noisy}, batch)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three pointings x two exposures of small JWST-like frames."""
    path = tmp_path_factory.mktemp("frames")
    write_demo_frames(path, n_pointings=3, size=128, seed=3)
    return path


def _module(folder, pairing=None, **kw):
    options = dict(
        root=str(folder),
        cache_dir=str(folder.parent / f"cache-{folder.name}"),
        name="jwst",
        tile_size=64,  # tiles smaller than the frames: their statistics differ
        stride=32,
        patch_size=32,
        batch_size=4,
        patches_per_epoch=8,
        val_patches=16,
        gain=DEMO_GAIN,
        progress=False,
    )
    options.update(kw)
    return FitsFolderDataModule(pairing or AsObserved(), AsinhNormalizer(3.0), **options)


def test_provides_follow_the_mode_and_refusals_name_the_fix(folder, tmp_path):
    assert _module(folder).provides == {"noisy", "valid"}
    assert not _module(folder).has_truth
    pairs = _module(folder, Noise2NoisePairing(), pairs=True)
    assert pairs.provides == {"noisy", "noisy2", "valid"}
    deep = _module(folder, SupervisedPairing(GaussianNoise(sigma=5.0)), deep_as_clean=True)
    assert deep.provides == {"clean", "valid"} and deep.has_truth
    with pytest.raises(UserError, match="deep_as_clean=true") as info:
        _module(folder, SupervisedPairing(GaussianNoise(sigma=5.0)))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="exclude each other"):
        _module(folder, pairs=True, deep_as_clean=True)
    with pytest.raises(UserError, match="needs data.root"):
        _module(folder, root=None)
    with pytest.raises(UserError, match="holds no FITS files"):
        _module(tmp_path)
    with pytest.raises(UserError, match="data.n_stars is not a setting"):
        _module(folder, n_stars=3)
    _module(folder, field_size=128, val_patches_per_field=4)  # debug=tiny's keys are ignored


def test_splits_are_whole_pointings_and_masks_reach_the_loss(folder):
    dm = _module(folder)
    dm.prepare_data()
    dm.setup("fit")
    prepared = dm.prepared
    pointings = {
        s: {prepared.frame_row(s, i).pointing_id for i in range(len(prepared.frames[s]))}
        for s in ("train", "val", "test")
    }
    assert all(len(p) == 1 for p in pointings.values())  # 3 pointings -> one per split
    assert len(set.union(*pointings.values())) == 3
    assert all(len(prepared.frames[s]) == 2 for s in pointings)  # both exposures together
    crops = dm.build_sets()[1].dataset.crops  # deterministic: the same crops as val_set
    batch = dm.on_after_batch_transfer(dm.val_set.tensors, 0)
    expected = []
    for t, y, x in crops:
        frame = int(prepared.tiles["val"][t]["frame"])
        _, valid, _ = prepared.frame("val", frame)
        expected.append(valid[y : y + 32, x : x + 32])
    expected = torch.from_numpy(np.stack(expected))[:, None]
    assert torch.equal(batch["loss_mask"], expected)
    assert (~expected).sum() > 0  # the demo's DQ-flagged and NaN pixels are in there
    assert torch.isfinite(batch["input"]).all()
    # the per-pixel noise map rides along, in the cache's units (electrons)
    assert "sigma" in batch and (batch["sigma"][expected] > 0).all()
    train = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert train["loss_mask"].dtype == torch.bool and train["input"].shape == (4, 1, 32, 32)


def test_crops_are_normalised_exactly_as_inference_normalises_the_whole_frame(folder):
    dm = _module(folder)
    dm.setup("fit")
    prepared, dataset = dm.prepared, dm.build_sets()[1].dataset
    batch = dm.on_after_batch_transfer(dm.val_set.tensors, 0)
    norm = AsinhNormalizer(3.0)
    for i, (t, y, x) in enumerate(dataset.crops[:6]):
        row = prepared.frame_row("val", int(prepared.tiles["val"][t]["frame"]))
        with fits.open(folder / row.path) as hdul:
            image = torch.from_numpy(hdul["SCI"].data.astype(np.float32))[None, None]
        offset, scale = norm.stats(image)  # what infer.py computes, in MJy/sr
        z = norm.forward(image, offset, scale)[0, 0, y : y + 32, x : x + 32]
        valid = batch["loss_mask"][i, 0]
        # the cache holds electrons: statistics scale with the unit, normalised values agree
        torch.testing.assert_close(batch["input"][i, 0][valid], z[valid], atol=2e-3, rtol=1e-3)
        assert batch["offset"][i].item() == pytest.approx(offset.item() * row.to_electrons, 1e-3)


def test_per_patch_normalisation_of_injected_noise_barely_differs_on_a_full_frame():
    """deep_as_clean normalises each crop on its own statistics (its noise is drawn per batch),
    inference the whole frame. On a 2048 px NIRCam-sized field the crop statistics stay within
    a fraction of the noise of the frame's: smaller than what the network sees between two
    noise draws of one crop, so the difference does not matter."""
    size, p = 2048, 64
    density = (size / 256) ** 2
    clean, _ = render_field(
        size, np.random.default_rng(1), n_stars=int(60 * density), n_galaxies=int(25 * density)
    )
    noise = PoissonGaussianNoise(read_noise=5.0)
    draws = [
        noise(torch.from_numpy(clean)[None, None], torch.Generator().manual_seed(s))[0][0, 0]
        for s in (0, 1)
    ]
    frame_offset, frame_scale = tile_stats(draws[0].numpy(), 3.0)
    sigma = frame_scale / 3.0
    offset_gap, scale_gap, draw_gap = [], [], []
    for y in range(0, size, p):
        for x in range(0, size, p):
            a = tile_stats(draws[0][y : y + p, x : x + p].numpy(), 3.0)
            b = tile_stats(draws[1][y : y + p, x : x + p].numpy(), 3.0)
            offset_gap.append(abs(a[0] - frame_offset) / sigma)
            scale_gap.append(abs(a[1] / frame_scale - 1))
            draw_gap.append(abs(a[1] / b[1] - 1))
    assert np.percentile(offset_gap, 99) < 0.3  # sky: within 0.3 sigma in 99 % of crops
    assert np.percentile(scale_gap, 90) < 0.06  # noise scale: within 6 % in 90 %
    # ...which is the jitter the network already sees between two noise draws of a crop
    assert np.median(scale_gap) < 1.5 * np.median(draw_gap)


def test_demo_frames_are_written_once_and_reused(tmp_path, caplog):
    caplog.set_level("INFO")
    folder = ensure_demo_frames(tmp_path / "demo")
    files = sorted(folder.glob("*_cal.fits"))
    assert len(files) == 10 and "writing simulated JWST-like frames" in caplog.text
    stamp = [f.stat().st_mtime_ns for f in files]
    caplog.clear()
    ensure_demo_frames(tmp_path / "demo")
    assert [f.stat().st_mtime_ns for f in files] == stamp
    assert "using the embedded simulated" in caplog.text
    with fits.open(files[0]) as hdul:
        sci = hdul["SCI"].header
        assert sci["BUNIT"] == "MJy/sr" and sci["PHOTMJSR"] > 0 and sci["CTYPE1"] == "RA---TAN"
        assert "GAIN" not in sci  # like real JWST products
        assert {"ERR", "DQ", "VAR_POISSON", "VAR_RNOISE"} <= {h.name for h in hdul}
        dq, data = hdul["DQ"].data, hdul["SCI"].data
        assert (dq & 1).any() and np.isnan(data[(dq & 1) > 0]).all()
        assert ((dq & (1 << 11)) > 0).sum() == 3


def test_demo_module_without_root_uses_the_demo_gain(tmp_path):
    dm = FitsFolderDataModule(
        SupervisedPairing(PoissonGaussianNoise()),
        AsinhNormalizer(),
        demo_dir=str(tmp_path / "demo"),
        name="jwst",
        deep_as_clean=True,
        patch_size=32,
        val_patches=4,
        progress=False,
    )
    dm.setup("fit")
    assert dm.prepared.units == "electron"
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert {"input", "target", "truth", "loss_mask"} <= set(batch)


def test_poisson_noise_on_frames_not_in_electrons_is_refused(folder):
    dm = _module(folder, SupervisedPairing(PoissonGaussianNoise()), deep_as_clean=True, gain=None)
    with pytest.raises(UserError, match="needs frames in electrons"):
        dm.setup("fit")


def test_source_patch_fraction_draws_crops_with_sources(folder):
    dm = _module(folder)
    dm.setup("fit")
    crops = SourceTileCrops(dm.prepared, "train", 32, 20, source_patch_fraction=1.0, softening=3.0)
    assert sum(crops._has_source(crops[i]) for i in range(20)) >= 18
    assert "source_patch_fraction" in dm.stage_settings()
    assert "exposure_range" not in _module(folder, AsObserved(GaussianNoise())).stage_settings()


def test_brightness_augmentation_moves_the_frame_statistics_with_the_flux(folder):
    from astrorestore.data.augment import Augment

    dm = _module(folder)
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    plain = dm.on_after_batch_transfer(dict(raw), 0)
    dm.augment = Augment(flips=False, rot90=False, brightness_range=[2.0, 2.0])
    brighter = dm.on_after_batch_transfer(dict(raw), 0)
    torch.testing.assert_close(brighter["offset"], 2 * plain["offset"])
    torch.testing.assert_close(brighter["sigma"], 2 * plain["sigma"])
    torch.testing.assert_close(brighter["input"], plain["input"], atol=1e-5, rtol=1e-5)


def test_a_folder_too_small_for_a_test_split_trains_without_one(folder, tmp_path):
    # Two single frames (two pointing groups): one trains, one validates, none is left to test;
    # with data.test_fraction=0 there is no test split either. Both used to be refused at
    # set-up ("the test split ... has no tiles"), whatever data.test_fraction was.
    two = tmp_path / "two"
    two.mkdir()
    for i in range(2):
        write_plain(two / f"f{i}.fits", sky((96, 96), seed=i, level=50.0, sigma=5.0))
    for dm in (_module(two, gain=None), _module(folder, test_fraction=0.0)):
        dm.prepare_data()
        dm.setup("fit")
        assert dm.test_set is None and len(dm.val_set) > 0 and len(dm.train_set) > 0
        with pytest.raises(UserError, match="no test split"):
            dm.test_dataloader()
    pairs = _module(folder, Noise2NoisePairing(), pairs=True, test_fraction=0.0)
    pairs.setup("fit")
    assert pairs.test_set is None and len(pairs.val_set) > 0


def test_the_target_mode_hint_follows_only_a_pairing_refusal(folder):
    # "(or ... data.pairs=true for repeated exposures)" was appended to every set-up error of
    # single frames, e.g. structN2V's refusal of rotations, where pairs are no answer.
    from astrorestore.data.augment import Augment
    from astrorestore.data.pairings.blind_spot import BlindSpotPairing

    struct = BlindSpotPairing(struct_axis="row")
    with pytest.raises(UserError, match="rotates? the noise") as info:
        _module(folder, struct, augment=Augment(rot90=True))
    assert "data.pairs" not in str(info.value)
    with pytest.raises(UserError, match="batch_size") as info:
        _module(folder, batch_size=0)
    assert "data.pairs" not in str(info.value)
    with pytest.raises(UserError, match="data.pairs=true for repeated exposures"):
        _module(folder, Noise2NoisePairing())


def test_map_crops_carry_their_frame_sky_map_as_the_offset(folder):
    dm = _module(folder, cache_dir=str(folder.parent / "cache-map"))
    dm.normalizer = AsinhNormalizer(3.0, background="map")
    dm.setup("fit")
    prepared, dataset = dm.prepared, dm.build_sets()[1].dataset
    batch = dm.on_after_batch_transfer(dm.val_set.tensors, 0)
    assert batch["offset"].shape == batch["input"].shape
    for i, (t, y, x) in enumerate(dataset.crops[:4]):
        frame = int(prepared.tiles["val"][t]["frame"])
        data, _, _ = prepared.frame("val", frame)
        whole = torch.from_numpy(np.array(data, np.float32))[None, None]
        offset, scale = dm.normalizer.frame_stats(whole)  # what infer.py computes, whole frame
        window = (slice(y, y + 32), slice(x, x + 32))
        torch.testing.assert_close(batch["offset"][i, 0], offset[0, 0][window])
        valid = batch["loss_mask"][i, 0]
        z = dm.normalizer.forward(whole, offset, scale)[0, 0][window]
        torch.testing.assert_close(batch["input"][i, 0][valid], z[valid], atol=2e-3, rtol=1e-3)
    # Training crops carry theirs too, and the maps are cached next to the tiles.
    train = next(iter(dm.train_dataloader()))
    assert train["background"].shape == train["noisy"].shape
    assert list(prepared.path.glob("frame_sky_*_train.npy"))


def test_map_with_exposure_pairs_and_no_test_split(folder):
    pairs = _module(folder, Noise2NoisePairing(), pairs=True, test_fraction=0.0)
    pairs.normalizer = AsinhNormalizer(3.0, background="map")
    pairs.setup("fit")
    assert pairs.test_set is None
    assert pairs.val_set.tensors["background"].shape == pairs.val_set.tensors["input"].shape


def test_pair_key_trains_noise2noise_on_two_registered_frames_of_one_field(tmp_path):
    # Two exposures of one field without a WCS (the real-frame bench's N2N pair): data.pairs
    # found no pair; data.pair_key names the header keyword that says they are one field.
    two = tmp_path / "pair"
    two.mkdir()
    for i in range(2):
        write_plain(two / f"e{i}.fits", sky((160, 96), seed=i, level=50.0, sigma=5.0), OBJECT="F")
    with pytest.raises(UserError, match="data.pair_key"):
        _module(two, Noise2NoisePairing(), pairs=True, gain=None).setup("fit")
    dm = _module(two, Noise2NoisePairing(), pairs=True, gain=None, pair_key="object")
    dm.setup("fit")  # one field: each frame cut into aligned training/validation bands
    item = dm.train_set[0]
    assert set(item) >= {"noisy", "noisy2", "valid"}
    assert not torch.equal(item["noisy"], item["noisy2"])  # two exposures, not one twice
    assert len(dm.val_set) > 0
    with pytest.raises(UserError, match="data.pair_key"):
        _module(two, Noise2NoisePairing(), pairs=True, pair_key="NOT A KEYWORD")
