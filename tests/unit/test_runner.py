import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from omegaconf import OmegaConf
from PIL import Image

import astrorestore
from astrorestore.checkpoint import pretrained_path
from astrorestore.data.normalization.asinh import AsinhNoise
from astrorestore.errors import UserError
from astrorestore.inference.restorer import NetForward, Restorer
from astrorestore.inference.runner import run_inference
from astrorestore.inference.settings import InferSettings
from astrorestore.postprocess import build_postprocess


class NanNormalizer:
    def stats(self, x):
        x = torch.where(torch.isfinite(x), x, torch.full_like(x, float("nan")))
        flat = x.flatten(2)
        offset = flat.nanmedian(dim=2).values[..., None, None]
        mean = flat.nanmean(dim=2, keepdim=True)
        scale = ((flat - mean) ** 2).nanmean(dim=2).sqrt().clamp_min(1e-6)[..., None, None]
        return offset, scale

    def forward(self, x, offset, scale):
        return (x - offset) / scale

    def inverse(self, z, offset, scale):
        return z * scale + offset


def FakeRestorer(ckpt_path: str, device: str, postprocess=None, gain=1.0) -> Restorer:  # noqa: N802
    conv = torch.nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
    return Restorer(
        fn=NetForward(conv.eval()),
        normalizer=NanNormalizer(),
        in_channels=1,
        out_channels=1,
        scale=1,
        size_multiple=8,
        device=torch.device(device),
        name="fake-blur",
        ckpt_path=ckpt_path,
        # what load_restorer builds from a checkpoint storing no stages
        postprocess=build_postprocess(postprocess, AsinhNoise(3.0), gain),
    )


class Loader:
    def __init__(self) -> None:
        self.calls = []

    def __call__(self, ckpt_path, device, **postprocess):
        self.calls.append((ckpt_path, device))
        return FakeRestorer(ckpt_path, device, **postprocess)


def make_cfg(inp, out, **over):
    cfg = {
        "ckpt_path": "/models/fake.ckpt",
        "input": str(inp),
        "output": str(out),
        "tile_size": 32,
        "overlap": 8,
        "batch_size": 4,
        "device": "cpu",
        "hdu": None,
        "progress": False,
    }
    cfg.update(over)
    return OmegaConf.create(cfg)


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def noisy(shape, seed=0):
    return np.random.default_rng(seed).normal(500.0, 20.0, size=shape).astype(np.float32)


def write_mef(path):
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = ("TestScope", "telescope")
    primary.header["EXPTIME"] = 30.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [30.5, 25.5]
    wcs.wcs.cdelt = [-0.0002, 0.0002]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs_header = wcs.to_header()
    data = noisy((50, 60))
    sci = fits.ImageHDU(data, header=wcs_header, name="SCI")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.arange(4, dtype=np.float32))], name="CAT"
    )
    fits.HDUList([primary, sci, table]).writeto(path)
    return data, wcs_header


def test_mef_fits_end_to_end(tmp_path, capsys):
    src = tmp_path / "field.fits"
    data, wcs_header = write_mef(src)
    before = digest(src)
    loader = Loader()
    out = tmp_path / "out" / "restored.fits"
    written = run_inference(make_cfg(src, out), loader)
    assert written == [out]
    assert loader.calls == [("/models/fake.ckpt", "cpu")]
    assert digest(src) == before
    with fits.open(src) as orig, fits.open(out) as res:
        assert [h.name for h in res] == [h.name for h in orig]
        assert res[0].header["TELESCOP"] == "TestScope"
        for key in wcs_header:
            assert res["SCI"].header[key] == orig["SCI"].header[key], key
        hdr = res["SCI"].header
        assert hdr["ARMODEL"] == "fake-blur"
        assert hdr["ARCKPT"] == "fake.ckpt"
        assert hdr["ARVERS"] == astrorestore.__version__
        history = "\n".join(str(h) for h in hdr["HISTORY"])
        assert "fake-blur" in history and "tile_size=32" in history
        restored = res["SCI"].data
        assert restored.shape == data.shape
        assert restored.std() < 0.5 * data.std()
        np.testing.assert_array_equal(res["CAT"].data["flux"], orig["CAT"].data["flux"])
    line = capsys.readouterr().out.strip()
    assert line == line.splitlines()[0] and "-> " in line and "(50x60," in line


