"""Tests for lab.analysis.probe: the closed-form ridge probe against a float64 normal-equation reference,
its accuracy on separable and on random labels, and the bracket property against a loop."""

import numpy as np

from lab.analysis.probe import bracket_depth_inside, fit_probe, predict_probe, probe_accuracy


def test_fit_matches_the_normal_equations_in_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [1, 2, 3, 4, 5] + 1.5
    y = rng.random(200) < 0.4
    w, mu, sd = fit_probe(x, y, l2=0.01)
    z = np.c_[(x - x.mean(0)) / x.std(0), np.ones(200)]
    reg = 0.01 * 200 * np.diag([1, 1, 1, 1, 1, 0.0])
    want = np.linalg.inv(z.T @ z + reg) @ z.T @ np.where(y, 1.0, -1.0)
    np.testing.assert_allclose(w, want, rtol=1e-10, atol=1e-12)
    # balanced: weighted least squares, each class weighing 1/2 in total
    wb, _, _ = fit_probe(x, y, l2=0.01, balanced=True)
    r = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum())
    want = np.linalg.inv(z.T @ np.diag(r) @ z + reg / 200) @ z.T @ np.diag(r) @ np.where(y, 1.0, -1.0)
    np.testing.assert_allclose(wb, want, rtol=1e-10, atol=1e-12)


def test_balanced_accuracy_of_a_rare_class():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6000, 4))
    y = x[:, 0] > 1.8  # ~3.6% positive, found by a threshold on one feature
    acc = probe_accuracy(x[:3000], y[:3000], x[3000:], y[3000:], balanced=True)
    plain = probe_accuracy(x[:3000], y[:3000], x[3000:], y[3000:])
    assert acc > 0.9 and plain > 0.95
    # a constant feature set knows nothing: balanced accuracy 0.5 whatever the base rate
    c = np.ones((6000, 1))
    assert probe_accuracy(c[:3000], y[:3000], c[3000:], y[3000:], balanced=True) == 0.5


def test_separable_labels_are_found_and_random_ones_are_not():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 8))
    y = x @ rng.normal(size=8) > 0.3
    assert probe_accuracy(x[:2000], y[:2000], x[2000:], y[2000:]) > 0.97
    noise = rng.random(4000) < 0.5
    assert abs(probe_accuracy(x[:2000], noise[:2000], x[2000:], noise[2000:]) - 0.5) < 0.05
    assert predict_probe(fit_probe(x, y), x).dtype == bool


def test_bracket_depth_against_a_loop():
    rng = np.random.default_rng(2)
    tok = rng.integers(0, 4, size=(20, 30))  # 1 = "(", 2 = ")"
    want = np.zeros(tok.shape, bool)
    for n in range(tok.shape[0]):
        depth = 0
        for t in range(tok.shape[1]):
            depth += int(tok[n, t] == 1) - int(tok[n, t] == 2)
            want[n, t] = depth > 0
    np.testing.assert_array_equal(bracket_depth_inside(tok, 1, 2), want)
