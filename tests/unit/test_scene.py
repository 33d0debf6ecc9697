"""Tests of the simulated deep-field renderer."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from astrorestore.data.scene import power_law_fluxes, render_field
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
