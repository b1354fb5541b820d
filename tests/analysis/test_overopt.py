"""lab.analysis.overopt: best-of-n by exhaustive enumeration, its analytic KL, and the fits on curves with
known coefficients."""

import itertools
import math

import numpy as np
import pytest

from lab.analysis import overopt


def test_best_of_n_equals_the_mean_over_every_subset():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=9), rng.normal(size=9)
    for n in (1, 2, 4, 9):
        subsets = list(itertools.combinations(range(9), n))
        want = np.mean([gold[max(s, key=lambda i: proxy[i])] for s in subsets])
        assert overopt.best_of_n(proxy, gold, n) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError):
        overopt.best_of_n(proxy, gold, 10)


def test_best_of_n_kl_is_log_n_minus_n_minus_one_over_n():
    assert overopt.bon_kl(1) == 0.0
    assert overopt.bon_kl(256) == pytest.approx(math.log(256) - 255 / 256, abs=1e-12)
    # against the exact KL of the max of n uniforms (density n u^(n-1)) by numerical integration
    u = (np.arange(200_000) + 0.5) / 200_000
    for n in (2, 8):
        dens = n * u ** (n - 1)
        assert np.mean(dens * np.log(dens)) == pytest.approx(float(overopt.bon_kl(n)), abs=1e-6)


# Gao et al. (2022)'s forms written out here, independently of overopt.FORMS: d (alpha - beta d) for best-of-n,
# d (alpha - beta log d) for RL, with d the square root of the KL
GAO = {"bon": lambda d, a, b: d * (a - b * d), "rl": lambda d, a, b: d * (a - b * np.log(d))}


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_known_coefficients(form):
    d = np.linspace(0.1, 3.0, 25)
    gain = GAO[form](d, 0.8, 0.3)
    np.testing.assert_allclose(overopt.curve(0.8, 0.3, d, form), gain, rtol=1e-12, atol=1e-12)
    a, b, r2 = overopt.fit(d, gain, form)
    assert (a, b, r2) == pytest.approx((0.8, 0.3, 1.0), abs=1e-9)
    noisy = gain + np.random.default_rng(1).normal(0, 0.05, d.size)
    assert 0.5 < overopt.fit(d, noisy, form)[2] < 1.0
    assert all(math.isnan(x) for x in overopt.fit(d[:2], gain[:2], form))
