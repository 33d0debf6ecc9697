"""Per-field draws of the scene options: a scalar is used as given (no draw), ``[lo, hi]`` is
drawn once per field, and a probability switches a feature on for a share of the fields.

Scalars and probabilities of exactly 0 or 1 consume nothing from the generator, so a config that
leaves a feature off renders the same field, bit for bit, as before the feature existed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from astrorestore.checks import check_range
from astrorestore.errors import UserError


def is_scalar(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def draw_float(
    rng: np.random.Generator, key: str, value, low: float, log: bool, strict_low: bool = True
) -> float:
    """A scalar as given, or one draw from a ``[lo, hi]`` range (log-uniform if ``log``)."""
    if is_scalar(value):
        return float(value)
    lo, hi = check_range(key, value, low=low, strict_low=strict_low or log)
    if log:
        return float(lo * (hi / lo) ** rng.random())
    return float(rng.uniform(lo, hi))


def draw_bounded(
    rng: np.random.Generator, key: str, value, lo: float, hi: float, hint: str, log: bool = False
) -> float:
    """``draw_float`` for an option whose every value must lie in ``[lo, hi]`` (``hint`` says
    what it is): a scalar or both ends of a range outside it are a one-line error."""
    ends = [value] if is_scalar(value) else list(check_range(key, value, low=lo))
    if not all(lo <= float(v) <= hi for v in ends) or (log and float(ends[0]) <= 0):
        raise UserError(f"{key}={value!r} is invalid: use {hint}")
    return draw_float(rng, key, value, low=lo, log=log, strict_low=False)


def draw_count(rng: np.random.Generator, key: str, value) -> int:
    """A count as given, or a uniform integer in an inclusive ``[lo, hi]`` range."""
    if is_scalar(value):
        return int(value)
    lo, hi = check_range(key, value, low=0.0)
    if lo != int(lo) or hi != int(hi):
        raise UserError(
            f"{key}={value!r} is invalid: use whole numbers [lo, hi] with 0 <= lo <= hi"
        )
    return int(rng.integers(int(lo), int(hi) + 1))


def check_probability(key: str, probability) -> float:
    if is_scalar(probability) and 0.0 <= float(probability) <= 1.0:
        return float(probability)
    raise UserError(f"{key}={probability!r} is invalid: use a probability in [0, 1]")


def draw_flag(rng: np.random.Generator, key: str, probability) -> bool:
    """Whether a feature is on in this field: drawn only for a probability strictly in (0, 1)."""
    p = check_probability(key, probability)
    if p in (0.0, 1.0):
        return p == 1.0
    return bool(rng.random() < p)


def options(group: str, given: Mapping | None, defaults: Mapping) -> dict:
    """``defaults`` updated with ``given``; an unknown key is a one-line error naming the valid."""
    if given is None:
        return dict(defaults)
    if not isinstance(given, Mapping):
        raise UserError(
            f"{group}={given!r} is invalid: use a mapping of {', '.join(defaults)} (or null)"
        )
    unknown = sorted(str(k) for k in given if k not in defaults)
    if unknown:
        raise UserError(
            f"{group} has unknown key(s) {', '.join(unknown)}: use {', '.join(defaults)}"
        )
    return {**defaults, **given}
