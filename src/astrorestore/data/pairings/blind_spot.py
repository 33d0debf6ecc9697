"""Blind-spot pairing for Noise2Void, N2V2 and structN2V: training without any clean image.

A network that must predict a pixel it cannot see learns the pixel's expected value from its
surroundings, which is the clean signal when the noise is independent from pixel to pixel
(Krull et al. 2019). This pairing hides a few stratified pixels of every noisy frame, replaces
them with something that carries no information about their own noise (a random neighbour, or
the neighbourhood median for N2V2), and marks them in ``loss_mask`` so the regression module's
masked loss looks only there.

Choices that matter:

- The loss mask is built from the drawn coordinates, never by comparing the masked and the
  original frame: saturated or quantised pixels can equal their replacement and would vanish.
- A replacement value is never taken from a pixel that is itself hidden in the same batch (that
  would hand the network another target's noisy value).
- structN2V hides a short line along the detector axis the noise is correlated on, so the
  network cannot read the stripe's value off the neighbours; replacements come from off that line.
- Positions and replacements are drawn per batch on the batch's device with the caller's
  generator; the data module seeds it per rank, so ranks and epochs see different masks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from astrorestore.data.corruption.noise import NoiseModel
from astrorestore.data.pairings.base import Batch, Pairing
from astrorestore.errors import UserError

STRATEGIES = ("uniform", "median", "square_hole")
AXES = ("row", "column")


def stratified_coordinates(
    images: int,
    height: int,
    width: int,
    masked_fraction: float,
    rng: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor]:
    """One random position per grid cell of side ``~1/sqrt(masked_fraction)`` in every image.

    Returns flat ``(image, y, x)`` index tensors. Cells at the border are clipped to the image,
    so every position is inside it and even a patch smaller than one cell gets one position.
    Stratification spreads the hidden pixels evenly: no clumps where a hidden pixel's
    neighbours are hidden too, no large patch regions without a training signal.
    """
    step = max(1, round(1.0 / math.sqrt(masked_fraction)))
    cell_y = torch.arange(0, height, step, device=device)
    cell_x = torch.arange(0, width, step, device=device)
    y0, x0 = (grid.flatten() for grid in torch.meshgrid(cell_y, cell_x, indexing="ij"))
    extent_y = (height - y0).clamp(max=step)
    extent_x = (width - x0).clamp(max=step)
    cells = y0.numel()
    u = torch.rand((2, images, cells), generator=rng, device=device)
    y = y0 + (u[0] * extent_y).long().clamp(max=extent_y - 1)
    x = x0 + (u[1] * extent_x).long().clamp(max=extent_x - 1)
    image = torch.arange(images, device=device)[:, None].expand(images, cells)
    return image.flatten(), y.flatten(), x.flatten()


def hidden_offsets(
    hole_size: int = 1, struct_axis: str | None = None, struct_span: int = 1
) -> list[tuple[int, int]]:
    """Offsets ``(dy, dx)`` hidden around each masked position; ``(0, 0)`` (the loss pixel)
    comes first. A square hole of side ``hole_size`` and/or a line of ``struct_span`` pixels
    along ``struct_axis``."""
    half = hole_size // 2
    offsets = [(dy, dx) for dy in range(-half, half + 1) for dx in range(-half, half + 1)]
    if struct_axis is not None:
        line = range(-(struct_span // 2), struct_span // 2 + 1)
        offsets += [(0, d) if struct_axis == "row" else (d, 0) for d in line]
    unique = sorted(set(offsets), key=lambda o: (o != (0, 0), o))
    return unique


def candidate_offsets(window: int, hidden: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Offsets of the ``window x window`` neighbourhood a replacement may come from: every one
    that is not hidden (so never the centre)."""
    half = window // 2
    hidden_set = set(hidden)
    return [
        (dy, dx)
        for dy in range(-half, half + 1)
        for dx in range(-half, half + 1)
        if (dy, dx) not in hidden_set
    ]


