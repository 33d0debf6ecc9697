"""torch Datasets over a prepared tile cache: random crops, fixed crops, real exposure pairs.

Items carry values in the cache's units (``Prepared.units``: electrons when the header allowed
the conversion, else the file's units), float32:

- ``noisy`` (1, P, P): the frame as observed; invalid pixels are filled with their tile's sky
  (the normalisation ``offset``) so no NaN reaches a network, and ``valid`` says where they are;
- ``valid`` (1, P, P) bool: pixels that may be used as training targets;
- ``sigma`` (1, P, P): the per-pixel noise map in the same units, when the cache has one;
- ``offset``/``scale`` (1, 1, 1): the AsinhNormalizer parameters of the crop's parent tile, so a
  data module can normalise crops like whole tiles (and inverse them exactly);
- ``background`` (1, P, P): the crop of its frame's sky map, when the folder has maps
  (``data.normalizer.background=map``); invalid pixels are then filled with it.

A crop is rejected (and another drawn) when fewer than ``min_valid`` of its pixels are valid.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from astrorestore.data.preparation.tile_cache import MIN_TILE_SIDE, Prepared
from astrorestore.data.seeding import PerProcessRng
from astrorestore.errors import UserError

# Draws before a random crop gives up on reaching ``min_valid`` and keeps the best one drawn.
CROP_TRIES = 20


def _eligible_tiles(prepared: Prepared, split: str, patch_size: int) -> np.ndarray:
    """Indices of the split's tiles that can hold a ``patch_size`` crop."""
    if int(patch_size) != patch_size or patch_size <= 0:
        raise UserError(f"data.patch_size={patch_size} is invalid: use a positive integer")
    tiles = prepared.tiles[split]
    if len(tiles) == 0 and split == "val" and not prepared.frames[split]:
        raise UserError(
            f"the val split of {prepared.path} has no frames: validation needs a frame of a "
            f"second pointing, or frames of one pointing at least {2 * MIN_TILE_SIDE} px along "
            "a side (cut into training and validation bands); add such frames to the folder "
            "or raise data.val_fraction from 0"
        )
    if len(tiles) == 0:
        raise UserError(
            f"the {split} split of {prepared.path} has no tiles ({len(prepared.frames[split])} "
            "frames); add frames to the folder or change data.val_fraction/data.test_fraction"
        )
    fits = np.flatnonzero((tiles["h"] >= patch_size) & (tiles["w"] >= patch_size))
    if fits.size == 0:
        largest = int(min(tiles["h"].max(), tiles["w"].max()))
        bands = ""
        if prepared.info.get("bands") and split != "train":
            bands = (
                f", or widen the {split} band of this one-pointing folder (data.{split}_fraction "
                "of the frame, at least 64 px)"
            )
        raise UserError(
            f"data.patch_size={patch_size} is larger than every {split} tile (at most {largest} "
            f"px); use data.patch_size <= {largest}{bands}"
        )
    return fits


def _orient(arrays: dict[str, np.ndarray], k: int, flip: bool) -> dict[str, Tensor]:
    out = {}
    for name, arr in arrays.items():
        arr = np.rot90(arr, k=k) if k else arr
        arr = arr[:, ::-1] if flip else arr
        out[name] = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return out


def _crop(prepared: Prepared, split: str, rec: np.void, y: int, x: int, p: int):
    """``(data, valid, sigma)`` crops at frame position (y, x), invalid data filled with sky."""
    data, valid, sigma = prepared.frame(split, int(rec["frame"]))
    v = np.array(valid[y : y + p, x : x + p], dtype=bool)
    d = np.array(data[y : y + p, x : x + p], dtype=np.float32)
    sky = _sky_crop(prepared, split, rec, y, x, p)
    d[~v] = sky["background"][~v] if sky else np.float32(rec["offset"])
    s = None
    if sigma is not None:
        s = np.array(sigma[y : y + p, x : x + p], dtype=np.float32)
        s[~v] = 0.0  # zero weight where no target exists; never NaN into a loss
    return d, v, s


def _sky_crop(prepared: Prepared, split: str, rec: np.void, y: int, x: int, p: int) -> dict:
    """``{"background": (P, P)}``, the crop of the frame's sky map, or ``{}`` without maps."""
    sky = prepared.sky(split, int(rec["frame"]))
    return {} if sky is None else {"background": np.array(sky[y : y + p, x : x + p], np.float32)}


def _norm(rec: np.void) -> dict[str, Tensor]:
    return {
        "offset": torch.tensor(float(rec["offset"]), dtype=torch.float32).view(1, 1, 1),
        "scale": torch.tensor(float(rec["scale"]), dtype=torch.float32).view(1, 1, 1),
    }