def test_output_equals_input_is_refused(tmp_path):
    src = tmp_path / "field.fits"
    write_mef(src)
    before = digest(src)
    with pytest.raises(UserError, match="output path equals the input"):
        run_inference(make_cfg(src, src), Loader())
    assert digest(src) == before


@pytest.mark.parametrize("key", ["input", "output"])
def test_required_keys(tmp_path, key):
    with pytest.raises(UserError, match=f"{key} is required"):
        run_inference(make_cfg(tmp_path / "a.fits", tmp_path / "o", **{key: None}), Loader())


@pytest.mark.parametrize("ckpt_path", [None, "pretrained"])
def test_no_checkpoint_restores_with_the_shipped_weights(ckpt_path):
    settings = InferSettings.from_config(make_cfg("a.fits", "o.fits", ckpt_path=ckpt_path))
    assert settings.ckpt_path == str(pretrained_path())


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="input file not found"):
        run_inference(make_cfg(tmp_path / "nope.fits", tmp_path / "out"), Loader())


def test_cube_refused(tmp_path):
    src = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((4, 40, 40), np.float32)).writeto(src)
    with pytest.raises(UserError, match="3-D cube"):
        run_inference(make_cfg(src, tmp_path / "out"), Loader())
    assert not (tmp_path / "out").exists()


def test_a_corrupt_frame_in_a_folder_is_recorded_and_skipped(tmp_path):
    # A survey must not stop at one bad frame: the others are restored, the bad one is listed
    # in the manifest with its reason, and the run ends with an error naming it.
    inputs = tmp_path / "in"
    inputs.mkdir()
    fits.PrimaryHDU(noisy((40, 40))).writeto(inputs / "a_good.fits")
    fits.PrimaryHDU(noisy((40, 40))).writeto(tmp_path / "full.fits")
    (inputs / "b_bad.fits").write_bytes((tmp_path / "full.fits").read_bytes()[:4000])
    fits.PrimaryHDU(noisy((40, 40), seed=2)).writeto(inputs / "c_good.fits")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"1 of 3 frame\(s\) failed.*cannot read .*b_bad.fits"):
        run_inference(make_cfg(inputs, out), Loader())
    assert sorted(p.name for p in out.glob("*.fits")) == ["a_good.fits", "c_good.fits"]
    frames = {Path(row["input"]).name: row for row in manifest(out)["frames"]}
    assert [frames[n]["status"] for n in sorted(frames)] == ["done", "failed", "done"]
    assert "truncated" in frames["b_bad.fits"]["error"]
    assert frames["a_good.fits"]["mp_per_s"] > 0 and frames["a_good.fits"]["error"] is None


def test_fz_output_for_an_uncompressed_input_fails_before_writing(tmp_path):
    src = tmp_path / "field.fits"
    write_mef(src)
    with pytest.raises(UserError, match=r"field\.fits: output .*not tile-compressed"):
        run_inference(make_cfg(src, tmp_path / "out" / "field.fits.fz"), Loader())
    assert not (tmp_path / "out").exists()