def _gather(
    frames: Tensor, image: Tensor, y: Tensor, x: Tensor, offsets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Flat indices of ``positions + offsets`` (``(N, K)``) and whether each is inside."""
    _, height, width = frames.shape
    yy = y[:, None] + offsets[None, :, 0]
    xx = x[:, None] + offsets[None, :, 1]
    inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
    flat = (image[:, None] * height + yy.clamp(0, height - 1)) * width + xx.clamp(0, width - 1)
    return flat, inside, yy


def mask_frames(
    noisy: Tensor,
    masked_fraction: float = 0.002,
    strategy: str = "uniform",
    window: int = 5,
    hole_size: int = 1,
    struct_axis: str | None = None,
    struct_span: int = 1,
    rng: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(masked, loss_mask)`` for a ``(B, C, H, W)`` batch; channels are masked independently.

    ``loss_mask`` is True exactly at the drawn positions; ``masked`` has every hidden pixel
    (position, square hole, structN2V line) replaced: the loss pixel by a random candidate
    neighbour (``uniform``, ``square_hole``) or the candidates' median (``median``), the other
    hidden pixels by random candidates.
    """
    b, c, height, width = noisy.shape
    device = noisy.device
    frames = noisy.reshape(b * c, height, width)
    image, y, x = stratified_coordinates(b * c, height, width, masked_fraction, rng, device)
    hidden = hidden_offsets(hole_size if strategy == "square_hole" else 1, struct_axis, struct_span)
    hidden_t = torch.tensor(hidden, device=device)
    candidates_t = torch.tensor(candidate_offsets(window, hidden), device=device)

    hidden_flat, hidden_inside, _ = _gather(frames, image, y, x, hidden_t)
    is_hidden = torch.zeros(frames.numel(), dtype=torch.bool, device=device)
    is_hidden[hidden_flat[hidden_inside]] = True
    # Replacements come from visible pixels inside the image only.
    cand_flat, cand_inside, _ = _gather(frames, image, y, x, candidates_t)
    values = frames.reshape(-1)[cand_flat]
    usable = cand_inside & ~is_hidden[cand_flat] & torch.isfinite(values)
    # A position whose whole window is hidden or outside (tiny images) keeps a weight on every
    # in-image candidate, so a draw is always possible.
    usable = torch.where(usable.any(1, keepdim=True), usable, cand_inside)

    weights = usable.float()
    masked = frames.reshape(-1).clone()
    for k in range(len(hidden)):
        pick = torch.multinomial(weights, 1, generator=rng)
        replacement = values.gather(1, pick)[:, 0]
        if k == 0 and strategy == "median":
            replacement = torch.nanmedian(values.masked_fill(~usable, float("nan")), dim=1).values
        inside = hidden_inside[:, k]
        masked[hidden_flat[inside, k]] = replacement[inside]

    loss_mask = torch.zeros(frames.numel(), dtype=torch.bool, device=device)
    loss_mask[hidden_flat[:, 0]] = True
    return masked.reshape(b, c, height, width), loss_mask.reshape(b, c, height, width)


def check_n2v2_bundle(strategy: str, blur_pool: bool, top_skip: bool) -> None:
    """N2V2 (Höck et al. 2022) is three changes that only work together: blur-pool
    down-sampling and no top-level skip (against checkerboard artefacts) and median
    replacement. All or none; a mix is a one-line UserError naming what is missing."""
    parts = {
        "data.pairing.strategy=median": strategy == "median",
        "model.net.blur_pool=true": bool(blur_pool),
        "model.net.top_skip=false": not top_skip,
    }
    if any(parts.values()) and not all(parts.values()):
        missing = ", ".join(key for key, present in parts.items() if not present)
        raise UserError(
            f"N2V2 needs median replacement, blur-pool and no top skip together, but {missing} "
            "is missing: use model=n2v2 for all three or model=n2v for none"
        )


class BlindSpotPairing(Pairing):
    """Noisy frame -> itself, through blind spots (Noise2Void and its variants).

    Args:
        noise: noise model for data that provide clean images (simulated fields); real frames
            are used as they are.
        masked_fraction: share of pixels hidden per image, in (0, 0.25]; at least one per image.
        strategy: ``uniform`` (random neighbour), ``median`` (N2V2) or ``square_hole`` (a
            ``hole_size`` square hidden around each position, filled with random neighbours).
        window: side of the neighbourhood replacements come from (odd).
        hole_size: side of the square hole (odd, ``square_hole`` only).
        struct_axis: ``row``/``column`` for structN2V (noise correlated along that axis), or None.
        struct_span: length of the hidden line along ``struct_axis`` (odd).
    """

    makes_loss_mask = True

    def __init__(
        self,
        noise: NoiseModel | None = None,
        masked_fraction: float = 0.002,
        strategy: str = "uniform",
        window: int = 5,
        hole_size: int = 5,
        struct_axis: str | None = None,
        struct_span: int = 5,
    ) -> None:
        super().__init__(noise)
        if not 0.0 < float(masked_fraction) <= 0.25:
            raise UserError(
                f"data.pairing.masked_fraction={masked_fraction!r} is invalid: use a value in "
                "(0, 0.25] (0.002 is Noise2Void's default)"
            )
        if strategy not in STRATEGIES:
            raise UserError(
                f"data.pairing.strategy={strategy!r} is invalid: use {', '.join(STRATEGIES)}"
            )
        if struct_axis is not None and struct_axis not in AXES:
            raise UserError(
                f"data.pairing.struct_axis={struct_axis!r} is invalid: use row, column or null"
            )
        for key, value in (
            ("window", window),
            ("hole_size", hole_size),
            ("struct_span", struct_span),
        ):
            if int(value) != value or value < 1 or value % 2 == 0:
                raise UserError(
                    f"data.pairing.{key}={value!r} is invalid: use an odd whole number >= 1"
                )
        # A square hole needs a visible ring around it; a line leaves the other rows visible.
        needed = hole_size + 2 if strategy == "square_hole" else 3
        if window < needed:
            raise UserError(
                f"data.pairing.window={window} leaves no visible neighbour around the hidden "
                f"pixels: use data.pairing.window >= {needed}"
            )
        self.masked_fraction = float(masked_fraction)
        self.strategy = strategy
        self.window = int(window)
        self.hole_size = int(hole_size)
        self.struct_axis = struct_axis
        self.struct_span = int(struct_span)

    @property
    def structured_axis(self) -> str | None:
        """The detector axis the noise is correlated along (the data module refuses rotations)."""
        return self.struct_axis

    def check_data(self, channels: int, provides: frozenset[str], data_name: str) -> None:
        if "noisy2" in provides:
            raise UserError(
                f"data={data_name} gives exposure pairs (data.pairs=true), but blind-spot "
                "training uses single frames and would ignore every second exposure: drop "
                "data.pairs=true, or use model=n2n to train on the pairs"
            )
        if "noisy" not in provides and "clean" not in provides:
            raise UserError(
                f"blind-spot training needs noisy frames (or clean ones to add noise to); "
                f"data={data_name} provides neither"
            )
        if "noisy" not in provides and self.noise is None:
            raise UserError(
                f"data={data_name} provides clean images only and the blind-spot pairing has no "
                "noise model to corrupt them: choose one with noise=<poisson_gaussian|...>"
            )

    def check_patch(self, patch_size: int) -> None:
        """structN2V's hidden line must leave part of its row (column) visible in a crop."""
        if self.struct_axis is not None and self.struct_span >= patch_size:
            raise UserError(
                f"data.pairing.struct_span={self.struct_span} hides the whole {self.struct_axis} "
                f"of a {patch_size} px crop (data.patch_size): use a span of a few pixels, the "
                "length the noise is correlated over, below the crop size"
            )

    def check_net(self, net: Any) -> None:
        check_n2v2_bundle(
            self.strategy, getattr(net, "blur_pool", False), getattr(net, "top_skip", True)
        )

    def __call__(self, batch: Batch, rng: torch.Generator | None = None) -> Batch:
        noisy, truth = self.observe(batch, rng)
        masked, loss_mask = mask_frames(
            noisy,
            self.masked_fraction,
            self.strategy,
            self.window,
            self.hole_size,
            self.struct_axis,
            self.struct_span,
            rng,
        )
        out: Batch = {"input": masked, "target": noisy, "loss_mask": loss_mask, "observed": noisy}
        if truth is not None:
            out["truth"] = truth
        return self._finish(out, batch)

    def __repr__(self) -> str:
        return (
            f"BlindSpotPairing(strategy={self.strategy!r}, masked_fraction={self.masked_fraction}, "
            f"struct_axis={self.struct_axis!r}, noise={self.noise!r})"
        )
