"""Statistics over seeds, and the one written rule that turns a comparison into a verdict.

    c = compare(a, b)                  # per-seed values of two groups; c.diff = mean(b) - mean(a)
    c.verdict("less")                  # the claim "b is lower than a"
    c.verdict("equal", margin=0.02)    # the claim "b and a differ by less than 0.02"
    c.fmt()                            # "Δ -0.123 [95% CI -0.200, -0.046], p=0.012"

With 3 seeds a test has little power, so the lab reports the difference of means with its 95% interval
next to every p-value and never reads "not significant" as "equal": an equivalence claim is decided by
whether the interval lies inside a margin stated in advance (DESIGN.md, convention 15).

THE RULE (`decide`), on the 95% confidence interval [lo, hi] of the difference and a margin m >= 0:
  claim "greater" (b > a):  refuted      if hi < 0 (an effect the other way) or -m < lo and hi < m
                                         (m > 0: the interval shows any effect is negligible);
                            supported    if lo > 0 (the interval excludes no effect, on the claimed side);
                            inconclusive otherwise.
  claim "less" (b < a):     the mirror image.
  claim "equal" (|b - a| < m, m > 0 required):
                            supported    if -m < lo and hi < m (the interval lies inside the margin);
                            refuted      if lo > m or hi < -m (it lies wholly outside);
                            inconclusive otherwise.
  An interval that cannot be computed (fewer than 2 finite values in a group) is inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    mean: float  # over the values kept
    sd: float  # sample standard deviation (ddof=1) of the values kept; NaN for a single value
    n: int  # values kept: finite and not marked as left out
    n_out: int  # values left out of mean and sd, only counted: non-finite (diverged) or marked by the caller
    why: str = "diverged"  # what `fmt` calls the values left out

    def fmt(self, digits: int = 3, style: str = "f", count: bool = False) -> str:
        """ "mean ± sd" with `digits` decimals, or with style="g" `digits` significant digits (for values
        that span orders of magnitude, e.g. gradient norms), then how many were left out and why:
        "2.310 ± 0.020 (1/3 diverged)", or "— (3/3 diverged)" when none is left; with `count` the count
        shows even when it is 0 ("(0/3 failed)")."""
        total = self.n + self.n_out
        tail = f" ({self.n_out}/{total} {self.why})" if self.n_out or (count and total) else ""
        if self.n == 0:
            return "—" + tail if self.n_out else "n/a"
        f = f".{digits}{style}"
        return (f"{self.mean:{f}} ± {self.sd:{f}}" if self.n > 1 else f"{self.mean:{f}}") + tail


def summarize(values, left_out=None, why: str = "diverged") -> Summary:
    """Mean and sample sd over the finite values not marked in `left_out` (booleans shaped like `values`:
    members the metrics mark as diverged, or an experiment's failed runs); the others are counted, never
    averaged, and `fmt` calls them `why`."""
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    if left_out is not None:
        keep &= ~np.asarray(left_out, dtype=bool).ravel()
    kept = x[keep]
    n = int(kept.size)
    mean = float(kept.mean()) if n else math.nan
    sd = float(kept.std(ddof=1)) if n > 1 else math.nan
    return Summary(mean, sd, n, int(x.size - n), why)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) in float64, by its continued fraction (modified Lentz).

    I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))), with
    d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d_{2m} = m(b-m) x / ((a+2m-1)(a+2m));
    it converges fast for x < (a+1)/(a+b+2), and the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) covers the rest.
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def _t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom (t >= 0), via the regularized incomplete
    beta function: P(|T| > t) = I_{dof/(dof+t^2)}(dof/2, 1/2)."""
    return 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))


def t_quantile(p: float, dof: float) -> float:
    """The t value with P(T > t) = 1 - p, by bisection on the survival function (p in (0.5, 1))."""
    lo, hi = 0.0, 1e3
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _t_sf(mid, dof) > 1 - p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


DIRECTIONS = ("greater", "less", "equal")


def decide(ci95: tuple[float, float], direction: str, margin: float = 0.0) -> str:
    """The verdict the rule above gives a claim about a difference with 95% interval `ci95`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
    if margin < 0 or (direction == "equal" and not margin > 0):
        raise ValueError(f"margin must be >= 0 (> 0 for 'equal'), got {margin}")
    lo, hi = ci95
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if direction == "equal":
        if -margin < lo and hi < margin:
            return "supported"
        return "refuted" if (lo > margin or hi < -margin) else "inconclusive"
    if direction == "less":
        lo, hi = -hi, -lo  # "b < a" is "a - b > 0"
    if hi < 0 or (margin > 0 and -margin < lo and hi < margin):
        return "refuted"
    return "supported" if lo > 0 else "inconclusive"


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean(b) - mean(a) (or mean(b - a) when paired, or mean(x) - ref against a reference)
    ci95: tuple[float, float]
    t: float
    dof: float
    p: float  # two-sided

    def significant(self, alpha: float = 0.05) -> bool:
        return bool(np.isfinite(self.p) and self.p < alpha)

    def verdict(self, direction: str, margin: float = 0.0) -> str:
        """supported / refuted / inconclusive for the claim that the difference is `direction`
        ("greater", "less" or "equal" within `margin`), by the rule in this module's docstring."""
        return decide(self.ci95, direction, margin)

    def fmt(self, digits: int = 3, p: bool = True) -> str:
        """ "Δ +0.123 [95% CI +0.050, +0.196], p=0.012" (or "Δ +0.123, no CI" with too few values)."""
        if not math.isfinite(self.ci95[0]):
            return f"Δ {self.diff:+.{digits}f}, no CI (fewer than 2 finite values in a group)"
        lo, hi = self.ci95
        s = f"Δ {self.diff:+.{digits}f} [95% CI {lo:+.{digits}f}, {hi:+.{digits}f}]"
        return s + (f", p={self.p:.2g}" if p else "")


