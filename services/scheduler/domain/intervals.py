"""A mean with its 95% confidence interval, on Student's t distribution.

The two-sided 95% critical values of t are tabled (df 1-30 exactly, then 40, 60,
120 and the normal limit 1.96) and read between entries linearly in 1/df, the
usual way to read such a table; no scipy for one column of numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
T_975_BEYOND: tuple[tuple[float, float], ...] = ((40, 2.021), (60, 2.000), (120, 1.980))
Z_975 = 1.960


def t_975(df: int) -> float:
    """The two-sided 95% critical value of t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= len(T_975):
        return T_975[df - 1]
    below: tuple[float, float] = (len(T_975), T_975[-1])
    for above in (*T_975_BEYOND, (math.inf, Z_975)):
        if df <= above[0]:
            share = (1 / below[0] - 1 / df) / (1 / below[0] - 1 / above[0])
            return below[1] + share * (above[1] - below[1])
        below = above
    return Z_975  # pragma: no cover (the loop ends at infinity)


@dataclass(frozen=True)
class Estimate:
    """The mean of `n` values; `low` and `high` bound its 95% interval (none for n = 1)."""

    n: int
    mean: float
    low: float | None
    high: float | None

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)


def estimate(values: Sequence[float]) -> Estimate | None:
    """The mean of `values` with its t interval; None when there are none."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Estimate(1, mean, None, None)
    half = t_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Estimate(len(values), mean, mean - half, mean + half)