def test_cutouts_smaller_than_the_tile_use_a_fitted_tile(tmp_path):
    # One tile_size serves a folder of a frame and a cut-out smaller than the tile.
    inputs = tmp_path / "in"
    inputs.mkdir()
    big, small = noisy((48, 48)), noisy((20, 44), seed=1)
    fits.PrimaryHDU(big).writeto(inputs / "big.fits")
    fits.PrimaryHDU(small).writeto(inputs / "small.fits")
    run_inference(make_cfg(inputs, tmp_path / "out"), Loader())
    with fits.open(tmp_path / "out" / "small.fits") as hdul:
        out, history = hdul[0].data, "\n".join(str(h) for h in hdul[0].header["HISTORY"])
    assert out.shape == small.shape and np.isfinite(out).all()
    # 16 = the largest multiple of the model's 8 within the 20 px side; overlap 8 -> 16 // 4
    assert "tile_size=16 (fitted to the image) overlap=4" in history
    assert np.std(out) < 0.6 * np.std(small)  # restored (the fake model blurs), not copied
    with fits.open(tmp_path / "out" / "big.fits") as hdul:
        assert "tile_size=32 overlap=8 (tiled" in "\n".join(map(str, hdul[0].header["HISTORY"]))


def test_image_smaller_than_the_model_accepts(tmp_path):
    np.save(tmp_path / "thin.npy", noisy((6, 40)))
    with pytest.raises(UserError, match=r"6x40, smaller than the smallest tile .* \(8 px\)"):
        run_inference(make_cfg(tmp_path / "thin.npy", tmp_path / "out"), Loader())
    assert not (tmp_path / "out").exists()


def test_tile_not_multiple_fails_before_writing(tmp_path):
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="tile_size=24"):
        run_inference(make_cfg(tmp_path / "a.npy", out, tile_size=30, overlap=4), Loader())
    assert not out.exists()


def test_folder_of_pngs(tmp_path, capsys):
    inputs = tmp_path / "pngs"
    inputs.mkdir()
    for i, name in enumerate(("one.png", "two.png")):
        arr = np.clip(noisy((40, 48), seed=i) / 4, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(inputs / name)
    (inputs / "notes.txt").write_text("observing log")
    (inputs / ".DS_Store").write_bytes(b"")
    out = tmp_path / "out"
    written = run_inference(make_cfg(inputs, out), Loader())
    assert [p.name for p in written] == ["one.png", "two.png"]
    # the file that is not an image is named, not silently dropped (hidden files go unmentioned)
    printed = capsys.readouterr().out
    assert "1 file(s) skipped, not a supported image: notes.txt" in printed
    assert ".DS_Store" not in printed
    for p in written:
        arr = np.asarray(Image.open(p))
        assert arr.dtype == np.uint8 and arr.shape == (40, 48)


def test_glob_rgb_png(tmp_path):
    rgb = np.clip(np.stack([noisy((40, 40), s) / 4 for s in range(3)], -1), 0, 255)
    Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / "c.png")
    written = run_inference(make_cfg(str(tmp_path / "*.png"), tmp_path / "out"), Loader())
    arr = np.asarray(Image.open(written[0]))
    assert arr.shape == (40, 40, 3) and arr.dtype == np.uint8


def test_npy_nan_kept(tmp_path):
    arr = noisy((40, 40))
    arr[5, 7] = np.nan
    np.save(tmp_path / "a.npy", arr)
    out = tmp_path / "b.npy"
    run_inference(make_cfg(tmp_path / "a.npy", out), Loader())
    res = np.load(out)
    assert res.dtype == np.float32
    assert np.isnan(res[5, 7]) and np.isfinite(res).sum() == arr.size - 1


def test_all_nan_input(tmp_path):
    np.save(tmp_path / "a.npy", np.full((40, 40), np.nan, np.float32))
    with pytest.raises(UserError, match="no finite pixels"):
        run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "out"), Loader())


def test_bad_settings(tmp_path):
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    with pytest.raises(UserError, match="overlap"):
        run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "o", overlap=32), Loader())
    with pytest.raises(UserError, match="device"):
        run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "o", device="tpu"), Loader())
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "o", device="cuda"), Loader())


