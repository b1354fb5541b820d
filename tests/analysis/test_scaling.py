"""Scaling-law fits (lab.analysis.scaling) on data drawn from known laws: the parameters come back within
stated tolerances, the gradient the L-BFGS follows is the objective's (finite differences in float64), the
compute-optimal split matches a brute-force search, and every function is pure."""

import warnings

import numpy as np
import pytest

from lab.analysis import scaling


def _law_1d(n, E=1.8, A=30.0, alpha=0.3):
    return E + A * n**-alpha


def test_huber_matches_its_definition():
    r = np.array([-0.01, -1e-3, -2e-4, 0.0, 5e-4, 1e-3, 0.3])
    want = [0.5 * x * x if abs(x) <= 1e-3 else 1e-3 * (abs(x) - 0.5e-3) for x in r]
    np.testing.assert_allclose(scaling.huber(r), want, rtol=1e-12, atol=0)


def test_the_objective_gradient_is_the_finite_difference_gradient():
    rng = np.random.default_rng(1)
    logx = np.log(np.stack([np.geomspace(1e4, 1e6, 6), np.geomspace(1e5, 1e7, 6)], axis=1))
    logl = np.log(1.5 + rng.uniform(0.1, 1.0, (2, 6)))  # one data set per row
    obj = scaling._objective(logx, logl, 0.05)  # a delta large enough that both Huber branches occur
    theta = np.array([[5.0, 6.0, 0.3, 0.35, 0.3], [2.0, 9.0, 0.6, 0.1, 0.5]])

    def fg(t):
        return obj(t, np.arange(2))

    f, g = fg(theta)
    f_alone = [scaling._objective(logx, logl[i], 0.05)(theta[i : i + 1], None)[0][0] for i in range(2)]
    np.testing.assert_allclose(f, f_alone, rtol=1e-13)
    eps = 1e-6
    num = np.zeros_like(theta)
    for j in range(theta.shape[1]):
        tp, tm = theta.copy(), theta.copy()
        tp[:, j] += eps
        tm[:, j] -= eps
        num[:, j] = (fg(tp)[0] - fg(tm)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9)


def test_lbfgs_finds_the_minimum_of_the_rosenbrock_function_from_several_starts():
    def fg(x, rows):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
        g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], axis=1)
        return f, g

    x, f = scaling.lbfgs(fg, np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0]]), max_iter=1000, ftol=0)
    np.testing.assert_allclose(x, 1.0, atol=1e-5)
    assert np.all(f < 1e-10)


def test_power_law_without_noise_is_recovered_exactly():
    n = np.geomspace(1e4, 3e6, 7)
    law = scaling.fit_power_law(n, _law_1d(n))
    np.testing.assert_allclose([law.E, law.A, law.alpha], [1.8, 30.0, 0.3], rtol=1e-8)  # 3e-15 measured
    np.testing.assert_allclose(law.predict(n), _law_1d(n), rtol=1e-6)


def test_power_law_with_noise_is_recovered_within_tolerance():
    """Tolerances for 0.2% multiplicative noise on 8 sizes over 2.5 decades: alpha within 0.03, E within
    0.05 nats, A within a factor 1.5 (A and alpha trade off along a ridge)."""
    rng = np.random.default_rng(0)
    n = np.geomspace(1e4, 3e6, 8)
    errs = []
    for _ in range(5):
        loss = _law_1d(n) * np.exp(rng.normal(0, 0.002, n.size))
        law = scaling.fit_power_law(n, loss)
        errs.append((abs(law.alpha - 0.3), abs(law.E - 1.8), abs(np.log(law.A / 30.0))))
    errs = np.array(errs)
    assert np.all(errs[:, 0] < 0.03) and np.all(errs[:, 1] < 0.05) and np.all(errs[:, 2] < np.log(1.5)), errs


def test_chinchilla_law_with_noise_is_recovered_within_tolerance():
    """Hoffmann-like parameters, 6 sizes x 5 token counts, 0.1% noise: alpha and beta within 0.05, E within
    0.1 nats; and the fit's loss surface within 0.5% of the true one over the grid."""
    rng = np.random.default_rng(3)
    nn, dd = np.meshgrid(np.geomspace(1e5, 1e8, 6), np.geomspace(1e7, 1e10, 5), indexing="ij")
    nn, dd = nn.ravel(), dd.ravel()
    true = 1.82 + 482 / nn**0.35 + 2085 / dd**0.37
    law = scaling.fit_chinchilla(nn, dd, true * np.exp(rng.normal(0, 0.001, true.size)))
    assert abs(law.alpha - 0.35) < 0.05 and abs(law.beta - 0.37) < 0.05, law
    assert abs(law.E - 1.82) < 0.1, law
    np.testing.assert_allclose(law.predict(nn, dd), true, rtol=5e-3)


def test_a_fit_from_the_fitted_start_returns_the_same_law():
    n = np.geomspace(1e4, 3e6, 6)
    loss = _law_1d(n) * np.exp(np.random.default_rng(2).normal(0, 0.003, n.size))
    law = scaling.fit_power_law(n, loss)
    again = scaling.fit_power_law(n, loss, starts=[scaling.law_start(law)])
    np.testing.assert_allclose([again.E, again.A, again.alpha], [law.E, law.A, law.alpha], rtol=1e-6)
    assert again.objective <= law.objective * (1 + 1e-9)


