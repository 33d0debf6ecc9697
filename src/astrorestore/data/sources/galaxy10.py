"""Galaxy10 DECaLS: 17,736 colour galaxy images for the colorization and super-resolution methods.

The ``.h5`` file (about 2.7 GB) holds ``images`` (N, 256, 256, 3) uint8 and ``ans`` (N,) class
labels. It is read lazily, one image per item, so the file never has to fit in memory; each
DataLoader worker opens its own handle (HDF5 handles do not survive a fork). The split is by
galaxy index, seeded, so a galaxy never appears in two splits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from astrorestore.data.preparation.manifest import SPLITS, split_counts
from astrorestore.errors import UserError

GALAXY10_URL = "https://astro.utoronto.ca/~hleung/shared/Galaxy10/Galaxy10_DECals.h5"
GALAXY10_DOCS = "https://astronn.readthedocs.io/en/latest/galaxy10.html"


def check_galaxy10(path: str | Path) -> int:
    """Number of galaxies in a Galaxy10 ``.h5`` file, after checking its schema.

    Raises a one-line UserError naming what is missing (the file, ``images``, ``ans``) or wrong.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"data.path={str(path)!r} does not exist: download Galaxy10_DECals.h5 (2.7 GB) from "
            f"{GALAXY10_URL} (see {GALAXY10_DOCS}) and pass its path as data.path=<file.h5>"
        )
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"data.path={str(path)!r} is not a readable HDF5 file ({exc})") from None
    with handle:
        if "images" not in handle or not isinstance(handle["images"], h5py.Dataset):
            raise UserError(
                f"{path} has no 'images' dataset (found {sorted(handle.keys())}); it is not a "
                f"Galaxy10 DECaLS file, get one from {GALAXY10_URL}"
            )
        images = handle["images"]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise UserError(
                f"{path} 'images' is {images.dtype} of shape {images.shape}; Galaxy10 DECaLS "
                "has uint8 images of shape (N, 256, 256, 3)"
            )
        if "ans" not in handle:
            raise UserError(f"{path} has no 'ans' labels dataset; it is not a Galaxy10 DECaLS file")
        if handle["ans"].shape[0] != images.shape[0]:
            raise UserError(
                f"{path} has {images.shape[0]} images but {handle['ans'].shape[0]} labels in "
                "'ans'; the file is damaged, download it again"
            )
        return int(images.shape[0])


def galaxy10_splits(
    n: int, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, np.ndarray]:
    """Sorted galaxy indices per split, from a seeded permutation of ``range(n)``."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"data.{key}={value} is invalid: use a value in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_train, n_val, _ = split_counts(n, val_fraction, test_fraction)
    parts = np.split(order, [n_train, n_train + n_val])
    return {s: np.sort(p) for s, p in zip(SPLITS, parts, strict=True)}


def check_split_sizes(path: str | Path, n: int, val_fraction: float, test_fraction: float) -> None:
    """Raise a one-line UserError if a split of the file's ``n`` galaxies would be empty
    (training, validation and testing each need at least one)."""
    galaxy10_splits(0, 0, val_fraction, test_fraction)  # the fractions' own checks
    counts = dict(zip(SPLITS, split_counts(n, val_fraction, test_fraction), strict=True))
    empty = [split for split, count in counts.items() if count == 0]
    if empty:
        fractions = f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}"
        fix = (
            "pass a file with at least 3 galaxies"
            if n < 3
            else "set data.val_fraction and data.test_fraction above 0"
        )
        raise UserError(
            f"{path} holds {n} galaxies, which leaves the {'/'.join(empty)} split empty "
            f"({fractions}); {fix}"
        )


def resize_rgb(rgb: Tensor, size: int) -> Tensor:
    """(3, H, W) -> (3, size, size) with an antialiased bilinear filter (non-negative weights,
    so [0, 1] stays [0, 1] up to rounding)."""
    if rgb.shape[-1] == size and rgb.shape[-2] == size:
        return rgb
    out = F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True)
    return out[0].clamp_(0.0, 1.0)


class Galaxy10(Dataset):
    """One split of Galaxy10: ``{"rgb": (3, S, S) float32 in [0, 1], "label": int64}``."""

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        *,
        size: int | None = 64,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        if split not in SPLITS:
            raise UserError(f"split={split!r} is invalid: use one of {', '.join(SPLITS)}")
        if size is not None and (int(size) != size or not 8 <= size <= 256):
            raise UserError(f"data.size={size} is invalid: use an integer in [8, 256]")
        self.path = Path(path)
        self.size = size
        n = check_galaxy10(self.path)
        self.indices = galaxy10_splits(n, seed, val_fraction, test_fraction)[split]
        self._handle: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def _file(self) -> Any:
        import h5py

        if self._handle is None or self._pid != os.getpid():
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        handle = self._file()
        i = int(self.indices[index])
        image = np.asarray(handle["images"][i], dtype=np.float32) / 255.0
        rgb = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.size is not None:
            rgb = resize_rgb(rgb, int(self.size))
        return {"rgb": rgb, "label": torch.tensor(int(handle["ans"][i]), dtype=torch.int64)}