class FrameValues:
    """Per-frame numbers added to every item as ``(1, 1, 1)`` tensors: ``frame_values`` maps a
    key to one value per frame of the split (e.g. the frame's noise model, which a data module
    sets for the pairings that ask for it); empty by default, so items are unchanged."""

    frame_values: dict[str, np.ndarray] | None = None

    def frame_keys(self, rec: np.void) -> dict[str, Tensor]:
        if not self.frame_values:
            return {}
        frame = int(rec["frame"])
        return {
            key: torch.tensor(float(values[frame]), dtype=torch.float32).view(1, 1, 1)
            for key, values in self.frame_values.items()
        }


class RandomTileCrops(FrameValues, PerProcessRng, Dataset):
    """``length`` random ``patch_size`` crops of a split's tiles, randomly rotated/flipped."""

    def __init__(
        self,
        prepared: Prepared,
        split: str,
        patch_size: int,
        length: int,
        *,
        min_valid: float = 0.5,
        augment: bool = True,
    ) -> None:
        self.prepared = prepared
        self.split = split
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.min_valid = float(min_valid)
        self.augment = augment
        self.eligible = _eligible_tiles(prepared, split, patch_size)

    def __len__(self) -> int:
        return self.length

    def _draw(self, rng: np.random.Generator) -> tuple[np.void, int, int]:
        p = self.patch_size
        rec = self.prepared.tiles[self.split][self.eligible[rng.integers(self.eligible.size)]]
        y = int(rec["y"]) + int(rng.integers(int(rec["h"]) - p + 1))
        x = int(rec["x"]) + int(rng.integers(int(rec["w"]) - p + 1))
        return rec, y, x

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = self._generator()
        best, best_fraction = None, -1.0
        for _ in range(CROP_TRIES):
            rec, y, x = self._draw(rng)
            crop = _crop(self.prepared, self.split, rec, y, x, self.patch_size)
            fraction = float(crop[1].mean())
            if fraction > best_fraction:
                best, best_fraction = (rec, crop, (y, x)), fraction
            if fraction >= self.min_valid:
                break
        rec, (d, v, s), (y, x) = best
        k, flip = (int(rng.integers(4)), bool(rng.random() < 0.5)) if self.augment else (0, False)
        arrays = {"noisy": d, "valid": v} | ({"sigma": s} if s is not None else {})
        arrays |= _sky_crop(self.prepared, self.split, rec, y, x, self.patch_size)
        return _orient(arrays, k, flip) | _norm(rec) | self.frame_keys(rec)


