"""Array conversion shared by the truth-based measures: numpy or torch in, a float batch out.

The realism, consistency and calibration measures work on torch tensors shaped (B, C, H, W); a
single (C, H, W) image or a (H, W) plane is promoted, and numpy arrays are converted, so a
notebook user can pass what ``astropy.io.fits`` or ``skimage`` gave them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from astrorestore.errors import UserError


def as_float_tensor(value: Tensor | np.ndarray | float) -> Tensor:
    """A tensor with the value's data; float64 stays float64, anything else becomes float32."""
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    if tensor.dtype != torch.float64:
        tensor = tensor.float()
    return tensor


def as_batch(images: Tensor | np.ndarray, name: str = "image") -> Tensor:
    """(H, W), (C, H, W) or (B, C, H, W) -> a float (B, C, H, W) tensor (a view where possible)."""
    tensor = as_float_tensor(images)
    if tensor.dim() == 2:
        return tensor[None, None]
    if tensor.dim() == 3:
        return tensor[None]
    if tensor.dim() == 4:
        return tensor
    raise UserError(
        f"{name} has shape {tuple(tensor.shape)}: use (H, W), (C, H, W) or (B, C, H, W)"
    )


def check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    """Refuse two batches of different shapes with one line naming both."""
    if a.shape != b.shape:
        raise UserError(
            f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ; "
            "compare images of the same size"
        )
