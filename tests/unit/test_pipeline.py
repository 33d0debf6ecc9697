"""Pipeline helpers: scores against references, the bilateral pre-filter, and sampling
overrides that reach the stochastic stages of a chain."""

import numpy as np
import pytest
import torch

from astrorestore.errors import UserError
from astrorestore.inference.pipeline import bilateral, image_scores, run_pipeline
from astrorestore.inference.restorer import NetForward, Restorer


def test_scores_compare_8_bit_and_float_images_on_one_scale():
    rgb = np.random.default_rng(0).random((32, 32, 3))
    rgb[0, 0] = 1.0
    same = image_scores(rgb.astype(np.float32), np.round(rgb * 255).astype(np.uint8))
    assert same["ssim"] > 0.99 and same["psnr"] > 45
    noisy = image_scores(
        np.clip(rgb + 0.2 * np.random.default_rng(1).standard_normal(rgb.shape), 0, 1), rgb
    )
    assert noisy["ssim"] < same["ssim"] and noisy["psnr"] < 20
    with pytest.raises(UserError, match="final size"):
        image_scores(rgb, rgb[:16])


def test_bilateral_smooths_noise_keeps_edges_and_units():
    rng = np.random.default_rng(2)
    edge = np.zeros((32, 32), np.float32)
    edge[:, 16:] = 200.0
    noisy = edge + rng.normal(0, 5, edge.shape).astype(np.float32)
    out = bilateral(noisy, 5, 0.1, 1.5)
    assert out.shape == noisy.shape
    assert out[:, 2:12].std() < noisy[:, 2:12].std()  # flat region smoothed
    assert out[:, 20:30].mean() == pytest.approx(200.0, abs=3)  # 0-255 units kept, edge kept
    with pytest.raises(UserError, match="kernel_size=4"):
        bilateral(noisy, 4, 0.1, 1.5)


class _Identity:
    """A normaliser that leaves pixels alone (the stages below work in pixel units)."""

    def stats(self, x):
        return torch.zeros(x.shape[:2] + (1, 1)), torch.ones(x.shape[:2] + (1, 1))

    def forward(self, x, offset, scale):
        return x

    def inverse(self, z, offset, scale):
        return z


class _NoisySampler(torch.nn.Module):
    """Stands in for SR3: stochastic, overridable sampling, adds seeded noise."""

    stochastic = True

    def __init__(self) -> None:
        super().__init__()
        self.steps, self.sampler = 25, "ddim"

    def set_sampling(self, steps=None, sampler=None):
        if steps is not None and steps > 50:
            raise UserError(f"steps={steps} is out of range")
        self.steps = steps if steps is not None else self.steps
        self.sampler = sampler if sampler is not None else self.sampler

    def forward(self, x, generator=None):
        return x + torch.randn(x.shape, generator=generator)


def _stage(fn, name):
    return Restorer(fn, _Identity(), 1, 1, 1, 1, torch.device("cpu"), name, f"{name}.ckpt")


def test_pipeline_sampling_overrides_reach_only_the_stochastic_stages(tmp_path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.full((16, 16), 100.0, np.float32))
    blur, sampler = _stage(NetForward(torch.nn.Identity()), "blur"), _stage(_NoisySampler(), "sr3")

    def run(name, **sampling):
        report = run_pipeline(
            [blur, sampler],
            str(tmp_path / "in"),
            str(tmp_path / name),
            tile=16,
            overlap=0,
            **sampling,
        )
        return report, np.load(tmp_path / name / "a.npy")

    report, out = run("o1", sample_steps=3, sampler="ancestral", seed=4)
    assert (sampler.fn.steps, sampler.fn.sampler) == (3, "ancestral")
    assert not hasattr(blur.fn, "steps")  # the deterministic stage is left alone
    assert report["sampling"] == [None, {"steps": 3, "sampler": "ancestral"}]
    assert report["seed"] == 4
    _, again = run("o2", seed=4)  # None keeps the overridden values; the seed repeats
    assert (sampler.fn.steps, sampler.fn.sampler) == (3, "ancestral")
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, run("o3", seed=5)[1])
    with pytest.raises(UserError, match="stage sr3: steps=99"):
        run("o4", sample_steps=99)
    with pytest.raises(UserError, match="sample_steps=0"):
        run("o5", sample_steps=0)
    # A chain with nothing to sample refuses the settings instead of ignoring them.
    with pytest.raises(UserError, match="no checkpoint of this chain samples.*drop them"):
        run_pipeline([blur], str(tmp_path / "in"), str(tmp_path / "o6"), sampler="ddim")


