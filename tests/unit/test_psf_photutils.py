"""The photutils PSF-core stage on a tiny synthetic field of known Gaussian stars."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("photutils")

from astrorestore.errors import UserError  # noqa: E402
from astrorestore.postprocess.psf_photutils import PhotutilsPSFCores  # noqa: E402

SKY, READ_NOISE, FWHM, FLUX = 100.0, 5.0, 3.0, 1e5


def gaussian_field(
    rng: np.random.Generator, n_side: int = 3, spacing: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grid of equal Gaussian stars at sub-pixel positions on a flat sky (electrons, pixel-
    integrated), its noisy draw (Poisson, gain 1, + read noise), and the (x, y) positions."""
    size = n_side * spacing
    sigma = FWHM / 2.3548
    sub = 5  # sub-samples per pixel side: the stars are integrated over the pixels
    fine = (np.arange(size * sub) + 0.5) / sub - 0.5
    truth = np.full((size, size), SKY)
    positions = []
    for i in range(n_side):
        for j in range(n_side):
            x = spacing * (i + 0.5) + rng.uniform(-0.5, 0.5)
            y = spacing * (j + 0.5) + rng.uniform(-0.5, 0.5)
            gx = np.exp(-0.5 * ((fine - x) / sigma) ** 2)
            gy = np.exp(-0.5 * ((fine - y) / sigma) ** 2)
            star = np.outer(gy, gx).reshape(size, sub, size, sub).sum(axis=(1, 3))
            truth += FLUX * star / star.sum()
            positions.append((x, y))
    noisy = rng.poisson(truth) + rng.normal(0.0, READ_NOISE, truth.shape)
    return truth, noisy.astype(np.float32), np.array(positions)


@pytest.fixture(scope="module")
def fitted():
    truth, noisy, positions = gaussian_field(np.random.default_rng(3))
    stage = PhotutilsPSFCores(gain=1.0, min_psf_stars=5, maxiters=5)
    out = stage(noisy, noisy)
    return stage, truth, noisy, positions, out


def test_refit_recovers_the_known_fluxes_within_one_percent(fitted):
    stage, _, _, positions, _ = fitted
    stars = stage.stars
    assert len(stars) == len(positions)
    for x, y in positions:
        nearest = np.argmin(np.hypot(stars["x"] - x, stars["y"] - y))
        assert np.hypot(stars["x"][nearest] - x, stars["y"][nearest] - y) < 0.1
        assert stars["flux"][nearest] == pytest.approx(FLUX, rel=0.01)


def test_replaced_cores_are_closer_to_the_truth_than_the_input(fitted):
    stage, truth, noisy, positions, out = fitted
    assert stage.info["stars_replaced"] >= 1 and out.dtype == np.float32
    yy, xx = np.mgrid[: truth.shape[0], : truth.shape[1]]
    cores = np.zeros(truth.shape, dtype=bool)
    for x, y in positions:
        cores |= np.hypot(xx - x, yy - y) <= FWHM
    error_in = np.mean((noisy - truth)[cores] ** 2)
    error_out = np.mean((out - truth)[cores] ** 2)
    assert error_out < 0.7 * error_in
    # beyond the ePSF's reach (4 FWHM + 1 px) from every star, nothing changes
    distance = np.min([np.hypot(xx - x, yy - y) for x, y in positions], axis=0)
    far = distance > 4 * FWHM + 2
    assert np.array_equal(out[far], noisy[far])


def test_too_few_stars_leaves_the_frame_unchanged():
    truth, noisy, _ = gaussian_field(np.random.default_rng(4), n_side=2)
    stage = PhotutilsPSFCores(gain=1.0, min_psf_stars=5)
    out = stage(noisy, noisy)
    assert np.array_equal(out, noisy)
    assert "fewer than the 5 needed" in stage.info["note"]


def test_bad_settings_and_frames_are_refused():
    with pytest.raises(UserError, match="gain"):
        PhotutilsPSFCores(gain=0.0)
    with pytest.raises(UserError, match="same shape"):
        PhotutilsPSFCores()(np.zeros((20, 20)), np.zeros((20, 21)))
