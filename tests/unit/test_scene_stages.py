"""``render_field`` split into named stages renders the very same fields: checksums of the image
and the catalogue of seeded cases, computed on the commit before the split (7517bec)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from astrorestore.data.simulation.scene import render_field

# Every per-field draw at once: ranges, PSF families with spikes, saturation.
RANDOMIZED = {
    "sky": [5.0, 200.0],
    "n_stars": [20, 200],
    "n_galaxies": [5, 40],
    "psf": {"moffat": 0.6, "gaussian": 0.15, "airy": 0.25},
    "psf_fwhm": [1.2, 5.0],
    "psf_beta": [2.0, 5.0],
    "spikes": 6,
    "spike_length": 8.0,
    "saturation": 60000.0,
}
CASES = {
    "default": ((64, 64), 123, {}),
    "rectangular_airy": ((48, 80), 5, {"psf": "airy", "spikes": 4, "saturation": 20000.0}),
    "randomized": ((96, 96), 7, RANDOMIZED),
}
EXPECTED = {
    "default": "182a7b18193dc50c19ff902b8245aaaa467120c8575f5a5e761278ab62004613",
    "rectangular_airy": "29b3d269b1cff4b25c0d93cb3251b356c33a06d6871d8bd2158647afcf6bf90d",
    "randomized": "b7ad6ba4419efc1b73a829f42af6284688d781195711601218e2d03e82e1e719",
}


def _plain(value: object) -> str:
    """Exact text of a plain value, the same whatever numpy scalar type carries it."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_plain(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, bool | np.bool_ | int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return float(value).hex()
    return str(value)


def field_checksum(image: np.ndarray, catalog: dict) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(str(image.dtype).encode())
    for key in sorted(catalog):
        digest.update(key.encode())
        value = catalog[key]
        if not isinstance(value, np.ndarray):
            digest.update(_plain(value).encode())
            continue
        value = np.asarray(value)
        digest.update(str(value.dtype).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", list(CASES))
def test_render_field_is_unchanged_bit_for_bit(name):
    size, seed, scene = CASES[name]
    image, catalog = render_field(size, np.random.default_rng(seed), **scene)
    assert field_checksum(image, catalog) == EXPECTED[name]