def test_pipeline_checks_every_input_before_writing(tmp_path):
    # A colour stage and a folder whose second image is grey: refused before a.npy is written.
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.full((16, 16, 3), 100.0, np.float32))
    np.save(tmp_path / "in" / "b.npy", np.full((16, 16), 100.0, np.float32))
    colour = Restorer(
        NetForward(torch.nn.Identity()), _Identity(), 3, 3, 1, 1, torch.device("cpu"), "c", "c"
    )
    with pytest.raises(UserError, match="b.npy"):
        run_pipeline([colour], str(tmp_path / "in"), str(tmp_path / "out"), tile=16, overlap=0)
    assert not (tmp_path / "out").exists()


def test_pipeline_report_replaces_the_earlier_one_whole(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.full((16, 16), 100.0, np.float32))
    stage = _stage(NetForward(torch.nn.Identity()), "id")
    out = tmp_path / "out"
    run_pipeline([stage], str(tmp_path / "in"), str(out), tile=16, overlap=0)
    before = {name: (out / name).read_bytes() for name in ("report.json", "report.csv")}
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "report.csv", "report.json"]

    # a rerun that fails while writing the CSV leaves the earlier CSV whole and no temp file
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("csv.DictWriter.writerow", broken)
    with pytest.raises(OSError, match="disk full"):
        run_pipeline([stage], str(tmp_path / "in"), str(out), tile=16, overlap=0)
    assert (out / "report.csv").read_bytes() == before["report.csv"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "report.csv", "report.json"]


class _Brighten(torch.nn.Module):
    """A grey stage whose float output overshoots the 8-bit range (as a generator can)."""

    def forward(self, x):
        return x + 60.0


def test_pipeline_scores_the_images_as_written_on_their_full_scale(tmp_path):
    # An 8-bit input brightened past 255: the file holds the clipped copy, and a reference equal
    # to that file (but for one count on a few pixels) must score high, not be compared with an
    # unclipped float divided by 65535.
    from PIL import Image

    rng = np.random.default_rng(3)
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    grey = rng.integers(100, 255, (32, 32)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "in" / "a.png")
    expected = np.clip(grey.astype(int) + 60, 0, 255)
    expected[:4, :4] -= 1
    Image.fromarray(expected.astype(np.uint8)).save(tmp_path / "ref" / "a.png")
    stage = _stage(NetForward(_Brighten()), "bright")
    report = run_pipeline(
        [stage],
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        references=str(tmp_path / "ref"),
        tile=32,
        overlap=0,
    )
    assert report["images"][0]["psnr"] > 50
    assert report["images"][0]["ssim"] > 0.99
    assert "data range 1" in report["data_range"] and "255 for 8-bit" in report["data_range"]


def _two_grey_inputs(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        np.save(tmp_path / "in" / f"{name}.npy", np.full((16, 16), 100.0, np.float32))


def test_pipeline_checks_every_reference_before_writing(tmp_path):
    _two_grey_inputs(tmp_path)
    refs = tmp_path / "ref"
    refs.mkdir()
    np.save(refs / "a.npy", np.full((16, 16), 100.0, np.float32))
    stage = _stage(NetForward(torch.nn.Identity()), "id")

    def run():
        run_pipeline(
            [stage], str(tmp_path / "in"), str(tmp_path / "out"), str(refs), tile=16, overlap=0
        )

    with pytest.raises(UserError, match="no reference for b.npy"):
        run()
    assert not (tmp_path / "out").exists()
    np.save(refs / "b.npy", np.full((8, 8), 100.0, np.float32))  # not the final size
    with pytest.raises(UserError, match=r"reference .*b.npy has shape \(8, 8\).*\(16, 16\)"):
        run()
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="is the output folder"):
        run_pipeline([stage], str(tmp_path / "in"), str(refs), str(refs), tile=16, overlap=0)


