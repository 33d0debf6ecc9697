"""Tests of what makes simulated fields look like real frames: gradients, vignetting, nebulosity,
over-subtracted skies (and the noise they need), large Sersic galaxies with dust lanes, bleed
trails and a user's measured PSF."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from omegaconf import OmegaConf
from scipy.special import gamma, gammaincinv

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.datamodules.simulated import SimulatedFieldDataModule
from astrorestore.data.normalization.asinh import AsinhNormalizer
from astrorestore.data.pairings.base import Noise2NoisePairing, SupervisedPairing
from astrorestore.data.simulation.background import nebulosity_map, vignetting_map
from astrorestore.data.simulation.extended import sersic_image
from astrorestore.data.simulation.scene import bleed_columns, render_field, render_psf_stamp
from astrorestore.errors import UserError

DATA_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
_EMPTY = {"n_stars": 0, "n_galaxies": 0, "n_bright_stars": 0}


def _scene(*names: str) -> dict:
    merged = OmegaConf.merge(*(OmegaConf.load(DATA_CONFIGS / f"{n}.yaml").scene for n in names))
    return OmegaConf.to_container(merged)


# SHA-256 of 96x96 simulated_randomized fields rendered by the code before these features: the
# new keys (present, switched off, in simulated.yaml) must not change a bit.
_RANDOMIZED_SHA256 = {
    0: "de59bd9b883eb0d81796651136eb492ceffcddff4a7327d381e835c5ad3aa5bb",
    1: "dd87a417428c6b8a6410be99c5378f5942d94d48c5077bb7b8b27fcab9e8e91f",
}


@pytest.mark.parametrize("seed", list(_RANDOMIZED_SHA256))
def test_randomized_yaml_fields_are_unchanged_bit_for_bit(seed: int) -> None:
    image, catalog = render_field(
        96, np.random.default_rng(seed), **_scene("simulated", "simulated_randomized")
    )
    assert hashlib.sha256(image.tobytes()).hexdigest() == _RANDOMIZED_SHA256[seed]
    assert catalog["pedestal"] == 0.0 and catalog["extended"] == [] and not catalog["bleed"]


def test_vignetting_falls_to_the_configured_fraction_at_the_corners() -> None:
    v = vignetting_map((64, 80), 0.3)
    for corner in (v[0, 0], v[0, -1], v[-1, 0], v[-1, -1]):
        assert corner == pytest.approx(0.3, abs=1e-12)
    assert v.max() <= 1.0 and v[32, 40] > 0.99
    # It multiplies sky and sources alike: the same field with and without it differs by v.
    kwargs = {"sky": 100.0, "n_stars": 5, "n_galaxies": 2, "n_bright_stars": 0}
    flat, _ = render_field((64, 80), np.random.default_rng(1), **kwargs)
    vignetted, catalog = render_field(
        (64, 80),
        np.random.default_rng(1),
        background={"vignetting_probability": 1.0, "vignetting": 0.3},
        **kwargs,
    )
    assert catalog["background"]["vignetting"] == 0.3
    np.testing.assert_allclose(vignetted, flat * v, rtol=1e-5)


def _sky_only(**background) -> tuple[np.ndarray, dict]:
    """A 128 px field of a 50 e- sky and nothing else, with these background options."""
    return render_field(128, np.random.default_rng(2), sky=50.0, background=background, **_EMPTY)


def test_gradient_and_nebulosity_add_light_on_top_of_the_sky() -> None:
    image, catalog = _sky_only(gradient_probability=1.0, gradient=0.4)
    angle = catalog["background"]["gradient_angle"]
    # A plane through the sky at the centre, 40 % above it at the corner it rises towards.
    yy, xx = np.mgrid[0:128, 0:128]
    along = (xx - 63.5) * math.cos(angle) + (yy - 63.5) * math.sin(angle)
    np.testing.assert_allclose(image, 50.0 + 20.0 * along / math.hypot(63.5, 63.5), rtol=1e-5)
    neb = nebulosity_map((256, 256), np.random.default_rng(0), mean=10.0, slope=3.0)
    assert neb.min() > 0 and neb.mean() == pytest.approx(10.0, rel=0.3)
    # A steeper power spectrum is smoother: less power between neighbouring pixels.
    steep = nebulosity_map((256, 256), np.random.default_rng(0), mean=10.0, slope=4.0)
    assert np.abs(np.diff(np.log(steep))).mean() < np.abs(np.diff(np.log(neb))).mean()


@pytest.mark.parametrize("n", [1.0, 2.5])
def test_sersic_half_light_radius_is_r_eff(n: float) -> None:
    r_eff, size = 20.0, 401
    g = {"surface_brightness": 10.0, "r_eff": r_eff, "sersic_n": n, "x": 200.0, "y": 200.0,
         "ellipticity": 0.0, "theta": 0.0, "dust_depth": 0.0}  # fmt: skip
    image = sersic_image((size, size), g)
    b = gammaincinv(2.0 * n, 0.5)
    total = 2 * math.pi * r_eff**2 * 10.0 * n * math.exp(b) * b ** (-2 * n) * gamma(2 * n)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(xx - 200.0, yy - 200.0)
    # Radius enclosing half the (analytic) light, from the rendered pixels.
    order = np.argsort(radius.ravel())
    enclosed = np.cumsum(image.ravel()[order])
    half = radius.ravel()[order][np.searchsorted(enclosed, total / 2.0)]
    assert half == pytest.approx(r_eff, rel=0.03)


def test_dust_lane_absorbs_along_the_major_axis_only() -> None:
    g = {"surface_brightness": 10.0, "r_eff": 40.0, "sersic_n": 1.0, "x": 100.0, "y": 100.0,
         "ellipticity": 0.5, "theta": 0.0, "dust_depth": 0.0}  # fmt: skip
    clear = sersic_image((201, 201), g)
    dusty = sersic_image(
        (201, 201), {**g, "dust_depth": 0.8, "dust_width": 0.05, "dust_offset": 0.0}
    )
    transmission = dusty / clear
    # theta = 0: the major axis is the row through the nucleus.
    assert transmission[100, 100] == pytest.approx(0.2, abs=1e-6)
    assert transmission[100, 60] < 0.5  # still in the lane one r_eff along it
    assert transmission[70, 100] == pytest.approx(1.0, abs=1e-3)  # off the lane
    assert np.all(transmission <= 1.0 + 1e-12)


def test_extended_galaxies_are_larger_than_a_patch() -> None:
    cfg = {"probability": 1.0, "count": 1, "r_eff": [80.0, 80.0], "sersic_n": [1.0, 1.0]}
    image, catalog = render_field(256, np.random.default_rng(0), sky=0.0, extended=cfg, **_EMPTY)
    (galaxy,) = catalog["extended"]
    assert galaxy["r_eff"] == 80.0
    # Light well beyond a 64 px patch from its centre.
    x, y = round(galaxy["x"]), round(galaxy["y"])
    far = [image[y, x + dx] for dx in (-70, 70) if 0 <= x + dx < 256]
    assert far and min(far) > 0.2 * galaxy["surface_brightness"]


def test_bleed_trails_stay_in_the_column_and_never_exceed_the_full_well() -> None:
    image = np.full((40, 9), 10.0)
    image[18:21, 4] = [500.0, 900.0, 500.0]
    image[19, 3] = 90.0  # a neighbour below the full well: untouched
    before = image.copy()
    bleed_columns(image, 100.0)
    assert image.max() <= 100.0
    changed = np.argwhere(image != before)
    assert set(changed[:, 1]) == {4}
    # The column's charge is conserved (the trail does not reach the frame edge) ...
    assert image[:, 4].sum() == pytest.approx(before[:, 4].sum())
    # ... and the trail is symmetric and contiguous: full well, then one partial pixel each way.
    full = np.flatnonzero(image[:, 4] == 100.0)
    assert np.array_equal(full, np.arange(full[0], full[-1] + 1))
    assert 19 - full[0] == full[-1] - 19
    # Near the edge, what does not fit leaves the frame: nothing beyond the full well remains.
    edge = np.full((6, 1), 0.0)
    edge[1, 0] = 1e4
    bleed_columns(edge, 100.0)
    assert np.all(edge == 100.0)


def test_bleed_in_a_field_keeps_unsaturated_columns() -> None:
    kwargs = {"sky": 20.0, "saturation": 2e4, "n_stars": 30, "star_flux_range": (1e5, 1e6)}
    clipped, catalog = render_field(96, np.random.default_rng(0), **kwargs)
    bled, catalog_bled = render_field(96, np.random.default_rng(0), bleed=1.0, **kwargs)
    assert catalog_bled["bleed"] and "bleed" not in catalog
    assert bled.max() <= 2e4
    columns = np.flatnonzero((bled != clipped).any(axis=0))
    assert 0 < len(columns) < 96
    # Bleeding only adds charge clipping threw away, along the saturated columns.
    assert np.all(bled >= clipped - 1e-3)
    assert set(columns) <= set(np.flatnonzero((clipped >= 2e4).any(axis=0)))


def test_over_subtracted_sky_is_negative_with_the_photon_noise_of_the_true_sky() -> None:
    image, catalog = _sky_only(pedestal_probability=1.0, pedestal=1.3)
    assert catalog["pedestal"] == pytest.approx(65.0)
    np.testing.assert_allclose(image, -15.0, atol=1e-4)
    clean = torch.from_numpy(image)[None, None].repeat(4, 1, 1, 1)
    pedestal = torch.full_like(clean, catalog["pedestal"])
    noise = PoissonGaussianNoise(gain=1.0, read_noise=3.0)
    rng = torch.Generator().manual_seed(0)
    out = SupervisedPairing(noise)({"clean": clean, "pedestal": pedestal}, rng)
    residual = (out["input"] - out["truth"]).double()
    assert torch.equal(out["truth"], clean)  # the truth is the subtracted field
    assert residual.mean().item() == pytest.approx(0.0, abs=0.1)
    # Photons 50 e- plus read noise 3 e-: variance 59, not the 9 of a clamped negative level.
    assert residual.var().item() == pytest.approx(59.0, rel=0.05)
    first, second, truth = noise.sample_pair(clean, rng, pedestal=pedestal)
    assert (first - truth).var().item() == pytest.approx(59.0, rel=0.05)
    pair = Noise2NoisePairing(noise)({"clean": clean, "pedestal": pedestal}, rng)
    assert (pair["input"] - pair["target"]).var().item() == pytest.approx(118.0, rel=0.05)


def _write_stamp(path: Path, data: np.ndarray) -> str:
    fits.PrimaryHDU(data).writeto(path)
    return str(path)


def test_psf_file_stamp_is_used_and_normalised(tmp_path: Path) -> None:
    yy, xx = np.mgrid[-10:11, -10:11]
    # Elongated along x (no analytic family is) and not unit-flux, with a noisy negative pixel.
    star = 1000.0 * np.exp(-0.5 * ((xx / 3.0) ** 2 + (yy / 1.2) ** 2))
    star[0, 0] = -2.0
    path = _write_stamp(tmp_path / "psf.fits", star)
    stamp = render_psf_stamp(10, psf_file=path)
    expected = np.clip(star, 0, None) / np.clip(star, 0, None).sum()
    np.testing.assert_allclose(stamp, expected, atol=1e-6)
    image, catalog = render_field(
        64, np.random.default_rng(0), sky=0.0, n_stars=1, n_galaxies=0, n_bright_stars=0,
        psf_file=path,
    )  # fmt: skip
    assert catalog["psf_family"] == "file" and catalog["psf"] == {"psf_file": path}
    assert image.sum() == pytest.approx(catalog["flux"][0], rel=0.02)
    rows, cols = np.mgrid[0:64, 0:64]
    w = image / image.sum()
    var_x = (w * (cols - (w * cols).sum()) ** 2).sum()
    var_y = (w * (rows - (w * rows).sum()) ** 2).sum()
    assert var_x / var_y == pytest.approx((3.0 / 1.2) ** 2, rel=0.15)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        (np.zeros((2, 9, 9)), "2-D"),
        (np.zeros((9, 9)), "no positive flux"),
    ],
)
def test_bad_psf_file_is_a_one_line_error(tmp_path: Path, content, match: str) -> None:
    path = str(tmp_path / "missing.fits")
    if content is not None:
        path = _write_stamp(tmp_path / "bad.fits", content)
    with pytest.raises(UserError, match=match) as info:
        render_field(32, np.random.default_rng(0), psf_file=path)
    assert "scene.psf_file" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"background": {"vignette": 0.5}}, "unknown key.*vignette"),
        ({"background": {"pedestal_probability": 1.5}}, "pedestal_probability"),
        ({"background": {"vignetting_probability": 1, "vignetting": [0.5, 2.0]}}, "vignetting"),
        ({"extended": {"probability": 1, "ellipticity": [0.5, 1.5]}}, "ellipticity"),
        ({"bleed": 2.0, "saturation": 1e4}, "scene.bleed"),
        ({"bleed": -1.0}, "scene.bleed"),
    ],
)
def test_bad_realism_options_are_one_line_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        render_field(32, np.random.default_rng(0), **kwargs)
    assert "\n" not in str(info.value)


def test_realistic_yaml_draws_each_feature_in_some_fields() -> None:
    scene = _scene("simulated", "simulated_randomized", "simulated_realistic")
    catalogs, minima = [], []
    for seed in range(8):
        image, catalog = render_field(96, np.random.default_rng(seed), **scene)
        catalogs.append(catalog)
        minima.append(image.min())
    assert any(c["extended"] for c in catalogs) and any(c["bleed"] for c in catalogs)
    drawn = [c["background"] for c in catalogs]
    assert any(b["gradient"] > 0 for b in drawn) and any(b["vignetting"] < 1 for b in drawn)
    assert any(b["nebulosity"] > 0 for b in drawn)
    # Only fields with a subtracted pedestal have negative clean pixels, and some do.
    negative = [c["pedestal"] > 0 for c, low in zip(catalogs, minima, strict=True) if low < 0]
    assert negative and all(negative)


def test_datamodule_carries_the_pedestal_to_the_noise() -> None:
    dm = SimulatedFieldDataModule(
        SupervisedPairing(PoissonGaussianNoise(read_noise=0.0)),
        AsinhNormalizer(softening=3.0),
        field_size=32, n_train_fields=1, n_val_fields=1, n_test_fields=1, patch_size=32,
        batch_size=8, patches_per_epoch=8, val_patches_per_field=1,
        scene={"sky": 40.0, **_EMPTY, "background": {"pedestal_probability": 1.0, "pedestal": 1.5}},
    )  # fmt: skip
    dm.setup("fit")
    assert dm.train_catalogs[0]["pedestal"] == pytest.approx(60.0)
    batch = next(iter(dm.train_dataloader()))
    assert torch.all(batch["pedestal"] == 60.0) and torch.allclose(
        batch["clean"], torch.tensor(-20.0)
    )
    paired = dm.pairing(batch, torch.Generator().manual_seed(0))
    # Shot noise of the 40 photons that arrived, not of the -20 e- left after subtraction.
    assert (paired["input"] - paired["truth"]).var().item() == pytest.approx(40.0, rel=0.1)
    # The fixed validation examples were drawn the same way.
    val = dm.val_set.tensors
    assert (val["input"] - val["truth"]).var().item() == pytest.approx(40.0, rel=0.2)
