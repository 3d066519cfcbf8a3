"""Uncertainty over seeds: means with 95% Student-t intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval (lo == hi == mean for a single value)."""

    mean: float
    lo: float
    hi: float
    count: int

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        if self.count == 0:
            return "-"
        m, lo, hi = self.mean * scale, self.lo * scale, self.hi * scale
        if self.count == 1:
            return f"{m:.{digits}f}"
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def mean_interval(
    values: Sequence[float],
    level: float = 0.95,
    lower: float = -math.inf,
    upper: float = math.inf,
) -> Interval:
    """Mean and Student-t interval of ``values`` (NaNs dropped), clipped to the range
    ``[lower, upper]`` that the quantity can take (accuracy in [0, 1], counts >= 0)."""
    clean = [float(v) for v in values if v == v]
    n = len(clean)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(clean) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    var = sum((v - mean) ** 2 for v in clean) / (n - 1)
    from scipy.stats import t as student_t  # loaded where an interval is taken, not at import

    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * math.sqrt(var / n)
    return Interval(mean, max(lower, mean - half), min(upper, mean + half), n)


def metric_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """``mean_interval`` of a run's output metric: clipped to [0, 1] (an accuracy), or
    down to its lowest value where the metric can go below 0 (a reward)."""
    return mean_interval(values, level, lower=min([0.0, *values]), upper=1.0)
