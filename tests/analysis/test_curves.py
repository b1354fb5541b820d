"""lab.analysis.curves on made-up curves with known answers."""

import numpy as np
import pytest

from lab.analysis.curves import change_point, loglog_slope


def test_a_power_law_gives_its_exponent_with_a_zero_width_interval():
    x = np.array([256, 512, 1024, 2048, 4096])
    slope, (lo, hi) = loglog_slope(x, 3.0 * x**2.0)
    assert slope == pytest.approx(2.0, abs=1e-12) and hi - lo == pytest.approx(0.0, abs=1e-9)


def test_noise_widens_the_interval_around_the_exponent():
    x = np.geomspace(100, 10_000, 8)
    y = x**1.5 * np.exp(np.random.default_rng(0).normal(0, 0.05, x.size))
    slope, (lo, hi) = loglog_slope(x, y)
    assert lo < 1.5 < hi and abs(slope - 1.5) < 0.05 and 0 < hi - lo < 0.2


def test_a_constant_plus_linear_term_flattens_the_slope_below_one():
    x = np.geomspace(256, 8192, 6)
    assert loglog_slope(x, 1e6 + 10 * x)[0] < 1.0


@pytest.mark.parametrize("at", [1, 7, 15, 30])
def test_a_step_is_found_where_it_is(at):
    x = np.arange(1, 32)
    y = np.where(x < at, 1.0, 0.125) if at > 1 else np.r_[1.0, np.full(30, 0.125)]
    where, before, after = change_point(x, y)
    want = at if at > 1 else 2
    assert where == want and before == 1.0 and after == 0.125


def test_a_noisy_step_is_found_near_it():
    x = np.arange(1, 64)
    y = np.where(x < 20, 0.98, 0.12) + np.random.default_rng(1).normal(0, 0.03, x.size)
    where, before, after = change_point(x, y)
    assert where == 20 and before > 0.9 and after < 0.2
