"""Scaling-law fits, NumPy only: L(N) = E + A N^-alpha and L(N, D) = E + A/N^alpha + B/D^beta.

Hoffmann et al. 2022 (Chinchilla), approach 3, as Besiroglu et al. 2024 replicated it: the law is fitted
on *log* loss, with the parametrization A = exp(a), B = exp(b), E = exp(e) so that

    log L_hat(N, D) = LSE(a - alpha log N, b - beta log D, e)          (LSE = log-sum-exp)

and the objective is the *sum* (not the mean: Besiroglu et al. showed that averaging, as the released code
did, stops the optimizer early and biases the fit) of Huber terms H_delta(log L_hat - log L) with
delta = 1e-3, minimized by L-BFGS from every point of a grid of starts, the best end point kept.

SciPy is not used (lab/analysis is NumPy only, DESIGN.md): `lbfgs` below is a small batched L-BFGS (two-loop
recursion, memory 10, Armijo backtracking) with analytic gradients, run on all starts at once as arrays
(starts x parameters), so a grid of hundreds of starts costs one vectorized loop.

    fit_power_law(N, L)            -> Law (E, A, alpha): L(N) = E + A N^-alpha
    fit_chinchilla(N, D, L)        -> Law (E, A, alpha, B, beta)
    fit_power_laws / fit_chinchillas
                                   the same fits for many data sets at once (one row of L each, e.g. every
                                   bootstrap resample): one batched L-BFGS run instead of a Python loop
    Law.predict(N[, D])            the fitted loss
    compute_optimal(law, C)        N_opt, D_opt and tokens per parameter at compute C = 6 N D
    bootstrap_means(groups, n, seed)
                                   the per-group seed means of n resamples, as arrays, for batched fits
    bootstrap_seeds(groups, statistic, n, seed)
                                   percentile 95% intervals of statistics of fits refitted on seed resamples
                                   drawn within each group (each model size), so a CI says how much the
                                   numbers depend on which seeds were trained

Every function is pure: the same arrays in give the same numbers out (the bootstrap takes its seed).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

HUBER_DELTA = 1e-3  # Hoffmann et al.'s delta, on log loss


def huber(r, delta: float = HUBER_DELTA) -> np.ndarray:
    """Elementwise Huber loss: r^2/2 for |r| <= delta, delta (|r| - delta/2) beyond."""
    r = np.asarray(r, np.float64)
    a = np.abs(r)
    with np.errstate(over="ignore", invalid="ignore"):  # a line search may try huge steps: inf, not a warning
        return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


# --- a batched L-BFGS ---------------------------------------------------------------------------------------
def lbfgs(
    fun_grad: Callable, x0, max_iter: int = 300, memory: int = 10, gtol: float = 1e-12, ftol: float = 1e-10
):
    """Minimize from each row of `x0` (S, P) at once. `fun_grad(X, rows) -> (f, g)` evaluates the rows
    `rows` (indices into x0) at X (len(rows), P), returning f (len(rows),) and g (len(rows), P); the indices let
    an objective carry data of its own per row (many fits in one run).

    Per start: the two-loop recursion gives a direction (steepest descent when the curvature pair is not
    positive or the direction is not a descent direction), then an Armijo backtracking line search (halving
    from step 1). A start stops when its gradient's max-norm is below `gtol` or no step decreases f.
    Returns (X (S, P), f (S,)).
    """
    x = np.array(x0, np.float64, copy=True)
    s_n, p = x.shape
    f, g = fun_grad(x, np.arange(s_n))
    s_hist = np.zeros((memory, s_n, p))
    y_hist = np.zeros((memory, s_n, p))
    rho = np.zeros((memory, s_n))
    k_used = 0
    active = np.ones(s_n, bool)
    for _ in range(max_iter):
        active &= np.max(np.abs(g), axis=1) > gtol
        if not active.any():
            break
        # two-loop recursion over the stored pairs, newest first
        q = g.copy()
        alph = np.zeros((memory, s_n))
        order = [(k_used - 1 - j) % memory for j in range(min(k_used, memory))]
        for i in order:
            alph[i] = rho[i] * np.sum(s_hist[i] * q, axis=1)
            q -= alph[i][:, None] * y_hist[i]
        if order:
            i = order[0]
            yy = np.sum(y_hist[i] ** 2, axis=1)
            gamma = np.where(yy > 0, np.sum(s_hist[i] * y_hist[i], axis=1) / np.where(yy > 0, yy, 1), 1.0)
            q *= np.where(gamma > 0, gamma, 1.0)[:, None]
        for i in reversed(order):
            b = rho[i] * np.sum(y_hist[i] * q, axis=1)
            q += (alph[i] - b)[:, None] * s_hist[i]
        d = -q
        slope = np.sum(d * g, axis=1)
        bad = ~(slope < 0) | ~np.isfinite(slope)
        d[bad] = -g[bad]
        slope[bad] = -np.sum(g[bad] ** 2, axis=1)
        # Armijo backtracking, every start its own step
        step = np.ones(s_n)
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        todo = active.copy()
        for _ in range(40):
            if not todo.any():
                break
            idx = np.flatnonzero(todo)
            xt = x[idx] + step[idx, None] * d[idx]
            ft, gt = fun_grad(xt, idx)
            ok = np.isfinite(ft) & (ft <= f[idx] + 1e-4 * step[idx] * slope[idx])
            x_new[idx[ok]], f_new[idx[ok]], g_new[idx[ok]] = xt[ok], ft[ok], gt[ok]
            todo[idx[ok]] = False
            step[idx[~ok]] *= 0.5
        moved = active & ~todo
        # no acceptable step, or too small a gain: converged as far as float64 (or ftol) allows
        active &= moved & (f - f_new > ftol * np.abs(f))
        s_k, y_k = x_new - x, g_new - g
        sy = np.sum(s_k * y_k, axis=1)
        slot = k_used % memory
        keep = moved & (sy > 1e-300)
        s_hist[slot] = np.where(keep[:, None], s_k, 0.0)
        y_hist[slot] = np.where(keep[:, None], y_k, 0.0)
        rho[slot] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
        k_used += 1
        x, f, g = x_new, f_new, g_new
    return x, f


# --- the law and its objective ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Law:
    """A fitted law: E + A N^-alpha (+ B D^-beta when `B` is not None), and the summed Huber objective."""

    E: float
    A: float
    alpha: float
    B: float | None = None
    beta: float | None = None
    objective: float = math.nan
    theta: tuple[float, ...] = ()  # the fitted log-space parameters (a[, b], e, alpha[, beta]), as found

    def predict(self, n, d=None) -> np.ndarray:
        n = np.asarray(n, np.float64)
        out = self.E + self.A * n**-self.alpha
        if self.B is not None:
            out = out + self.B * np.asarray(d, np.float64) ** -self.beta
        return out

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "theta"}


def _objective(logx: np.ndarray, logl: np.ndarray, delta: float):
    """fun_grad for parameters [c_1..c_K, e, exp_1..exp_K] (S, 2K+1) of log L = LSE(c_k - exp_k logx_k, e):
    the summed Huber loss over the n points and its gradient. logx: (n, K); logl: (n,) shared by every row,
    or (R, n), one data set per row of the L-BFGS batch."""
    k = logx.shape[1]

    def fun_grad(theta, rows):
        ll = logl[None] if logl.ndim == 1 else logl[rows]
        c, e, ex = theta[:, :k], theta[:, k], theta[:, k + 1 :]
        terms = np.concatenate(
            [c[:, None, :] - ex[:, None, :] * logx[None], e[:, None, None] * np.ones((1, logx.shape[0], 1))],
            axis=2,
        )  # (S, n, K+1)
        m = terms.max(axis=2, keepdims=True)
        w = np.exp(terms - m)
        tot = w.sum(axis=2, keepdims=True)
        pred = (m + np.log(tot))[..., 0]  # (S, n)
        w = w / tot
        r = pred - ll
        f = huber(r, delta).sum(axis=1)
        dr = np.clip(r, -delta, delta)  # dH/dr
        g_c = np.einsum("sn,snk->sk", dr, w[:, :, :k])
        g_e = np.sum(dr * w[:, :, k], axis=1)
        g_ex = -np.einsum("sn,snk,nk->sk", dr, w[:, :, :k], logx)
        return f, np.concatenate([g_c, g_e[:, None], g_ex], axis=1)

    return fun_grad


def _grid(k: int) -> np.ndarray:
    """Hoffmann et al.'s grid of starts (coarsened to keep the bootstrap fast): a (and b) in {0, 5, .., 25},
    e in {-1, -0.5, .., 1}, alpha (and beta) in {0, 0.5, .., 2}."""
    cs, es, xs = np.arange(0.0, 26.0, 5.0), np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 2.01, 0.5)
    if k == 2:  # 2 x 6^2 x 5 x 5^2 = 9000 is Hoffmann's; every other value keeps it to a few hundred
        cs, xs = cs[::2], xs[::2]
    rows = [
        (*c, e, *x)
        for c in itertools.product(cs, repeat=k)
        for e in es
        for x in itertools.product(xs, repeat=k)
    ]
    return np.array(rows, np.float64)


def _fit(logx: np.ndarray, loss, starts, delta: float) -> np.ndarray:
    """The best end point [theta..., objective] over the starts: (P + 1,) for one loss vector (n,), or
    (B, P + 1) for a batch of them (B, n), every data set run from every start in one L-BFGS batch."""
    loss = np.asarray(loss, np.float64)
    if loss.ndim not in (1, 2) or loss.shape[-1] != logx.shape[0]:
        raise ValueError(f"need one loss per point, got {loss.shape} for {logx.shape[0]} points")
    if not np.all(np.isfinite(loss) & (loss > 0)) or not np.all(np.isfinite(logx)):
        raise ValueError("scaling fits need finite, positive sizes and losses")
    k = logx.shape[1]
    x0 = _grid(k) if starts is None else np.atleast_2d(np.asarray(starts, np.float64))
    data = np.atleast_2d(np.log(loss))  # (B, n)
    n_data, n_start = data.shape[0], x0.shape[0]
    logl = data[0] if n_data == 1 else np.repeat(data, n_start, axis=0)  # row b * S + s: data b, start s
    x, f = lbfgs(_objective(logx, logl, delta), np.tile(x0, (n_data, 1)))
    f = np.where(np.isfinite(f), f, np.inf).reshape(n_data, n_start)
    best = np.arange(n_data) * n_start + np.argmin(f, axis=1)
    out = np.concatenate([x[best], f.ravel()[best, None]], axis=1)
    return out[0] if loss.ndim == 1 else out


def _check_power_law(n) -> np.ndarray:
    n = np.asarray(n, np.float64)
    if np.unique(n).size < 3:
        raise ValueError(
            f"a power law with an offset has 3 parameters: need >= 3 distinct sizes, got {np.unique(n).size}"
        )
    return np.log(n)[:, None]


def _check_chinchilla(n, d) -> np.ndarray:
    n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
    if np.unique(n).size < 3 or np.unique(d).size < 2:
        raise ValueError("the Chinchilla law needs >= 3 distinct sizes and >= 2 distinct token counts")
    return np.log(np.stack([n, d], axis=1))


def _power_law(theta) -> Law:
    a, e, alpha, obj = theta
    return Law(
        math.exp(e), math.exp(a), float(alpha), objective=float(obj), theta=tuple(map(float, theta[:-1]))
    )


def _chinchilla(theta) -> Law:
    a, b, e, alpha, beta, obj = theta
    return Law(
        math.exp(e),
        math.exp(a),
        float(alpha),
        math.exp(b),
        float(beta),
        float(obj),
        tuple(map(float, theta[:-1])),
    )


def fit_power_law(n, loss, starts=None, delta: float = HUBER_DELTA) -> Law:
    """L(N) = E + A N^-alpha, fitted on log loss by the summed Huber objective from a grid of L-BFGS starts
    (rows of `starts` as [a, e, alpha] replace the grid). Needs >= 3 distinct N."""
    return _power_law(_fit(_check_power_law(n), np.ravel(loss), starts, delta))


def fit_power_laws(n, losses, starts=None, delta: float = HUBER_DELTA) -> list[Law]:
    """`fit_power_law` for every row of `losses` (B, len(n)) at once, each row from the same starts: the laws
    equal fitting the rows one by one, at the cost of one batched L-BFGS run."""
    return [_power_law(t) for t in _fit(_check_power_law(n), np.atleast_2d(losses), starts, delta)]


def fit_chinchilla(n, d, loss, starts=None, delta: float = HUBER_DELTA) -> Law:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al.'s approach 3), rows of `starts` as
    [a, b, e, alpha, beta]. Needs >= 3 distinct N and >= 2 distinct D."""
    return _chinchilla(_fit(_check_chinchilla(n, d), np.ravel(loss), starts, delta))