class SamplingBlur(NetForward):
    """A stand-in for a diffusion restorer: records the sampling it was asked for."""

    stochastic = True
    steps, sampler = 50, "ddim"

    def set_sampling(self, steps=None, sampler=None):
        self.steps = steps if steps is not None else self.steps
        self.sampler = sampler if sampler is not None else self.sampler


def test_sample_steps_and_sampler_override_the_checkpoint(tmp_path):
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    restorers = []

    def loader(ckpt_path, device):
        restorer = FakeRestorer(ckpt_path, device)
        restorer.fn = SamplingBlur(restorer.fn.net)
        restorers.append(restorer)
        return restorer

    cfg = make_cfg(tmp_path / "a.npy", tmp_path / "o.npy", sample_steps="20", sampler="ancestral")
    run_inference(cfg, loader)
    assert (restorers[0].fn.steps, restorers[0].fn.sampler) == (20, "ancestral")
    run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "p.npy"), loader)
    assert (restorers[1].fn.steps, restorers[1].fn.sampler) == (50, "ddim")  # exported ones
    with pytest.raises(UserError, match="sample_steps=0"):
        run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "q.npy", sample_steps=0), loader)
    # A deterministic model has nothing to sample: refused, not silently ignored.
    with pytest.raises(UserError, match="deterministic pass.*drop them"):
        run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "r.npy", sampler="ddim"), Loader())


def _star_field(seed=0):
    from astrorestore.data.corruption.noise import PoissonGaussianNoise
    from astrorestore.data.simulation.scene import render_field

    truth, _ = render_field(
        160, np.random.default_rng(seed), sky=20.0, n_stars=30, n_galaxies=0, n_bright_stars=12
    )
    noise = PoissonGaussianNoise(gain=1.0, read_noise=5.0)
    return truth, noise.draw(torch.from_numpy(truth), torch.Generator().manual_seed(seed)).numpy()


def test_psf_cores_stage_runs_after_the_network_and_is_recorded(tmp_path):
    src = tmp_path / "stars.fits"
    truth, frame = _star_field()
    fits.PrimaryHDU(frame).writeto(src)
    plain, cores = tmp_path / "plain.fits", tmp_path / "cores.fits"
    run_inference(make_cfg(src, plain), Loader())
    psf = {"psf_cores": {"gain": None, "min_snr": 20}}
    run_inference(make_cfg(src, cores, postprocess=psf, eval={"gain": 1.0}), Loader())
    with fits.open(plain) as a, fits.open(cores) as b:
        history = "\n".join(str(h) for h in b[0].header["HISTORY"])
        assert "PSF cores: moffat PSF" in history
        changed = a[0].data != b[0].data
        # only bright stars' cores change (a few percent of this crowded 160^2 frame), and
        # nowhere the truth is within 1 e- of the sky
        assert 0 < changed.mean() < 0.1
        assert not changed[truth - 20.0 < 1.0].any()


def test_psf_cores_refuse_colour_frames(tmp_path):
    # Each frame is read once, so a colour frame is refused when it is read: the grey one is
    # restored, the colour one recorded as failed with the reason (it is never written).
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "a_grey.npy", noisy((40, 40)))
    np.save(inputs / "b_rgb.npy", np.stack([noisy((40, 40))] * 3, axis=-1))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="b_rgb.npy: postprocess=psf_cores needs grey"):
        run_inference(make_cfg(inputs, out, postprocess={"psf_cores": {}}), Loader())
    assert not (out / "b_rgb.npy").exists() and (out / "a_grey.npy").is_file()
    rows = {Path(r["input"]).name: r for r in manifest(out)["frames"]}
    assert rows["b_rgb.npy"]["status"] == "failed" and "needs grey" in rows["b_rgb.npy"]["error"]
    with pytest.raises(UserError, match="postprocess.psf_cores.bogus is not a setting"):
        run_inference(make_cfg(inputs, out, postprocess={"psf_cores": {"bogus": 1}}), Loader())


