"""Tests of the simulated deep-field renderer: today's field unchanged, and per-field PSFs, skies,
crowding and saturation for training that does not teach one PSF."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from astrorestore.data.simulation.scene import power_law_fluxes, render_field, render_psf_stamp
from astrorestore.errors import UserError


@pytest.mark.parametrize("kind", [0, 1])
def test_flux_is_conserved_for_isolated_sources(kind: int) -> None:
    # One source per field, so it is isolated; only those whose stamp (radius <= 61 px for the
    # largest galaxy) lies inside the frame are measured.
    ratios = []
    for seed in range(24):
        n_stars, n_galaxies = (1, 0) if kind == 0 else (0, 1)
        image, catalog = render_field(
            256,
            np.random.default_rng(seed),
            n_stars=n_stars,
            n_galaxies=n_galaxies,
            n_bright_stars=seed % 2,
        )
        x, y = catalog["x"][0], catalog["y"][0]
        if min(x, y, 255 - x, 255 - y) < 62:
            continue
        cx, cy = round(x), round(y)
        box = image[cy - 62 : cy + 63, cx - 62 : cx + 63].astype(np.float64) - catalog["sky"]
        ratios.append(box.sum() / catalog["flux"][0])
    assert len(ratios) >= 4
    np.testing.assert_allclose(ratios, 1.0, atol=0.02)


def test_brightest_star_reaches_huge_dynamic_range() -> None:
    image, catalog = render_field(512, np.random.default_rng(0))
    assert image.max() > 1e4
    # Most sources are faint (power-law counts): the median flux is far below the maximum.
    assert np.median(catalog["flux"]) < 0.05 * catalog["flux"].max()


def test_same_seed_same_image_and_catalog_in_frame() -> None:
    a, cat_a = render_field((96, 128), np.random.default_rng(3))
    b, cat_b = render_field((96, 128), np.random.default_rng(3))
    c, _ = render_field((96, 128), np.random.default_rng(4))
    assert a.dtype == np.float32 and a.shape == (96, 128)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cat_a["flux"], cat_b["flux"])
    assert not np.array_equal(a, c)
    assert np.all((cat_a["x"] >= 0) & (cat_a["x"] <= 127))
    assert np.all((cat_a["y"] >= 0) & (cat_a["y"] <= 95))
    assert set(np.unique(cat_a["kind"])) <= {0, 1}
    assert len(cat_a["x"]) == 60 + 25
    # The sky is included: no pixel is below it.
    assert a.min() >= cat_a["sky"] - 1e-3


def test_power_law_counts() -> None:
    rng = np.random.default_rng(0)
    flux = power_law_fluxes(rng, 200_000, 1.0, 1e4, 1.5)
    assert flux.min() >= 1.0 and flux.max() <= 1e4
    # N(>F) ~ F^-1.5: a decade in flux is a factor ~31.6 in counts.
    ratio = np.sum(flux > 1.0) / np.sum(flux > 10.0)
    assert ratio == pytest.approx(10**1.5, rel=0.05)


def test_render_is_fast() -> None:
    rng = np.random.default_rng(0)
    render_field(256, rng)  # warm-up (imports, FFT plans)
    start = time.perf_counter()
    render_field(256, rng)
    assert time.perf_counter() - start < 1.0


def test_bad_values_raise_user_error() -> None:
    with pytest.raises(UserError, match="star_flux_range"):
        render_field(64, np.random.default_rng(0), star_flux_range=(10.0, 1.0))
    with pytest.raises(UserError, match="psf_fwhm"):
        render_field(64, np.random.default_rng(0), psf_fwhm=0.0)


# SHA-256 of the float32 bytes of default fields, recorded before the PSF/sky/crowding options
# were added: with today's keywords the renderer must stay bit-for-bit what it was.
_DEFAULT_FIELD_SHA256 = {
    (256, 0): "0dcfe4ba6a9ac09b1f776a4bda5b8712af62c59b5baed46ade3d01ffae4b192b",
    ((96, 128), 3): "1ba8520a02795deb2654543b9fb19e675eb210dc7edc3fda4268eb3f4ac6cee6",
}


@pytest.mark.parametrize("size, seed", list(_DEFAULT_FIELD_SHA256))
def test_default_field_is_unchanged_bit_for_bit(size, seed) -> None:
    image, _ = render_field(size, np.random.default_rng(seed))
    assert hashlib.sha256(image.tobytes()).hexdigest() == _DEFAULT_FIELD_SHA256[(size, seed)]


DATA_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"
# Only the source, no sky or neighbours: a field that is exactly one star.
_ONE_STAR = {"sky": 0.0, "n_stars": 1, "n_galaxies": 0, "n_bright_stars": 0}


def test_simulated_yaml_scene_is_todays_field() -> None:
    scene = OmegaConf.load(DATA_CONFIGS / "simulated.yaml").scene
    image, _ = render_field(256, np.random.default_rng(0), **scene)
    assert hashlib.sha256(image.tobytes()).hexdigest() == _DEFAULT_FIELD_SHA256[(256, 0)]


def _half_max_width(stamp: np.ndarray) -> float:
    """FWHM along the central row, by linear interpolation of the half-maximum crossings."""
    row = stamp[stamp.shape[0] // 2]
    c = int(np.argmax(row))
    half = row[c] / 2.0
    right = c + np.argmax(row[c:] < half)
    left = c - np.argmax(row[c::-1] < half)
    x_r = right - 1 + (row[right - 1] - half) / (row[right - 1] - row[right])
    x_l = left + 1 - (row[left + 1] - half) / (row[left + 1] - row[left])
    return float(x_r - x_l)


@pytest.mark.parametrize("family", ["moffat", "gaussian", "airy"])
def test_psf_stamp_has_unit_flux_and_the_requested_fwhm(family: str) -> None:
    # A wide PSF, so pixel integration barely broadens it.
    stamp = render_psf_stamp(40, psf=family, psf_fwhm=8.0, psf_beta=2.5)
    assert stamp.shape == (81, 81)
    assert stamp.sum() == pytest.approx(1.0, abs=1e-12)
    assert _half_max_width(stamp) == pytest.approx(8.0, rel=0.03)


def test_families_differ_in_their_wings() -> None:
    # Same FWHM: a beta=2 Moffat has far more light at 4 FWHM than a Gaussian, and the Airy
    # pattern has rings (a local minimum between the core and the first ring).
    r = 10
    moffat = render_psf_stamp(r, psf="moffat", psf_fwhm=2.5, psf_beta=2.0)[r, r + 10]
    gauss = render_psf_stamp(r, psf="gaussian", psf_fwhm=2.5)[r, r + 10]
    assert moffat > 1e3 * gauss
    row = render_psf_stamp(40, psf="airy", psf_fwhm=8.0)[40, 40:]
    assert np.any(np.diff(np.sign(np.diff(row))) > 0)


@pytest.mark.parametrize("family", ["moffat", "gaussian", "airy"])
def test_star_is_the_catalog_psf_at_its_sub_pixel_position(family: str) -> None:
    # Drawn FWHM and beta: the catalog must record the PSF that was actually rendered.
    scene = {**_ONE_STAR, "psf": family, "psf_fwhm": [1.2, 5.0], "psf_beta": [2.0, 5.0]}
    r, checked = 6, 0
    for seed in range(12):
        image, cat = render_field(96, np.random.default_rng(seed), **scene, spikes=4)
        x, y, flux = cat["x"][0], cat["y"][0], cat["flux"][0]
        assert cat["psf_family"] == family and 1.2 <= cat["psf_fwhm"] <= 5.0
        cx, cy = round(x), round(y)
        if min(cx, cy, 95 - cx, 95 - cy) <= r:
            continue
        stamp = render_psf_stamp(64, **cat["psf"], dx=x - cx, dy=y - cy)
        model = flux * stamp[64 - r : 64 + r + 1, 64 - r : 64 + r + 1]
        cut = image[cy - r : cy + r + 1, cx - r : cx + r + 1]
        # Shapes are compared: the star's own stamp is shorter than 64 px and renormalised (its
        # far wings put back in), which scales it by up to a few per cent.
        np.testing.assert_allclose(cut / cut.sum(), model / model.sum(), rtol=1e-4, atol=1e-7)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("family", ["moffat", "gaussian", "airy"])
def test_sub_pixel_positions_are_pixel_integrated(family: str) -> None:
    # The flux-weighted centroid of a pixel-integrated star is its true sub-pixel position.
    for dx, dy in [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.45)]:
        stamp = render_psf_stamp(30, psf=family, psf_fwhm=1.5, dx=dx, dy=dy)
        grid = np.arange(-30, 31)
        assert (stamp.sum(axis=0) * grid).sum() == pytest.approx(dx, abs=0.01)
        assert (stamp.sum(axis=1) * grid).sum() == pytest.approx(dy, abs=0.01)


def test_ranges_are_drawn_per_field_log_uniform() -> None:
    scene = {
        "n_stars": [0, 40],
        "n_galaxies": 0,
        "psf_fwhm": [1.2, 5.0],
        "psf_beta": [2.0, 5.0],
        "sky": [5.0, 200.0],
    }
    rng = np.random.default_rng(0)
    cats = [render_field(8, rng, **scene)[1] for _ in range(800)]
    fwhm = np.array([c["psf_fwhm"] for c in cats])
    sky = np.array([c["sky"] for c in cats])
    beta = np.array([c["psf_beta"] for c in cats])
    n = np.array([np.sum(c["kind"] == 0) for c in cats])
    assert fwhm.min() >= 1.2 and fwhm.max() <= 5.0 and sky.min() >= 5 and sky.max() <= 200
    # Log-uniform: the median is the geometric mean of the bounds, not the arithmetic one.
    # Log-uniform: the median is the geometric mean of the bounds (2.45 px), far from the
    # arithmetic one (3.1 px); the tolerances are ~4 standard errors for 800 fields.
    assert np.median(fwhm) == pytest.approx(np.sqrt(1.2 * 5.0), rel=0.1)
    assert np.median(sky) == pytest.approx(np.sqrt(5.0 * 200.0), rel=0.3)
    assert np.mean(beta) == pytest.approx(3.5, abs=0.15)
    assert n.min() == 0 and n.max() == 40 and np.mean(n) == pytest.approx(20, abs=1.7)


def test_family_mixture_follows_its_probabilities() -> None:
    mix = {"moffat": 0.5, "gaussian": 0.0, "airy": 0.5}
    scene = {"n_stars": 0, "n_galaxies": 0, "psf": mix}
    families = [
        render_field(8, np.random.default_rng(s), **scene)[1]["psf_family"] for s in range(400)
    ]
    assert families.count("gaussian") == 0
    assert families.count("airy") / 400 == pytest.approx(0.5, abs=0.08)


def test_airy_spikes_point_along_their_axes() -> None:
    r = 30
    four = render_psf_stamp(r, psf="airy", psf_fwhm=2.0, spikes=4, spike_intensity=0.2)
    six = render_psf_stamp(r, psf="airy", psf_fwhm=2.0, spikes=6, spike_intensity=0.2)
    none = render_psf_stamp(r, psf="airy", psf_fwhm=2.0, spikes=0)
    d = 15
    # Four spikes: along x and y, not along the diagonal. Six: one points along +y, none along x.
    assert four[r, r + d] > 10 * none[r, r + d]
    assert four[r + d, r] == pytest.approx(four[r, r + d], rel=1e-6)
    # Away from the spikes the core carries the other 80 % of the light.
    assert four[r + 11, r + 11] == pytest.approx(0.8 * none[r + 11, r + 11], rel=0.05)
    assert six[r + d, r] > 10 * none[r + d, r]
    assert six[r, r + d] == pytest.approx(0.8 * none[r, r + d], rel=0.05)


def test_saturation_clips_cores_and_flags_them() -> None:
    scene = {"n_stars": 30, "n_bright_stars": 3, "psf_fwhm": 1.2}
    free, cat_free = render_field(128, np.random.default_rng(2), **scene)
    image, cat = render_field(128, np.random.default_rng(2), **scene, saturation=2e4)
    assert free.max() > 2e4 and image.max() == pytest.approx(2e4)
    assert not cat_free["saturated"].any() and cat["saturation"] == 2e4
    flagged = cat["saturated"]
    assert 1 <= flagged.sum() < len(flagged)
    centre = free[np.rint(cat["y"]).astype(int), np.rint(cat["x"]).astype(int)]
    np.testing.assert_array_equal(flagged, centre >= 2e4)
    # Only pixels above the full well changed; everything else is the same field.
    np.testing.assert_array_equal(image[free < 2e4], free[free < 2e4])


def test_randomized_yaml_renders_varied_fields() -> None:
    scene = OmegaConf.load(DATA_CONFIGS / "simulated_randomized.yaml").scene
    cats = [render_field(64, np.random.default_rng(s), **scene)[1] for s in range(40)]
    assert {c["psf_family"] for c in cats} == {"moffat", "gaussian", "airy"}
    assert np.ptp([c["psf_fwhm"] for c in cats]) > 2.0
    assert np.ptp([c["sky"] for c in cats]) > 50.0


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"psf": "sersic"}, "scene.psf="),
        ({"psf": {"moffat": -1.0}}, "scene.psf="),
        ({"psf_fwhm": [5.0, 1.0]}, "scene.psf_fwhm"),
        ({"psf_beta": [0.5, 2.0]}, "scene.psf_beta"),
        ({"sky": [0.0, 10.0]}, "scene.sky"),
        ({"n_stars": [5, 2]}, "scene.n_stars"),
        ({"psf": "airy", "spikes": 3}, "scene.spikes"),
        ({"spike_intensity": 1.0}, "scene.spike_intensity"),
        ({"saturation": 10.0}, "scene.saturation"),
    ],
)
def test_bad_scene_options_raise_one_line_user_error(bad: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        render_field(32, np.random.default_rng(0), **bad)
    assert "\n" not in str(info.value)