def welch(a, b) -> Comparison:
    """Welch's unequal-variance t-test of mean(b) - mean(a) over the finite values of each group."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        d = float(b.mean() - a.mean()) if a.size and b.size else math.nan
        return Comparison(d, (math.nan, math.nan), math.nan, math.nan, math.nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(b.mean() - a.mean())
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(diff, (diff, diff), math.copysign(math.inf, diff) if diff else 0.0, math.nan, p)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    t = diff / se
    p = min(1.0, 2.0 * _t_sf(abs(t), dof))
    q = t_quantile(0.975, dof)
    return Comparison(diff, (diff - q * se, diff + q * se), t, dof, p)


def paired(a, b) -> Comparison:
    """Paired t-test of mean(b - a) over pairs where both are finite (e.g. one model before and after an
    intervention, per seed)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    d = b[ok] - a[ok]
    if d.size < 2:
        m = float(d.mean()) if d.size else math.nan
        return Comparison(m, (math.nan, math.nan), math.nan, math.nan, math.nan)
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    dof = float(d.size - 1)
    if se == 0:
        return Comparison(
            mean, (mean, mean), math.copysign(math.inf, mean) if mean else 0.0, dof, 1.0 if mean == 0 else 0.0
        )
    t = mean / se
    q = t_quantile(0.975, dof)
    return Comparison(mean, (mean - q * se, mean + q * se), t, dof, min(1.0, 2.0 * _t_sf(abs(t), dof)))


def compare(a, b, paired_by_seed: bool = False) -> Comparison:
    """b against a over per-seed values: Welch's test of independent groups, or (paired_by_seed) the
    paired test of the same seeds measured twice (one model before and after an intervention)."""
    return paired(a, b) if paired_by_seed else welch(a, b)


def compare_to(values, reference: float) -> Comparison:
    """The mean of per-seed `values` against a fixed `reference` (chance, a bound): one-sample t."""
    x = np.asarray(values, np.float64)
    return paired(np.full(x.shape, float(reference)), x)


def contrast(groups, weights) -> Comparison:
    """The weighted sum of group means sum_i w_i mean(g_i) over the finite values of independent groups, with
    its 95% CI by the Welch-Satterthwaite degrees of freedom: `welch(a, b)` is contrast([a, b], [-1, 1]).
    E.g. a difference of differences (an interaction), such as how much more a speedup is in one setting
    than in another: contrast([fast1, slow1, fast2, slow2], [-1, 1, 1, -1]) on log timings."""
    xs = [np.asarray(g, np.float64) for g in groups]
    xs = [x[np.isfinite(x)] for x in xs]
    w = np.asarray(weights, np.float64)
    if len(xs) != w.size:
        raise ValueError(f"{len(xs)} groups but {w.size} weights")
    if any(x.size == 0 for x in xs):
        return Comparison(math.nan, (math.nan, math.nan), math.nan, math.nan, math.nan)
    est = float(sum(wi * x.mean() for wi, x in zip(w, xs)))
    if any(x.size < 2 for x, wi in zip(xs, w) if wi != 0):
        return Comparison(est, (math.nan, math.nan), math.nan, math.nan, math.nan)
    parts = [wi**2 * x.var(ddof=1) / x.size if wi != 0 else 0.0 for wi, x in zip(w, xs)]
    se = math.sqrt(sum(parts))
    if se == 0:
        return Comparison(
            est, (est, est), math.copysign(math.inf, est) if est else 0.0, math.nan, float(est == 0)
        )
    dof = sum(parts) ** 2 / sum(v**2 / (x.size - 1) for v, x in zip(parts, xs) if v > 0)
    t = est / se
    q = t_quantile(0.975, dof)
    return Comparison(est, (est - q * se, est + q * se), t, dof, min(1.0, 2.0 * _t_sf(abs(t), dof)))


def held_out_choice(values: dict, lower: bool = True) -> tuple[list, np.ndarray]:
    """A best setting chosen on other seeds (leave one seed out; DESIGN convention 15): for each seed s,
    the key of `values` (key -> per-seed values, (S,)) whose mean over the seeds other than s is lowest
    (highest with lower=False), and that setting's value at seed s. So each seed's value is read from data
    its choice did not see, and the result can be tested like any per-seed values. Non-finite values are
    left out of the means; a seed with nothing to choose on (one seed only) gets None and NaN."""
    keys = list(values)
    x = np.stack([np.asarray(values[k], np.float64) for k in keys])  # (settings, S)
    picks, out = [], np.full(x.shape[1], np.nan)
    for s in range(x.shape[1]):
        rest = np.delete(x, s, axis=1)
        ok = np.isfinite(rest)
        score = np.where(ok, rest, 0.0).sum(1) / np.maximum(ok.sum(1), 1)
        score = np.where(ok.any(1), score if lower else -score, np.inf)
        i = int(np.argmin(score)) if np.isfinite(score).any() else None
        picks.append(None if i is None else keys[i])
        out[s] = np.nan if i is None else x[i, s]
    return picks, out


def principal_components(x, k: int) -> np.ndarray:
    """The rows of `x` (N, D), centred, projected on their top `k` principal axes (the right singular
    vectors of the centred matrix, largest first): (N, k) coordinates, e.g. to draw embeddings in 2-D
    or a path through space in 3-D. Each axis's sign is whatever the SVD returns."""
    centred = x - x.mean(axis=0)
    return centred @ np.linalg.svd(centred, full_matrices=False)[2][:k].T
