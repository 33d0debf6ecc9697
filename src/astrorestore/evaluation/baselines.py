"""Classical restorers every learned method is compared against, on float32 images in electrons.

Each baseline is ``(image, *, gain, read_noise, **kw) -> image``, returns float32 in electrons
and never clips. ``bilateral`` works on a copy normalised by the noise model and inverts that
normalisation exactly; ``bm3d_vst`` stabilises the Poisson-Gaussian variance with the
generalised Anscombe transform, denoises with BM3D at unit sigma and returns through the
closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2011/2013), which,
unlike the algebraic inverse, does not bias faint fluxes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from astrorestore.errors import UserError


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise UserError(
            f"baselines restore 2-D frames; got shape {image.shape}: pass one plane at a time"
        )
    return image.astype(np.float32, copy=False)


def gaussian(
    image: np.ndarray, *, gain: float = 1.0, read_noise: float = 5.0, sigma: float = 1.0
) -> np.ndarray:
    """Gaussian smoothing with ``sigma`` pixels (reflecting edges, mean preserved)."""
    return ndimage.gaussian_filter(_as_image(image).astype(np.float64), sigma).astype(np.float32)


def median(
    image: np.ndarray, *, gain: float = 1.0, read_noise: float = 5.0, size: int = 3
) -> np.ndarray:
    """Median filter over ``size`` x ``size`` pixels."""
    return ndimage.median_filter(_as_image(image), size=size).astype(np.float32)


def bilateral(
    image: np.ndarray,
    *,
    gain: float = 1.0,
    read_noise: float = 5.0,
    kernel_size: int = 5,
    sigma_space: float = 1.5,
    sigma_color: float = 2.0,
) -> np.ndarray:
    """kornia bilateral blur; ``sigma_color`` is in units of the sky noise sigma.

    The image is shifted by its median and divided by the noise-model sigma at that level
    (``sqrt(median / gain + read_noise^2)``) so one ``sigma_color`` suits any exposure; both
    steps are undone exactly afterwards.
    """
    import torch
    from kornia.filters import bilateral_blur

    data = _as_image(image)
    offset = float(np.nanmedian(data))
    scale = float(np.sqrt(max(offset, 0.0) / gain + read_noise**2))
    scale = max(scale, 1e-6 * max(abs(offset), 1.0))
    z = torch.from_numpy((data.astype(np.float64) - offset) / scale).float()[None, None]
    out = bilateral_blur(
        z,
        (kernel_size, kernel_size),
        sigma_color,
        (sigma_space, sigma_space),
        border_type="reflect",
    )[0, 0]
    return (out.double().numpy() * scale + offset).astype(np.float32)


def anscombe(counts: np.ndarray, read_sigma: float) -> np.ndarray:
    """Generalised Anscombe transform for unit-gain Poisson plus Gaussian(0, read_sigma)."""
    return 2.0 * np.sqrt(np.maximum(counts + 0.375 + read_sigma**2, 0.0))


def inverse_anscombe(value: np.ndarray, read_sigma: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`anscombe`.

    Maps E[anscombe(noisy)] back to the mean count, not anscombe's algebraic inverse (biased
    low at low counts). Values below the transform's minimum meaningful level (~0.8) are held
    there, where the approximation stops being monotonic.
    """
    d = np.maximum(np.asarray(value, float), 0.8)
    root = np.sqrt(1.5)
    return (
        0.25 * d**2 + 0.25 * root / d - 1.375 / d**2 + 0.625 * root / d**3 - 0.125 - read_sigma**2
    )


def bm3d_vst(
    image: np.ndarray, *, gain: float = 1.0, read_noise: float = 5.0, profile: str = "np"
) -> np.ndarray:
    """BM3D after a variance-stabilising transform for Poisson-Gaussian noise.

    In photon counts ``c = x * gain`` the noise is unit-gain Poisson plus Gaussian of sigma
    ``read_noise * gain``; the transform makes it ~unit variance for BM3D (``sigma_psd=1``).
    """
    try:
        import bm3d
    except ImportError:
        raise UserError("bm3d_vst needs the optional package bm3d: pip install bm3d") from None
    data = _as_image(image).astype(np.float64)
    read_sigma = read_noise * gain
    stabilised = anscombe(data * gain, read_sigma)
    denoised = bm3d.bm3d(stabilised, sigma_psd=1.0, profile=profile)
    return (inverse_anscombe(np.asarray(denoised), read_sigma) / gain).astype(np.float32)


def noisy(image: np.ndarray, *, gain: float = 1.0, read_noise: float = 5.0) -> np.ndarray:
    """The identity: the noisy input itself, the floor every method must beat."""
    return _as_image(image).copy()


Baseline = Callable[..., np.ndarray]

BASELINES: dict[str, Baseline] = {
    "noisy": noisy,
    "gaussian": gaussian,
    "median": median,
    "bilateral": bilateral,
    "bm3d_vst": bm3d_vst,
}


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name``, or a UserError listing the valid names."""
    if name not in BASELINES:
        raise UserError(f"method={name!r} is unknown: use one of {', '.join(BASELINES)}")
    return BASELINES[name]
