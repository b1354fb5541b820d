"""Reward over-optimization, NumPy only: best-of-n from samples, its KL, and Gao et al.'s functional forms.

Gao, Schulman & Hilton 2023 ("Scaling laws for reward model overoptimization") write the gold reward
gained over the initial policy as a function of d = sqrt(KL(pi || pi_init)):
    best-of-n  R(d) = d (alpha - beta d)
    RL         R(d) = d (alpha - beta log d)
Both are linear in (alpha, beta), so they are fitted by least squares through the origin; R^2 is taken
about the mean of the gains (1 - SS_res / SS_tot).

    best_of_n(proxy, gold, n)   the unbiased estimate of E[gold of the sample with the best proxy of n]
                                from N >= n samples (Nakano et al. 2021, appendix; as Gao et al.)
    bon_kl(n)                   KL of best-of-n to the base policy, log n - (n - 1) / n (analytic)
    fit(d, gain, form)          (alpha, beta, R^2) of form "bon" or "rl"
"""

from __future__ import annotations

import math

import numpy as np

FORMS = {
    "bon": lambda d: np.stack([d, -(d**2)], axis=1),
    "rl": lambda d: np.stack([d, -d * np.log(np.where(d > 0, d, 1.0))], axis=1),
}


def bon_kl(n) -> np.ndarray:
    """KL(best-of-n || base) in nats for a continuous proxy without ties: log n - (n - 1) / n."""
    n = np.asarray(n, np.float64)
    return np.log(n) - (n - 1) / n


def best_of_n(proxy, gold, n: int) -> float:
    """Unbiased estimate of the expected `gold` of the best-by-`proxy` of n samples drawn without
    replacement from these N: sum over the i-th smallest proxy (1-based) of C(i-1, n-1) / C(N, n) gold_(i)."""
    proxy, gold = np.asarray(proxy, np.float64), np.asarray(gold, np.float64)
    N = proxy.size
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} needs 1 <= n <= N = {N} samples")
    order = np.argsort(proxy, kind="stable")
    i = np.arange(1, N + 1)
    lg = lambda x: np.array([math.lgamma(v) for v in np.atleast_1d(x)])
    logw = np.full(N, -np.inf)
    ok = i >= n
    logw[ok] = (
        lg(i[ok])
        - lg(n)
        - lg(i[ok] - n + 1)
        - (math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1))
    )
    return float(np.sum(np.exp(logw) * gold[order]))


def fit(d, gain, form: str) -> tuple[float, float, float]:
    """(alpha, beta, R^2) of gain = d (alpha - beta d) [form "bon"] or d (alpha - beta log d) [form "rl"]."""
    d, gain = np.asarray(d, np.float64), np.asarray(gain, np.float64)
    ok = np.isfinite(d) & np.isfinite(gain)
    d, gain = d[ok], gain[ok]
    if d.size < 3:
        return math.nan, math.nan, math.nan
    X = FORMS[form](d)
    (alpha, beta), *_ = np.linalg.lstsq(X, gain, rcond=None)
    ss_res = float(np.sum((gain - X @ np.array([alpha, beta])) ** 2))
    ss_tot = float(np.sum((gain - gain.mean()) ** 2))
    return float(alpha), float(beta), (1.0 - ss_res / ss_tot) if ss_tot > 0 else math.nan


def curve(alpha: float, beta: float, d, form: str) -> np.ndarray:
    """The fitted form at d."""
    return FORMS[form](np.asarray(d, np.float64)) @ np.array([alpha, beta])
