import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astrorestore.data.simulation.scene import render_field
from tests.conftest import run_script

TINY = ["debug=tiny", "logger=csv"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One short real training shared by the tests that need a checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    result = run_script(
        "train.py", *TINY, "trainer.max_epochs=3", "data.patches_per_epoch=64", root=root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((root / "logs" / "train" / "runs").iterdir())
    return root, run_dir, result


@pytest.fixture
def noisy_fits(tmp_path):
    """A 2-extension FITS: primary header + SCI image with a WCS; truth kept aside."""
    truth, _ = render_field(96, np.random.default_rng(5), n_stars=12, n_galaxies=4)
    rng = np.random.default_rng(6)
    noisy = (rng.poisson(truth) + rng.normal(0, 5.0, truth.shape)).astype(np.float32)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [48, 48]
    wcs.wcs.cdelt = [-3e-5, 3e-5]
    header = wcs.to_header()
    header["FILTER"] = "F200W"
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = "SIMULATED"
    path = tmp_path / "field.fits"
    fits.HDUList([primary, fits.ImageHDU(noisy, header=header, name="SCI")]).writeto(path)
    return path, noisy, truth, header


def restore_sci(run, ckpt, path, out, *switches):
    """``infer.py`` on ``path`` in 64 px tiles; returns the output's SCI data (float64), header."""
    args = [f"ckpt_path={ckpt}", f"input={path}", f"output={out}", "tile_size=64", "overlap=16"]
    result = run("infer.py", *args, "progress=false", *switches)
    assert result.returncode == 0, result.stderr[-2000:]
    with fits.open(out) as hdul:
        return hdul["SCI"].data.astype(np.float64), hdul["SCI"].header.copy()