def test_postprocess_settings_reach_the_loader_and_the_history(tmp_path):
    src = tmp_path / "a.fits"
    fits.PrimaryHDU(noisy((40, 40))).writeto(src)
    seen = []

    def loader(ckpt_path, device, **options):
        seen.append(options)
        return FakeRestorer(ckpt_path, device, **options)

    give_back = {"give_back": {"detect_scale": 1.5, "footprint_scale": None}}
    run_inference(make_cfg(src, tmp_path / "o.fits", postprocess=give_back), loader)
    assert seen == [{"postprocess": give_back, "gain": 1.0}]
    history = str(fits.getheader(tmp_path / "o.fits")["HISTORY"])
    assert "post-processing give_back: detect_scale=1.5, footprint_scale=None" in history
    # nothing set (infer.py's postprocess=checkpoint): the loader is called as before
    run_inference(make_cfg(src, tmp_path / "p.fits", postprocess={}), loader)
    assert seen[-1] == {}
    with pytest.raises(UserError, match="postprocess.give_back.detect_scale='abc' is invalid"):
        bad = {"give_back": {"detect_scale": "abc"}}
        run_inference(make_cfg(src, tmp_path / "q.fits", postprocess=bad), loader)
    with pytest.raises(UserError, match="postprocess.give_back applies .* not to method=median"):
        cfg = make_cfg(src, tmp_path / "q.fits", postprocess=give_back, method="median")
        cfg.ckpt_path = None
        run_inference(cfg, loader)
    assert not (tmp_path / "q.fits").exists()


@pytest.mark.parametrize("where", ["input", "output", "other"])
def test_report_never_replaces_a_folder_of_other_files(tmp_path, where):
    # A report replaces its folder whole: it must not take inputs, outputs or unrelated files
    # with it, and the refusal comes before anything is written.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    np.save(inputs / "a.npy", noisy((40, 40)))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    report = {"input": inputs, "output": out, "other": other}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="report="):
        run_inference(make_cfg(inputs, out, report=str(report)), Loader())
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_report_replaces_an_earlier_report(tmp_path):
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    cfg = make_cfg(tmp_path / "a.npy", tmp_path / "out", report=str(tmp_path / "report"))
    run_inference(cfg, Loader())
    run_inference(cfg, Loader())
    assert (tmp_path / "report" / "report.json").is_file()


def test_report_with_no_scorable_output_is_an_error(tmp_path, capsys):
    # A grey model on RGB images gives RGB outputs, which the astronomy evaluation cannot score:
    # the run ends with an error and no report (it wrote every output, then no report, and
    # exited 0). A frame's shape is known once it is read, so its output is written first.
    (tmp_path / "in").mkdir()
    rgb = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in" / "a.png")
    cfg = make_cfg(tmp_path / "in", tmp_path / "out", report=str(tmp_path / "report"))
    with pytest.raises(UserError, match=r"nothing would be scored.*pass truth=.*realism axes"):
        run_inference(cfg, Loader())
    assert not (tmp_path / "report").exists()
    # A folder with at least one grey frame is scored (the colour one is named as skipped).
    np.save(tmp_path / "in" / "b.npy", noisy((40, 40)))
    run_inference(cfg, Loader())
    assert (tmp_path / "report" / "report.json").is_file()
    assert "1 image(s) not scored (a.png:" in capsys.readouterr().out


def test_colour_output_of_a_16_bit_grey_png_is_refused(tmp_path):
    # A colorizer on a 16-bit grey PNG: Pillow cannot write 16-bit colour PNGs, and the run
    # crashed with a TypeError after restoring. Now that frame fails when it is read (before
    # restoring it) and the others are restored.
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40)).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    Image.fromarray(rng.integers(0, 65535, (40, 40)).astype(np.uint16)).save(
        tmp_path / "in" / "b.png"
    )

    def colorizer(ckpt_path, device):
        conv = torch.nn.Conv2d(1, 3, 1, bias=False)
        return Restorer(
            NetForward(conv.eval()), NanNormalizer(), 1, 3, 1, 8, torch.device(device), "col", "c"
        )

    with pytest.raises(UserError, match=r"b.png.*16-bit grey PNG.*16-bit TIFF"):
        run_inference(make_cfg(tmp_path / "in", tmp_path / "out"), colorizer)
    assert not (tmp_path / "out" / "b.png").exists() and (tmp_path / "out" / "a.png").is_file()


