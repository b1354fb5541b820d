"""Curves measured against a size or a distance, NumPy only: a power law's exponent with its 95% interval,
and the point where a curve changes level.

    loglog_slope(x, y)      the least-squares slope of log y on log x (y ~ x^slope) and its 95% CI
                            (Student t on the residuals; a CI of zero width when the points lie exactly on
                            a line, as deterministic measurements may)
    change_point(x, y)      the single split of a curve into two constant levels that leaves the least
                            squared error (the least-squares single change-point in the mean): the first x
                            of the second level, and the two levels
"""

from __future__ import annotations

import math

import numpy as np

from lab.analysis.stats import t_quantile


def loglog_slope(x, y) -> tuple[float, tuple[float, float]]:
    """(slope, (lo, hi) 95% CI) of log(y) = a + slope * log(x) by least squares; needs >= 3 points with
    x, y > 0 for an interval (fewer: NaN interval)."""
    lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
    n = lx.size
    if n < 2:
        return math.nan, (math.nan, math.nan)
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    if n < 3:
        return slope, (math.nan, math.nan)
    resid = ly - (ly.mean() + slope * (lx - lx.mean()))
    se = math.sqrt(float(np.sum(resid**2)) / (n - 2) / sxx)
    q = t_quantile(0.975, n - 2)
    return slope, (slope - q * se, slope + q * se)


def change_point(x, y) -> tuple[float, float, float]:
    """(x where the second level starts, mean before, mean from there) of the least-squares split of y
    (ordered by x) into two constant segments, each of at least one point; NaNs for fewer than 2 points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if y.size < 2:
        return math.nan, math.nan, math.nan
    c, c2 = np.cumsum(y), np.cumsum(y**2)
    n, k = y.size, np.arange(1, y.size)  # k points on the left
    left = c2[k - 1] - c[k - 1] ** 2 / k
    right = (c2[-1] - c2[k - 1]) - (c[-1] - c[k - 1]) ** 2 / (n - k)
    best = int(np.argmin(left + right)) + 1
    return float(x[best]), float(y[:best].mean()), float(y[best:].mean())