def test_pipeline_checks_every_stage_of_the_chain_before_writing(tmp_path):
    # grey -> grey stage -> a stage that only takes colour: refused before a.npy is written.
    _two_grey_inputs(tmp_path)
    grey = _stage(NetForward(torch.nn.Identity()), "grey")
    colour = Restorer(
        NetForward(torch.nn.Identity()), _Identity(), 3, 3, 1, 1, torch.device("cpu"), "c", "c"
    )
    with pytest.raises(UserError, match=r"stage 2 \(c\) cannot take the output of grey"):
        run_pipeline(
            [grey, colour], str(tmp_path / "in"), str(tmp_path / "out"), tile=16, overlap=0
        )
    assert not (tmp_path / "out").exists()


def test_a_perfect_match_gives_strict_json(tmp_path):
    # PSNR of an exact copy is infinite; report.json said "Infinity", which JSON readers refuse.
    import json

    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    image = np.random.default_rng(4).uniform(0, 1, (16, 16)).astype(np.float32)
    np.save(tmp_path / "in" / "a.npy", image)
    np.save(tmp_path / "ref" / "a.npy", image)
    stage = _stage(NetForward(torch.nn.Identity()), "id")
    run_pipeline(
        [stage],
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        str(tmp_path / "ref"),
        tile=16,
        overlap=0,
    )

    def refuse(constant):
        raise ValueError(constant)

    text = (tmp_path / "out" / "report.json").read_text()
    report = json.loads(text, parse_constant=refuse)
    assert report["images"][0]["psnr"] is None and report["images"][0]["ssim"] == 1.0


def test_pipeline_checks_overlap_and_seed_before_writing(tmp_path):
    # A small image (its tile fitted, the overlap cut) was written before a large one failed.
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.full((16, 16), 100.0, np.float32))
    np.save(tmp_path / "in" / "b.npy", np.full((96, 96), 100.0, np.float32))
    stage = _stage(NetForward(torch.nn.Identity()), "id")
    with pytest.raises(UserError, match="overlap=40"):
        run_pipeline([stage], str(tmp_path / "in"), str(tmp_path / "out"), tile=32, overlap=40)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="seed=-1"):
        run_pipeline([stage], str(tmp_path / "in"), str(tmp_path / "out"), tile=32, seed=-1)
    assert not (tmp_path / "out").exists()


class _ColumnRamp(torch.nn.Module):
    """Not flip-equivariant: adds each pixel's column index."""

    def forward(self, x):
        return x + torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)


def test_pipeline_self_ensemble_averages_only_the_deterministic_stages(tmp_path):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", np.full((16, 16), 100.0, np.float32))
    ramp, sampler = _stage(NetForward(_ColumnRamp()), "ramp"), _stage(_NoisySampler(), "sr3")
    report = run_pipeline(
        [ramp, sampler], str(tmp_path / "in"), str(tmp_path / "o"), tile=16, overlap=0, seed=1
    )
    plain = np.load(tmp_path / "o" / "a.npy")
    report = run_pipeline(
        [ramp, sampler],
        str(tmp_path / "in"),
        str(tmp_path / "e"),
        tile=16,
        overlap=0,
        seed=1,
        self_ensemble=2,
    )
    averaged = np.load(tmp_path / "e" / "a.npy")
    # the ramp 0..15 and its mirror average to 7.5; the sampler's seeded noise is the same
    expected = np.broadcast_to(7.5 - np.arange(16.0), (16, 16))
    np.testing.assert_allclose(averaged - plain, expected, atol=1e-4)
    assert report["self_ensemble"] == 2
    # a chain that only samples refuses it, and so does a bad size
    with pytest.raises(UserError, match="every stage of this chain samples"):
        run_pipeline([sampler], str(tmp_path / "in"), str(tmp_path / "x"), self_ensemble=4)
    with pytest.raises(UserError, match="self_ensemble=3"):
        run_pipeline([ramp], str(tmp_path / "in"), str(tmp_path / "y"), self_ensemble=3)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
