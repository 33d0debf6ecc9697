"""Validation helpers shared by every object that takes user values: one wording, one rule.

Each check raises :class:`~astrorestore.errors.UserError` with a one-line message that names
the config key, the value given and what to pass instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from astrorestore.errors import UserError


def check_range(
    key: str,
    value: Sequence[float] | Any,
    *,
    low: float | None = None,
    strict_low: bool = False,
) -> tuple[float, float]:
    """``[lo, hi]`` with ``lo <= hi`` (and ``lo >= low``, or ``> low`` if ``strict_low``).

    Returns the pair as floats; a scalar is not a range and is refused.
    """
    bound = "" if low is None else f"{low:g} {'<' if strict_low else '<='} "
    hint = f"use [lo, hi] with {bound}lo <= hi"
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r} is invalid: {hint}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise UserError(f"{key}={value!r} is invalid: {hint}")
    if low is not None and (lo <= low if strict_low else lo < low):
        raise UserError(f"{key}={value!r} is invalid: {hint}")
    return lo, hi


def check_multiple(key: str, value: int, multiple: int, *, upper: int | None = None) -> int:
    """A positive multiple of ``multiple`` (and ``<= upper`` when given), else a UserError
    suggesting the nearest valid value."""
    multiple = max(int(multiple), 1)
    value = int(value)
    ok = value >= multiple and value % multiple == 0 and (upper is None or value <= upper)
    if ok:
        return value
    cap = value if upper is None else min(value, upper)
    best = max(cap // multiple * multiple, multiple)
    limit = "" if upper is None else f" no larger than {upper}"
    if upper is not None and best > upper:
        raise UserError(
            f"{key}={value} cannot work: the smallest size this model accepts is {multiple} px, "
            f"more than {upper}; use larger images or a shallower network"
        )
    raise UserError(
        f"{key}={value} must be a positive multiple of {multiple}{limit} (the network's size "
        f"multiple); e.g. {key}={best}"
    )