def test_fits_are_pure():
    n = np.geomspace(1e4, 3e6, 6)
    loss = _law_1d(n)
    n0, l0 = n.copy(), loss.copy()
    a, b = scaling.fit_power_law(n, loss), scaling.fit_power_law(n, loss)
    assert a == b
    np.testing.assert_array_equal(n, n0)
    np.testing.assert_array_equal(loss, l0)


def test_compute_optimal_matches_a_brute_force_search():
    law = scaling.Law(E=1.82, A=482.0, alpha=0.35, B=2085.0, beta=0.37)
    c = 1e21
    n = np.geomspace(1e6, 1e13, 200_001)
    best = n[np.argmin(law.predict(n, c / (6 * n)))]
    opt = scaling.compute_optimal(law, c)
    assert abs(opt["N"] / best - 1) < 1e-3
    np.testing.assert_allclose(6 * opt["N"] * opt["D"], c, rtol=1e-12)
    np.testing.assert_allclose(opt["tokens_per_param"], opt["D"] / opt["N"], rtol=1e-12)


def test_compute_optimal_has_no_optimum_when_a_term_does_not_fall():
    """alpha < 0 (loss rising with N) makes G a real power of a negative number: NaN, not a complex value
    whose imaginary part a float cast would silently drop."""
    for bad in ({"alpha": -0.2}, {"beta": -0.1}, {"A": -3.0}, {"alpha": 0.0}):
        law = scaling.Law(**{**dict(E=1.82, A=482.0, alpha=0.35, B=2085.0, beta=0.37), **bad})
        opt = scaling.compute_optimal(law, np.array([1e18, 1e21]))
        for v in opt.values():
            assert v.shape == (2,) and np.isnan(v).all() and not np.iscomplexobj(v), (bad, opt)


def test_batched_fits_equal_the_fits_one_by_one():
    rng = np.random.default_rng(7)
    n, d = np.geomspace(1e4, 1e6, 5), np.array([1e6, 4e6, 1.6e7])
    nn, dd = (a.ravel() for a in np.meshgrid(n, d, indexing="ij"))
    truth = 1.8 + 300.0 * nn**-0.35 + 900.0 * dd**-0.3
    rows = truth * np.exp(rng.normal(0, 0.01, (4, truth.size)))  # four noisy data sets
    start = scaling.law_start(scaling.fit_chinchilla(nn, dd, truth))
    for one, law in zip(rows, scaling.fit_chinchillas(nn, dd, rows, starts=[start])):
        alone = scaling.fit_chinchilla(nn, dd, one, starts=[start])
        np.testing.assert_allclose(law.theta, alone.theta, rtol=1e-9, atol=1e-12)
    last = rows.reshape(4, 5, 3)[:, :, -1]
    grid = scaling.fit_power_laws(n, last)  # from the grid of starts, every data set
    for one, law in zip(last, grid):
        alone = scaling.fit_power_law(n, one)
        np.testing.assert_allclose(law.predict(n), alone.predict(n), rtol=1e-9)
        assert law.objective == pytest.approx(alone.objective, rel=1e-9, abs=1e-15)


def test_bootstrap_draws_seeds_within_each_group():
    same = [np.full((3, 2), 1.0), np.full((4, 2), 2.0)]  # no variation between seeds: every resample equal
    s = scaling.bootstrap_seeds(same, lambda m: np.concatenate(m), n=10, seed=0)
    assert s.shape == (10, 4)
    np.testing.assert_array_equal(s, np.tile([1.0, 1.0, 2.0, 2.0], (10, 1)))
    vals = [np.array([[0.0], [1.0], [2.0]])]
    a = scaling.bootstrap_seeds(vals, lambda m: m[0], n=50, seed=4)
    np.testing.assert_array_equal(a, scaling.bootstrap_seeds(vals, lambda m: m[0], n=50, seed=4))
    assert set(np.round(a[:, 0] * 3).astype(int)) <= set(range(7)) and a.std() > 0  # means of 3 draws of 0..2
    lo, hi = scaling.interval(a)
    assert 0 <= lo[0] < hi[0] <= 2


def test_a_failed_statistic_is_nan_not_a_crash():
    def stat(m):
        raise ValueError("degenerate")

    samples = scaling.bootstrap_seeds([np.ones((2, 1))], stat, n=3)
    assert np.isnan(samples).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy "All-NaN slice" warning: NaN bounds are the answer
        lo, hi = scaling.interval(np.column_stack([samples, [1.0, 2.0, 3.0]]))
    assert np.isnan([lo[0], hi[0]]).all() and 1.0 <= lo[1] < hi[1] <= 3.0


@pytest.mark.parametrize("sizes", [[1e4, 1e5], [1e4, 1e4, 1e5]])
def test_a_power_law_needs_three_sizes(sizes):
    with pytest.raises(ValueError, match="need >= 3 distinct sizes"):
        scaling.fit_power_law(sizes, np.ones(len(sizes)) * 2.0)