def fit_chinchillas(n, d, losses, starts=None, delta: float = HUBER_DELTA) -> list[Law]:
    """`fit_chinchilla` for every row of `losses` (B, len(n)) at once (see `fit_power_laws`)."""
    return [_chinchilla(t) for t in _fit(_check_chinchilla(n, d), np.atleast_2d(losses), starts, delta)]


def law_start(law: Law) -> list[float]:
    """A fitted law as a start row for refitting (e.g. the bootstrap starts from the full-data fit): its
    log-space parameters as found (exp may have underflowed E to 0 when the fit drove e far below zero)."""
    if law.theta:
        return list(law.theta)
    if law.B is None:
        return [math.log(law.A), math.log(law.E), law.alpha]
    return [math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta]


def compute_optimal(law: Law, compute) -> dict:
    """Minimize E + A/N^alpha + B/D^beta subject to 6 N D = C (Hoffmann et al. eq. 4):
    N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G,
    G = (alpha A / (beta B))^(1/(alpha+beta)); tokens per parameter D_opt/N_opt (constant in C only when
    alpha = beta). Without a positive A, B, alpha and beta (a term that does not fall as N or D grows) there is
    no interior optimum: every value is NaN (a real power of the negative ratio in G would be complex)."""
    c = np.asarray(compute, np.float64) / 6.0
    if not min(law.alpha, law.beta, law.A, law.B) > 0:
        nan = np.full(c.shape, np.nan)
        return {"N": nan, "D": nan, "tokens_per_param": nan}
    s = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1.0 / s)
    n_opt = g * c ** (law.beta / s)
    d_opt = c ** (law.alpha / s) / g
    return {"N": n_opt, "D": d_opt, "tokens_per_param": d_opt / n_opt}