class FixedTileCrops(FrameValues, Dataset):
    """``n`` deterministic crops spread over a split's tiles (validation/test): a regular grid
    in every tile, crops under ``min_valid`` dropped, ``n`` picked evenly from the rest."""

    def __init__(
        self, prepared: Prepared, split: str, patch_size: int, n: int, *, min_valid: float = 0.5
    ) -> None:
        self.prepared = prepared
        self.split = split
        self.patch_size = p = int(patch_size)
        eligible = _eligible_tiles(prepared, split, patch_size)
        per_side = int(np.ceil(np.sqrt(max(1, -(-int(n) // eligible.size)))))
        candidates = self._grid(eligible, per_side, min_valid)
        # Masked corners can drop grid points: densify until n crops exist or the grid is dense.
        largest = int(prepared.tiles[split]["h"].max() + prepared.tiles[split]["w"].max())
        while len(candidates) < n and per_side < largest:
            per_side *= 2
            candidates = self._grid(eligible, per_side, min_valid)
        if not candidates:
            raise UserError(
                f"no {split} crop of {p} px has >= {min_valid:.0%} valid pixels; lower "
                "data.patch_size or check the frames' DQ/NaN masks"
            )
        pick = np.linspace(0, len(candidates) - 1, min(int(n), len(candidates))).round()
        self.crops = [candidates[int(i)] for i in pick]

    def _grid(self, eligible: np.ndarray, per_side: int, min_valid: float) -> list:
        p, tiles = self.patch_size, self.prepared.tiles[self.split]
        candidates: dict[tuple[int, int, int], int] = {}  # overlapping tiles repeat windows
        for t in eligible:
            rec = tiles[t]
            frame = int(rec["frame"])
            _, valid, _ = self.prepared.frame(self.split, frame)
            for dy in np.linspace(0, int(rec["h"]) - p, per_side).round().astype(int):
                for dx in np.linspace(0, int(rec["w"]) - p, per_side).round().astype(int):
                    y, x = int(rec["y"]) + int(dy), int(rec["x"]) + int(dx)
                    if valid[y : y + p, x : x + p].mean() >= min_valid:
                        candidates.setdefault((frame, y, x), int(t))
        return [(t, y, x) for (_, y, x), t in candidates.items()]

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        t, y, x = self.crops[index]
        rec = self.prepared.tiles[self.split][t]
        d, v, s = _crop(self.prepared, self.split, rec, y, x, self.patch_size)
        arrays = {"noisy": d, "valid": v} | ({"sigma": s} if s is not None else {})
        arrays |= _sky_crop(self.prepared, self.split, rec, y, x, self.patch_size)
        return _orient(arrays, 0, False) | _norm(rec) | self.frame_keys(rec)


def _is_rate(units: str) -> bool:
    u = units.strip().lower().replace(" ", "")
    return u.endswith("/s") or u.endswith("/sec") or u == "mjy/sr"


class ExposurePairs(PerProcessRng, Dataset):
    """Crops of the same sky region in two exposures of one pointing (real Noise2Noise pairs).

    Frames pair when they share a ``pointing_id`` in the manifest (same instrument, filter,
    shape and WCS to ~0.1 px). Values stored as totals (electrons, counts) scale with exposure
    time, so ``noisy2`` is rescaled by ``exposure(noisy) / exposure(noisy2)`` to share
    ``noisy``'s expectation; rates (e-/s, MJy/sr) need no rescaling. ``valid`` is the AND of
    both masks. With ``fixed_seed`` item ``i`` is always the same un-augmented crop
    (validation); otherwise crops are random, flipped/rotated and the two roles swapped at random.
    """

    def __init__(
        self,
        prepared: Prepared,
        split: str,
        patch_size: int,
        length: int,
        *,
        min_valid: float = 0.5,
        augment: bool = True,
        fixed_seed: int | None = None,
    ) -> None:
        self.prepared = prepared
        self.split = split
        self.patch_size = int(patch_size)
        self.length = int(length)
        self.min_valid = float(min_valid)
        self.augment = augment and fixed_seed is None
        self.fixed_seed = fixed_seed
        eligible = set(_eligible_tiles(prepared, split, patch_size).tolist())
        self.pairs = self._pair_tiles(eligible)
        if not self.pairs:
            raise UserError(
                f"no two {split} frames of {prepared.path} share a pointing id (same "
                "instrument, filter, detector, shape and WCS to 0.1 px; see its manifest.csv), so "
                "there are no real exposure pairs; add repeated exposures of a pointing, name "
                "the header keyword of registered exposures' field with data.pair_key, or drop "
                "data.pairs=true: model=n2v for single frames, data.deep_as_clean=true for deep ones"
            )

    def _pair_tiles(self, eligible: set[int]) -> list[tuple[int, int]]:
        by_pointing: dict[str, list[int]] = {}
        for i in range(len(self.prepared.frames[self.split])):
            pid = self.prepared.frame_row(self.split, i).pointing_id
            if pid:
                by_pointing.setdefault(pid, []).append(i)
        tiles = self.prepared.tiles[self.split]
        window: dict[tuple[int, int, int, int, int], int] = {}
        for t in eligible:
            r = tiles[t]
            window[(int(r["frame"]), int(r["y"]), int(r["x"]), int(r["h"]), int(r["w"]))] = t
        pairs = []
        for frames in by_pointing.values():
            for a, b in combinations(frames, 2):
                for (f, *win), t in window.items():
                    if f == a and (b, *win) in window:
                        pairs.append((t, window[(b, *win)]))
        return sorted(pairs)

    def __len__(self) -> int:
        return self.length

    def _exposure_ratio(self, rec_a: np.void, rec_b: np.void) -> float:
        if _is_rate(self.prepared.units):
            return 1.0
        ea = self.prepared.frame_row(self.split, int(rec_a["frame"])).exposure
        eb = self.prepared.frame_row(self.split, int(rec_b["frame"])).exposure
        return float(ea / eb) if np.isfinite(ea) and np.isfinite(eb) else 1.0

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if self.fixed_seed is None:
            rng = self._generator()
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.fixed_seed, index]))
        p, tiles = self.patch_size, self.prepared.tiles[self.split]
        best, best_fraction = None, -1.0
        for _ in range(CROP_TRIES):
            ta, tb = self.pairs[int(rng.integers(len(self.pairs)))]
            if self.augment and rng.random() < 0.5:
                ta, tb = tb, ta
            ra, rb = tiles[ta], tiles[tb]
            y = int(ra["y"]) + int(rng.integers(int(ra["h"]) - p + 1))
            x = int(ra["x"]) + int(rng.integers(int(ra["w"]) - p + 1))
            ratio = self._exposure_ratio(ra, rb)
            da, va, sa = _crop(self.prepared, self.split, ra, y, x, p)
            db, vb, sb = _crop(self.prepared, self.split, rb, y, x, p)
            valid = va & vb
            if valid.mean() > best_fraction:
                best, best_fraction = (
                    (ra, da, db * np.float32(ratio), valid, sa, sb, ratio, (y, x)),
                    valid.mean(),
                )
            if valid.mean() >= self.min_valid:
                break
        ra, da, db, valid, sa, sb, ratio, (y, x) = best
        arrays = {"noisy": da, "noisy2": db, "valid": valid}
        arrays |= _sky_crop(self.prepared, self.split, ra, y, x, p)
        if sa is not None:
            arrays |= {"sigma": sa, "sigma2": sb * np.float32(ratio)}
        k, flip = (int(rng.integers(4)), bool(rng.random() < 0.5)) if self.augment else (0, False)
        return _orient(arrays, k, flip) | _norm(ra)
