"""RGB <-> YCbCr (ITU-R BT.601, full range) for float images.

Colour images are restored on luminance only: the networks are trained on single-channel
data and chroma carries little of the noise a viewer notices. For float data the usual
+128 chroma offset is pointless, so Cb/Cr are centred on zero.
"""

from __future__ import annotations

import numpy as np

_KR = 0.299
_KB = 0.114
_KG = 1.0 - _KR - _KB
# Chroma scales chosen so Cb, Cr span [-0.5, 0.5] for RGB in [0, 1].
_CB_SCALE = 2.0 * (1.0 - _KB)
_CR_SCALE = 2.0 * (1.0 - _KR)


def _check(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {arr.shape}")
    return arr


def _out_dtype(arr: np.ndarray) -> np.dtype:
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W, 3) Y, Cb, Cr; Y has the units of the input."""
    rgb = _check(rgb, "rgb")
    # float64 internally so the round trip is exact to float32 precision.
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = _KR * r + _KG * g + _KB * b
    cb = (b - y) / _CB_SCALE
    cr = (r - y) / _CR_SCALE
    return np.stack([y, cb, cr], axis=-1).astype(_out_dtype(rgb))


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rgb_to_ycbcr`."""
    ycc = _check(ycc, "ycc")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    r = y + _CR_SCALE * cr
    b = y + _CB_SCALE * cb
    g = (y - _KR * r - _KB * b) / _KG
    return np.stack([r, g, b], axis=-1).astype(_out_dtype(ycc))
