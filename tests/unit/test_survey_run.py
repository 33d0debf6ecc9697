"""Folder runs of infer.py: settings checked once, resumable and idempotent outputs, the
manifest, kill-and-rerun, and Lightning's predict loop over two processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astrorestore.errors import UserError
from astrorestore.inference.runner import run_inference
from astrorestore.inference.settings import InferSettings
from tests.unit.survey_helpers import BlurLoader, config, write_frames

REPO = Path(__file__).resolve().parents[2]


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def statuses(folder: Path) -> dict[str, str]:
    return {Path(row["input"]).name: row["status"] for row in manifest(folder)["frames"]}


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every output: a rewritten (atomically replaced) file changes both."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.fits")}


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("tile_size", "big", r"tile_size='big' must be an integer"),
        ("overlap", -1, r"overlap=-1 must be at least 0"),
        ("overwrite", "maybe", r"overwrite='maybe' is invalid: pass overwrite=true or"),
        ("workers", -2, r"workers=-2 must be at least 0"),
        ("batch_frames", 0, r"batch_frames=0 must be at least 1"),
        ("precision", "fp8", r"precision='fp8' is not supported"),
        ("self_ensemble", 3, r"self_ensemble=3 is invalid"),
        ("device", "tpu", r"device='tpu' is not supported"),
    ],
)
def test_each_bad_setting_is_one_line_naming_the_key(tmp_path, key, value, match):
    with pytest.raises(UserError, match=match) as caught:
        InferSettings.from_config(config(tmp_path, tmp_path / "o", **{key: value}))
    assert "\n" not in str(caught.value)


def test_settings_are_typed():
    settings = InferSettings.from_config(config("in", "out", sample_steps="20", overwrite="true"))
    assert settings.sample_steps == 20 and settings.overwrite is True
    assert settings.tile_size == 32 and settings.trainer is None
    # speed-only settings do not change what an output records; pixel-changing ones do
    same = InferSettings.from_config(config("in", "out", batch_size=1, workers=3))
    other = InferSettings.from_config(config("in", "out", tile_size=16))
    base = InferSettings.from_config(config("in", "out"))
    assert same.restoration_digest() == base.restoration_digest()
    assert other.restoration_digest() != base.restoration_digest()
    # postprocess= changes the pixels (the checkpoint's own stages are in its checksum)
    gb = {"give_back": {"footprint_scale": 2.0}}
    given_back = InferSettings.from_config(config("in", "out", postprocess=gb))
    assert given_back.postprocess == gb
    assert given_back.restoration_digest() != base.restoration_digest()


def test_trainer_configs_compose_for_prediction(tmp_path):
    # trainer=ddp (the multi-GPU / SLURM config of training) gives infer.py a predicting
    # Trainer's settings: its training-only keys and interpolations are dropped, and report=
    # (scored in one process) is refused with it.
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("infer", overrides=["trainer=ddp", "ckpt_path=x", "input=a", "output=b"])
        plain = compose("infer", overrides=["ckpt_path=x", "input=a", "output=b"])
    settings = InferSettings.from_config(cfg)
    assert settings.trainer["strategy"] == "ddp" and settings.trainer["devices"] == -1
    assert "max_epochs" not in settings.trainer and "default_root_dir" not in settings.trainer
    assert InferSettings.from_config(plain).trainer is None
    cfg.report = str(tmp_path / "r")
    with pytest.raises(UserError, match="report= scores the frames of one process"):
        InferSettings.from_config(cfg)


def test_progress_bar_over_frames_runs(tmp_path):
    write_frames(tmp_path / "in", 2)
    written = run_inference(config(tmp_path / "in", tmp_path / "out", progress=True), BlurLoader())
    assert len(written) == 2


def test_rerun_skips_done_frames_and_overwrite_redoes_them(tmp_path, capsys):
    write_frames(tmp_path / "in", 3)
    out = tmp_path / "out"
    cfg = config(tmp_path / "in", out)
    assert len(run_inference(cfg, BlurLoader())) == 3
    before = stamps(out)
    with fits.open(out / "frame_00.fits") as hdul:
        assert len(hdul[0].header["ARINSUM"]) == 64 and hdul[0].header["ARSETSUM"]
    assert set(statuses(out).values()) == {"done"}
    assert len(run_inference(cfg, BlurLoader())) == 3  # the same command again: nothing to do
    assert stamps(out) == before
    assert set(statuses(out).values()) == {"skipped"}
    assert "3 already done" in capsys.readouterr().out
    # other pixel-changing settings, or overwrite=true: restored again
    run_inference(config(tmp_path / "in", out, tile_size=16, overlap=4), BlurLoader())
    assert set(statuses(out).values()) == {"done"}
    after = stamps(out)
    assert all(after[name] != before[name] for name in before)
    run_inference(
        config(tmp_path / "in", out, tile_size=16, overlap=4, overwrite=True), BlurLoader()
    )
    assert set(statuses(out).values()) == {"done"}


def test_each_input_is_read_from_disk_once(tmp_path, monkeypatch):
    # Hashing (ARINSUM), decoding and copying the other HDUs into the output all take the
    # bytes of one read; a rerun that skips the frame reads it once to hash it.
    import builtins
    import io

    paths = write_frames(tmp_path / "in", 2)
    inputs = {str(p.resolve()) for p in paths}
    opened: list[str] = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and str(Path(file).resolve()) in inputs:
            opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    cfg = config(tmp_path / "in", tmp_path / "out")
    assert len(run_inference(cfg, BlurLoader())) == 2
    assert sorted(opened) == ["frame_00.fits", "frame_01.fits"]
    opened.clear()
    run_inference(cfg, BlurLoader())
    assert set(statuses(tmp_path / "out").values()) == {"skipped"}
    assert sorted(opened) == ["frame_00.fits", "frame_01.fits"]


def test_small_frames_of_one_shape_share_network_passes(tmp_path, monkeypatch):
    # batch_frames gathers one-tile frames of one shape (each with its own statistics and NaN
    # fill) into shared passes; the outputs equal one-frame-at-a-time outputs, and frames of
    # other shapes (tiled, or another size) in the same folder are restored as before.
    from tests.unit.survey_helpers import Blur

    inputs = tmp_path / "in"
    write_frames(inputs, 5, shape=(32, 32))
    data = fits.getdata(inputs / "frame_01.fits")
    data[3:5, 7] = np.nan
    fits.PrimaryHDU(data * 50.0 + 1e4).writeto(inputs / "frame_01.fits", overwrite=True)
    for name, shape in (("frame_10.fits", (48, 48)), ("frame_11.fits", (16, 16))):
        fits.PrimaryHDU(
            np.random.default_rng(7).normal(5.0, 1.0, shape).astype(np.float32)
        ).writeto(inputs / name)
    batches: list[int] = []
    forward = Blur.forward
    monkeypatch.setattr(Blur, "forward", lambda self, x: batches.append(len(x)) or forward(self, x))
    alone, together = tmp_path / "alone", tmp_path / "together"
    run_inference(config(inputs, alone, batch_frames=1), BlurLoader())
    passes_alone = list(batches)
    batches.clear()
    written = run_inference(config(inputs, together, batch_frames=4), BlurLoader())
    assert len(written) == 7 and set(statuses(together).values()) == {"done"}
    # frames 00-03 in one pass of batch_size=4 instead of four; the rest as before
    assert len(batches) == len(passes_alone) - 3 and batches[0] == 4
    for path in sorted(alone.glob("frame_*.fits")):
        np.testing.assert_allclose(
            fits.getdata(together / path.name), fits.getdata(path), rtol=1e-5, atol=1e-4
        )
    assert np.isnan(fits.getdata(together / "frame_01.fits")[3:5, 7]).all()


def test_batched_frames_each_get_their_own_sky_map(tmp_path, monkeypatch):
    # A background=map checkpoint in a batch: every frame is normalised by its own sky map
    # (its invalid pixels filled with it), so batched outputs equal one-by-one outputs.
    from astrorestore.data.normalization.asinh import AsinhNormalizer

    inputs = tmp_path / "in"
    inputs.mkdir()
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    for i, (sx, sy) in enumerate(((1, 1), (1, -1), (-1, 1))):
        noise = np.random.default_rng(i).normal(0.0, 5.0, (64, 64)).astype(np.float32)
        sky = 15.0 * (sx * ramp[None, :] + sy * ramp[:, None])  # a sky gradient per frame
        data = 100.0 + sky + noise
        if i == 1:
            data[3:5, 7] = np.nan
        fits.PrimaryHDU(data).writeto(inputs / f"frame_{i:02d}.fits")
    maps: list[int] = []
    frame_stats = AsinhNormalizer.frame_stats
    monkeypatch.setattr(
        AsinhNormalizer,
        "frame_stats",
        lambda self, frames: maps.append(len(frames)) or frame_stats(self, frames),
    )
    loader = BlurLoader(background="map", box_size=16)
    alone, together = tmp_path / "alone", tmp_path / "together"
    run_inference(config(inputs, alone, tile_size=64, batch_frames=1), loader)
    assert maps == [1, 1, 1]
    maps.clear()
    run_inference(config(inputs, together, tile_size=64, batch_frames=4), loader)
    assert maps == [3]  # one batch of three frames, a map each
    for path in sorted(alone.glob("frame_*.fits")):
        np.testing.assert_allclose(
            fits.getdata(together / path.name), fits.getdata(path), rtol=1e-5, atol=1e-3
        )
    assert np.isnan(fits.getdata(together / "frame_01.fits")[3:5, 7]).all()
    median = tmp_path / "median"
    run_inference(config(inputs, median, tile_size=64, batch_frames=4), BlurLoader())
    assert not np.allclose(
        fits.getdata(median / "frame_02.fits"), fits.getdata(together / "frame_02.fits")
    )


def test_a_changed_input_is_restored_again(tmp_path):
    paths = write_frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_inference(config(tmp_path / "in", out), BlurLoader())
    fits.PrimaryHDU(np.full((48, 48), 7.0, np.float32)).writeto(paths[1], overwrite=True)
    run_inference(config(tmp_path / "in", out), BlurLoader())
    assert statuses(out) == {"frame_00.fits": "skipped", "frame_01.fits": "done"}
    np.testing.assert_allclose(fits.getdata(out / "frame_01.fits"), 7.0, rtol=1e-5)


def test_outputs_without_a_header_are_matched_through_the_manifest(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(2):
        np.save(tmp_path / "in" / f"f{i}.npy", np.random.default_rng(i).normal(9, 1, (40, 40)))
    out = tmp_path / "out"
    run_inference(config(tmp_path / "in", out), BlurLoader())
    first = (out / "f0.npy").stat().st_mtime_ns
    run_inference(config(tmp_path / "in", out), BlurLoader())
    assert statuses(out) == {"f0.npy": "skipped", "f1.npy": "skipped"}
    assert (out / "f0.npy").stat().st_mtime_ns == first
    (out / "f1.npy").unlink()  # an output deleted since: restored again
    run_inference(config(tmp_path / "in", out), BlurLoader())
    assert statuses(out) == {"f0.npy": "skipped", "f1.npy": "done"}


def test_manifest_records_time_speed_and_the_run(tmp_path):
    write_frames(tmp_path / "in", 2, shape=(64, 80))
    out = tmp_path / "out"
    run_inference(config(tmp_path / "in", out, workers=1), BlurLoader())
    data = manifest(out)
    row = data["frames"][0]
    assert row["megapixels"] == pytest.approx(64 * 80 / 1e6, abs=1e-4)
    assert row["seconds"] > 0 and row["mp_per_s"] > 0 and len(row["input_sha256"]) == 64
    run = data["run"]
    assert run["frames_total"] == 2 and run["frames_done"] == 2 and run["frames_failed"] == 0
    assert run["mp_per_s_wall"] > 0 and run["model"] == "blur"
    assert not list(out.glob(".*part*"))  # atomic writes leave no temporary files


def _run_folder(inputs: Path, outputs: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "tests.unit.survey_helpers", str(inputs), str(outputs), *extra]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_kill_and_rerun_finishes_the_rest_and_writes_each_frame_once(tmp_path):
    write_frames(tmp_path / "in", 6)
    out = tmp_path / "out"
    first = _run_folder(tmp_path / "in", out, "delay=0.25")
    deadline = time.monotonic() + 120
    while not list(out.glob("frame_*.fits")) and time.monotonic() < deadline:
        if first.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {first.stderr.read()[-2000:]}")
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_first = stamps(out)
    assert 1 <= len(done_first) < 6, "the kill came too late to leave frames undone"
    second = _run_folder(tmp_path / "in", out)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]
    after = stamps(out)
    assert sorted(after) == [f"frame_{i:02d}.fits" for i in range(6)]
    for name, stamp in done_first.items():  # not written a second time
        assert after[name] == stamp
    status = statuses(out)
    assert {n for n, s in status.items() if s == "skipped"} == set(done_first)
    assert {n for n, s in status.items() if s == "done"} == set(after) - set(done_first)
    assert manifest(out)["run"]["frames_total"] == 6


def test_ddp_sim_predict_splits_frames_over_two_processes(tmp_path):
    # trainer=ddp_sim: Lightning's predict loop in two CPU processes; each frame is restored by
    # exactly one of them and written once, and rank 0 merges the manifests.
    from hydra import compose, initialize_config_dir

    write_frames(tmp_path / "in", 5)
    out = tmp_path / "out"
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "infer",
            overrides=[
                "trainer=ddp_sim",
                "ckpt_path=/models/blur.ckpt",
                f"input={tmp_path / 'in'}",
                f"output={out}",
                "tile_size=32",
                "overlap=8",
                "device=cpu",
                "progress=false",
                "workers=0",
            ],
        )
    written = run_inference(cfg, BlurLoader())
    assert len(written) == 5
    rows = manifest(out)["frames"]
    assert sorted(Path(r["input"]).name for r in rows) == [f"frame_{i:02d}.fits" for i in range(5)]
    assert all(r["status"] == "done" for r in rows)
    assert {r["rank"] for r in rows} == {0, 1}  # both processes restored frames
    assert not list(out.glob("manifest.rank*.json"))
    # the same frames as one process gives
    single = tmp_path / "single"
    run_inference(config(tmp_path / "in", single), BlurLoader())
    for i in range(5):
        name = f"frame_{i:02d}.fits"
        np.testing.assert_array_equal(fits.getdata(out / name), fits.getdata(single / name))
