"""Embedded JWST-like frames, so ``python train.py data=jwst`` runs without a folder of data.

The frames are simulated, written once (seeded) into a folder and then read like any user's
folder, through the same preparation, tile cache and datasets, so the demo exercises the real
path: ``*_cal.fits`` files with SCI in MJy/sr (PHOTMJSR, XPOSURE), ERR and VAR_POISSON /
VAR_RNOISE in the same units, DQ with a few bad pixels (hot, DO_NOT_USE with NaN science,
JUMP_DET that stays usable) and a TAN WCS at the NIRCam short-wave pixel scale. Every pointing
is observed twice (independent noise, same WCS), so exposure pairs exist for Noise2Noise.

Like real JWST products they carry no gain keyword: the data module passes ``DEMO_GAIN`` for
them, as a user passes ``data.gain`` for real NIRCam frames, so the cache holds electrons.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from astrorestore.data.corruption.noise import PoissonGaussianNoise
from astrorestore.data.simulation.scene import render_field

log = logging.getLogger(__name__)

# Bump when the frames change: an old demo folder is then rewritten.
DEMO_VERSION = 1
DEMO_GAIN = 2.0  # e-/DN, NIRCam-like
PHOTMJSR = 0.25  # MJy/sr per DN/s
XPOSURE = 300.0  # seconds
READ_NOISE = 10.0  # electrons
PIXEL_SCALE = 0.031  # arcsec/px (NIRCam short wave)
# JWST DQ bits used here: DO_NOT_USE (0), JUMP_DET (2), HOT (11).
_DO_NOT_USE, _JUMP_DET, _HOT = 1 << 0, 1 << 2, 1 << 11
_MARKER = "demo.json"


def electrons_to_mjysr(values: np.ndarray) -> np.ndarray:
    """Electrons in one exposure -> MJy/sr (÷ gain ÷ exposure × PHOTMJSR)."""
    return (values / (DEMO_GAIN * XPOSURE) * PHOTMJSR).astype(np.float32)


def _header_cards(sci, primary, pointing: int, exposure: int, size: int) -> None:
    ph = primary.header
    ph["TELESCOP"], ph["INSTRUME"], ph["DETECTOR"] = "JWST", "NIRCAM", "NRCA1"
    ph["FILTER"], ph["PUPIL"] = "F200W", "CLEAR"
    ph["EFFEXPTM"] = XPOSURE
    ph["OBS_ID"] = f"V01234{pointing + 1:03d}001P00000000{exposure + 1:02d}"
    ph["ORIGIN"] = "astrorestore demo (simulated, not real data)"
    h = sci.header
    h["BUNIT"], h["PHOTMJSR"], h["XPOSURE"] = "MJy/sr", PHOTMJSR, XPOSURE
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"] = size / 2 + 0.5, size / 2 + 0.5
    # Pointings 20" apart in RA: distinct pointing ids, no overlap.
    h["CRVAL1"], h["CRVAL2"] = 53.16 + 0.0056 * pointing, -27.78
    h["CDELT1"], h["CDELT2"] = -PIXEL_SCALE / 3600.0, PIXEL_SCALE / 3600.0
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"


def _bad_pixels(rng: np.random.Generator, size: int, n: int) -> tuple:
    ys, xs = rng.integers(4, size - 4, n), rng.integers(4, size - 4, n)
    return ys, xs


DEMO_SKY = 50.0  # electrons per pixel
DEMO_FWHM = 2.5  # pixels: render_field's default PSF


def demo_fields(
    n_pointings: int = 5, exposures: int = 2, size: int = 256, seed: int = 0
) -> list[tuple[np.ndarray, dict, list[np.random.SeedSequence]]]:
    """The noiseless field (electrons, sky included), its catalog and the exposures' seeds of
    every pointing: what :func:`write_demo_frames` observes, and the truth a benchmark scores
    the demo frames against."""
    fields = []
    for field_seq in np.random.SeedSequence(seed).spawn(n_pointings):
        field_child, *exposure_seqs = field_seq.spawn(1 + exposures)
        clean, catalog = render_field(
            size, np.random.default_rng(field_child), sky=DEMO_SKY, n_stars=40, n_galaxies=15
        )
        fields.append((clean, catalog, exposure_seqs))
    return fields


def write_demo_frames(
    folder: str | Path,
    *,
    n_pointings: int = 5,
    exposures: int = 2,
    size: int = 256,
    seed: int = 0,
) -> list[Path]:
    """Write ``n_pointings × exposures`` JWST-like ``*_cal.fits`` frames into ``folder``.

    Each pointing is one field of :func:`demo_fields` (electrons, 50 e- sky); each exposure draws
    its own Poisson + Gaussian read noise (``PoissonGaussianNoise``) and its own bad pixels.
    """
    from astropy.io import fits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    noise = PoissonGaussianNoise(gain=1.0, read_noise=READ_NOISE)
    paths = []
    for p, (clean, _, exposure_seqs) in enumerate(demo_fields(n_pointings, exposures, size, seed)):
        for e, exp_seq in enumerate(exposure_seqs):
            rng = np.random.default_rng(exp_seq)
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            noisy, _ = noise(torch.from_numpy(clean)[None, None], generator)
            electrons = noisy[0, 0].numpy().astype(np.float32)
            var_poisson = np.clip(clean, 0, None).astype(np.float32)
            var_rnoise = np.full_like(var_poisson, READ_NOISE**2)
            dq = np.zeros((size, size), np.uint32)
            ys, xs = _bad_pixels(rng, size, 6)
            electrons[ys[:3], xs[:3]] = 5.0e4  # hot pixels: finite but useless
            dq[ys[:3], xs[:3]] = _HOT
            electrons[ys[3:], xs[3:]] = np.nan  # the pipeline's DO_NOT_USE pixels are NaN
            dq[ys[3:], xs[3:]] = _DO_NOT_USE
            jump_y, jump_x = _bad_pixels(rng, size, 4)
            dq[jump_y, jump_x] |= _JUMP_DET  # ramp fitting handled these: still usable
            to_mjysr = PHOTMJSR / (DEMO_GAIN * XPOSURE)
            primary = fits.PrimaryHDU()
            sci = fits.ImageHDU(electrons_to_mjysr(electrons), name="SCI")
            _header_cards(sci, primary, p, e, size)
            err = np.sqrt(var_poisson + var_rnoise) * to_mjysr
            hdus = [
                primary,
                sci,
                fits.ImageHDU(err.astype(np.float32), name="ERR"),
                fits.ImageHDU(dq, name="DQ"),
                fits.ImageHDU((var_poisson * to_mjysr**2).astype(np.float32), name="VAR_POISSON"),
                fits.ImageHDU((var_rnoise * to_mjysr**2).astype(np.float32), name="VAR_RNOISE"),
            ]
            path = folder / f"jw01234{p + 1:03d}001_0{e + 1}101_00001_nrca1_cal.fits"
            fits.HDUList(hdus).writeto(path, overwrite=True)
            paths.append(path)
    return paths


def ensure_demo_frames(folder: str | Path, *, seed: int = 0, **options: int) -> Path:
    """The demo folder, written on first use (and whenever its version or options change).

    Written into a temporary folder and renamed into place, so an interrupted run never
    leaves half a demo behind to be reused.
    """
    folder = Path(folder)
    wanted = {"version": DEMO_VERSION, "seed": int(seed), **options}
    marker = folder / _MARKER
    try:
        if json.loads(marker.read_text()) == wanted:
            log.info("using the embedded simulated JWST-like frames in %s", folder)
            return folder
    except (OSError, ValueError):
        pass
    log.info(
        "data.root is not set: writing simulated JWST-like frames (seed %d) to %s once; "
        "pass data.root=<folder of FITS frames> to train on your own",
        seed,
        folder,
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        paths = write_demo_frames(tmp, seed=seed, **options)
        (tmp / _MARKER).write_text(json.dumps(wanted))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d simulated frames to %s", len(paths), folder)
    return folder
