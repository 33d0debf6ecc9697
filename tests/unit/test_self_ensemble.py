import numpy as np
import pytest
import torch
from astropy.io import fits

from astrorestore.errors import UserError
from astrorestore.inference.restorer import NetForward
from astrorestore.inference.runner import run_inference
from astrorestore.inference.self_ensemble import (
    TRANSFORMS,
    SelfEnsemble,
    check_self_ensemble,
    self_ensemble,
    transform,
    untransform,
)
from tests.unit.test_runner import FakeRestorer, Loader, make_cfg, noisy


def test_every_transform_is_undone_and_the_eight_are_distinct():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).view(1, 2, 3, 5)  # not square
    seen = set()
    for turns, flip in TRANSFORMS:
        y = transform(x, turns, flip)
        assert torch.equal(untransform(y, turns, flip), x)
        seen.add(
            tuple(transform(torch.arange(9.0).view(1, 1, 3, 3), turns, flip).flatten().tolist())
        )
    assert len(seen) == 8
    # the first four keep the axes, so they work on non-square tiles without swapping them
    assert all(transform(x, t, f).shape == x.shape for t, f in TRANSFORMS[:4])


class ColumnRamp(torch.nn.Module):
    """A network that is not flip-equivariant: adds each pixel's column index."""

    def forward(self, x):
        return x + torch.arange(x.shape[-1], dtype=x.dtype).view(1, 1, 1, -1)


def test_the_mean_of_the_passes():
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    # an equivariant restorer is unchanged by the ensemble
    identity = SelfEnsemble(NetForward(torch.nn.Identity()), 8)
    assert torch.allclose(identity(x), x)
    # identity + left-right flip: the ramp 0..5 and its mirror average to 2.5 everywhere
    out = SelfEnsemble(NetForward(ColumnRamp()), 2)(x)
    assert torch.allclose(out, x + 2.5)
    # all eight: rows and columns both carry the ramp, in both directions, so again 2.5
    assert torch.allclose(SelfEnsemble(NetForward(ColumnRamp()), 8)(x), x + 2.5)


@pytest.mark.parametrize("bad", [0, 3, 16, True, "two", 2.5, None])
def test_bad_sizes_are_one_line_errors(bad):
    with pytest.raises(UserError, match="self_ensemble=.*1 \\(off\\), 2, 4 or 8"):
        check_self_ensemble(bad)


def test_sizes_typed_on_the_command_line_are_accepted():
    assert check_self_ensemble("8") == 8 and check_self_ensemble(1) == 1


class Sampler(NetForward):
    stochastic = True


def test_samplers_are_refused_and_one_pass_is_the_restorer_itself():
    restorer = FakeRestorer("x.ckpt", "cpu")
    assert self_ensemble(restorer, 1) is restorer
    restorer.fn = Sampler(restorer.fn.net)
    with pytest.raises(UserError, match="mean of samples is not a sample"):
        self_ensemble(restorer, 4)


def test_infer_averages_the_passes_and_says_so(tmp_path):
    src = tmp_path / "a.fits"
    fits.PrimaryHDU(noisy((40, 40))).writeto(src)

    def ramp_loader(ckpt_path, device):
        restorer = FakeRestorer(ckpt_path, device)
        restorer.fn = NetForward(ColumnRamp())
        return restorer

    cfg = make_cfg(src, tmp_path / "one.fits", tile_size=40, overlap=0)
    run_inference(cfg, ramp_loader)
    cfg = make_cfg(src, tmp_path / "two.fits", tile_size=40, overlap=0, self_ensemble=2)
    run_inference(cfg, ramp_loader)
    one, two = fits.getdata(tmp_path / "one.fits"), fits.getdata(tmp_path / "two.fits")
    history = str(fits.getheader(tmp_path / "two.fits")["HISTORY"])
    assert "self-ensemble: mean of 2 flipped/rotated passes" in history
    # the ramp is added in normalised units (x scale): one pass slopes, two are flat
    slope = lambda image: np.polyfit(np.arange(40), (image - fits.getdata(src)).mean(0), 1)[0]  # noqa: E731
    assert slope(one) > 0.5 and abs(slope(two)) < 1e-3
    with pytest.raises(UserError, match="self_ensemble=3"):
        run_inference(make_cfg(src, tmp_path / "bad.fits", self_ensemble=3), Loader())
    assert not (tmp_path / "bad.fits").exists()