def test_a_photograph_is_reported_in_data_numbers_not_electrons(tmp_path):
    # A PNG holds data numbers: the report said e- and judged its residual by an electron model.
    import json

    grey = np.clip(noisy((40, 40), 3) / 4, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    cfg = make_cfg(tmp_path / "a.png", tmp_path / "o.png", report=str(tmp_path / "r"))
    run_inference(cfg, Loader())
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    image = report["images"][0] if "images" in report else report["per_image"][0]
    assert image["settings"]["unit"] == "DN"
    assert " e-" not in (tmp_path / "r" / "summary.md").read_text()


@pytest.mark.parametrize(
    "setting",
    [{"gain": 0.0}, {"fwhm": -1.0}, {"threshold": 0}, {"match_radius": -2}, {"read_noise": -5}],
)
def test_bad_eval_settings_are_refused_before_writing(tmp_path, setting):
    # eval.fwhm=-1 failed after the output was written; gain=0, threshold=0, match_radius=-2
    # and read_noise=-5 were used as given (bm3d_vst wrote an all-inf frame with gain=0).
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    (key,) = setting
    cfg = make_cfg(tmp_path / "a.npy", tmp_path / "o.npy", report=str(tmp_path / "r"))
    cfg.eval = {"fwhm": 2.5, "threshold": 5.0, "match_radius": None, "gain": 1.0} | setting
    with pytest.raises(UserError, match=f"eval.{key}=.* is invalid"):
        run_inference(cfg, Loader())
    assert not (tmp_path / "o.npy").exists()


def test_an_output_is_never_written_over_its_truth(tmp_path):
    # output= and truth= the same folder: the truth was replaced by the restoration, which was
    # then scored against itself (PSNR inf).
    (tmp_path / "in").mkdir()
    (tmp_path / "truth").mkdir()
    np.save(tmp_path / "in" / "a.npy", noisy((40, 40)))
    np.save(tmp_path / "truth" / "a.npy", np.full((40, 40), 500.0, np.float32))
    before = digest(tmp_path / "truth" / "a.npy")
    cfg = make_cfg(
        tmp_path / "in",
        tmp_path / "truth",
        truth=str(tmp_path / "truth"),
        report=str(tmp_path / "r"),
    )
    with pytest.raises(UserError, match="written over the truth"):
        run_inference(cfg, Loader())
    assert digest(tmp_path / "truth" / "a.npy") == before
    assert not (tmp_path / "r").exists()


def test_a_dropped_alpha_channel_is_said(tmp_path, capsys):
    # An RGBA PNG came back RGB without a word.
    rgba = (np.random.default_rng(0).random((40, 40, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    run_inference(make_cfg(tmp_path / "a.png", tmp_path / "o.png"), Loader())
    out = capsys.readouterr().out
    assert out.count("alpha (transparency) channel is dropped") == 1
    assert np.asarray(Image.open(tmp_path / "o.png")).shape == (40, 40, 3)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.png")
    run_inference(make_cfg(tmp_path / "b.png", tmp_path / "p.png"), Loader())
    assert "transparency" not in capsys.readouterr().out


def test_a_truth_of_another_kind_than_its_input_is_noted(tmp_path, capsys):
    # A PNG truth for a FITS frame is scored as if in the frame's units: said before scoring.
    frame = np.clip(noisy((40, 40), 4) / 4, 0, 255)
    fits.PrimaryHDU(frame.astype(np.float32)).writeto(tmp_path / "a.fits")
    Image.fromarray(frame.astype(np.uint8)).save(tmp_path / "t.png")
    fits.PrimaryHDU(frame.astype(np.float32)).writeto(tmp_path / "t.fits")

    def score(truth: str) -> str:
        out, report = tmp_path / f"o_{truth}.fits", tmp_path / f"r_{truth}"
        cfg = make_cfg(tmp_path / "a.fits", out, truth=str(tmp_path / truth), report=str(report))
        run_inference(cfg, Loader())
        return capsys.readouterr().out

    noted = score("t.png")
    assert "a.fits is a frame in physical units but its truth t.png is a photograph" in noted
    assert "note:" not in score("t.fits")  # the same kind: no note


def _report_image(folder):
    report = json.loads((folder / "report.json").read_text())
    return report["images"][0] if "images" in report else report["per_image"][0]


def test_report_takes_the_frames_read_noise_from_its_header(tmp_path):
    # A frame whose header says RDNOISE = 3 was judged against read noise 5 (eval.read_noise's
    # silent default). The header's gain (e-/DN) turns its read noise into frame units.
    hdu = fits.PrimaryHDU(noisy((64, 64)))
    hdu.header["GAIN"], hdu.header["RDNOISE"] = 2.0, 3.0
    hdu.writeto(tmp_path / "a.fits")
    run_inference(make_cfg(tmp_path / "a.fits", tmp_path / "o.fits", report=str(tmp_path / "r")),
                  Loader())  # fmt: skip
    settings = _report_image(tmp_path / "r")["settings"]
    assert settings["gain"] == 2.0 and settings["read_noise"] == pytest.approx(1.5)
    assert "read noise 3 e- = 1.5 units (header RDNOISE (e-))" in settings["noise_model"]
    assert "header GAIN" in settings["noise_model"]
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "noise model: gain 2 e-/unit (header GAIN" in summary
    # An explicit value still wins, and the report says it was given.
    cfg = make_cfg(tmp_path / "a.fits", tmp_path / "p.fits", report=str(tmp_path / "s"))
    cfg.eval = {"read_noise": 4.0}
    run_inference(cfg, Loader())
    settings = _report_image(tmp_path / "s")["settings"]
    assert settings["read_noise"] == 4.0 and "(eval.read_noise)" in settings["noise_model"]
    assert settings["gain"] == 2.0


def test_report_on_a_frame_that_cannot_tell_its_gain_says_so(tmp_path):
    # No header, 40 px of flat sky: no mean-variance fit is possible. The residual is judged by
    # the frame's own sky noise (20 here), and the report says the Poisson term is left out.
    np.save(tmp_path / "a.npy", noisy((40, 40)))
    run_inference(make_cfg(tmp_path / "a.npy", tmp_path / "o.npy", report=str(tmp_path / "r")),
                  Loader())  # fmt: skip
    settings = _report_image(tmp_path / "r")["settings"]
    assert settings["read_noise"] == pytest.approx(20.0, rel=0.15)
    assert "Poisson term left out" in settings["noise_model"]
    assert "sky noise" in settings["noise_model"]


def test_a_noise_map_of_the_wrong_shape_is_one_line_and_nothing_is_written(tmp_path):
    # An ERR extension of another shape than SCI was dropped without a word; the report would
    # then judge the frame by another noise model than its product's.
    sci = fits.ImageHDU(noisy((40, 40)), name="SCI")
    err = fits.ImageHDU(np.ones((20, 40), np.float32), name="ERR")
    fits.HDUList([fits.PrimaryHDU(), sci, err]).writeto(tmp_path / "a.fits")
    cfg = make_cfg(tmp_path / "a.fits", tmp_path / "o.fits", report=str(tmp_path / "r"))
    with pytest.raises(UserError, match=r"its ERR map is 20x40 but the science array is 40x40"):
        run_inference(cfg, Loader())
    assert not (tmp_path / "o.fits").exists() and not (tmp_path / "r").exists()