# --- bootstrap over seeds -----------------------------------------------------------------------------------
def bootstrap_means(values: Sequence[np.ndarray], n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """`values[g]` is an (seeds, ...) array of group g's runs (e.g. one model size: seeds x token budgets);
    each of `n` resamples draws each group's seeds with replacement. Returns, per group, the (n, ...) means
    over the drawn seeds: row r of every group is resample r (the draws `bootstrap_seeds` makes, same seed)."""
    rng = np.random.default_rng(seed)
    values = [np.asarray(v) for v in values]
    rows = [[v[rng.integers(0, len(v), len(v))].mean(axis=0) for v in values] for _ in range(n)]
    return [np.stack([r[j] for r in rows]) for j in range(len(values))]


def bootstrap_seeds(
    values: Sequence[np.ndarray], statistic: Callable, n: int = 200, seed: int = 0
) -> np.ndarray:
    """(n, ...) `statistic(means)` on resamples (`bootstrap_means`): `statistic` gets the list of per-group
    means over one resample's drawn seeds. Resamples whose statistic raises ValueError (a degenerate fit)
    give NaN."""
    groups = bootstrap_means(values, n, seed)
    out = []
    for r in range(n):
        try:
            out.append(np.asarray(statistic([m[r] for m in groups]), np.float64))
        except ValueError:
            out.append(None)
    shape = next((o.shape for o in out if o is not None), ())
    return np.stack([np.full(shape, np.nan) if o is None else o for o in out])


def interval(samples, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The percentile 95% interval (2.5%, 97.5%) of bootstrap samples, NaN resamples left out; a statistic
    with no finite resample (an optimum that no fitted law has) gets NaN bounds, without NumPy's warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        return np.nanpercentile(samples, 2.5, axis=axis), np.nanpercentile(samples, 97.5, axis=axis)
