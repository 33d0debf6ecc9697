"""Small pieces every network shares: GroupNorm group counts and the input-size guard."""

from __future__ import annotations

import torch


def group_count(channels: int, max_groups: int = 8) -> int:
    """Largest group count <= max_groups that divides ``channels``."""
    for groups in range(min(max_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def check_input_size(x: torch.Tensor, multiple: int) -> None:
    """Guard for direct callers: height and width must be multiples of ``multiple``.

    (Training and inference check patch and tile sizes with one-line user errors first.)
    """
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"input size {h}x{w} is not a multiple of {multiple} (2**depth)")
