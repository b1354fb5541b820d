"""Tests for lab.ops.positional against NumPy float64 references written from the papers' formulas, and the
properties that make each encoding what it is.

Tolerances: float32 code (unit roundoff 6e-8) vs float64 references. Sinusoidal/RoPE angles are
position * frequency with positions <= 512, and float32 evaluates sin/cos of an argument of size A with
an absolute error of about A * 6e-8 <= 3e-5, so atol = 1e-4 for the tables and rotated vectors at those
positions (1e-5 below 64). ALiBi slopes are powers of two computed in float64 and rounded once: rtol 1e-6.
RoPE's relative-offset property: scores of O(1) vectors of size 16 after float32 rotations, atol 1e-4
at offsets up to 300.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lab.ops import positional


def np_sinusoidal(t, d):
    pe = np.zeros((t, d))
    for pos in range(t):
        for i in range(0, d, 2):
            pe[pos, i] = math.sin(pos / 10000 ** (i / d))
            if i + 1 < d:
                pe[pos, i + 1] = math.cos(pos / 10000 ** (i / d))
    return pe


def np_rope(x, theta):
    b, t, h, e = x.shape
    out = np.empty_like(x, dtype=np.float64)
    for pos in range(t):
        for i in range(e // 2):
            a = pos * theta ** (-2 * i / e)
            c, s = math.cos(a), math.sin(a)
            x0, x1 = x[:, pos, :, 2 * i], x[:, pos, :, 2 * i + 1]
            out[:, pos, :, 2 * i] = x0 * c - x1 * s
            out[:, pos, :, 2 * i + 1] = x0 * s + x1 * c
    return out


@pytest.mark.parametrize("t,d", [(16, 8), (64, 33), (7, 2)])
def test_sinusoidal_matches_the_formula(t, d):
    np.testing.assert_allclose(
        np.asarray(positional.sinusoidal_positions(t, d)), np_sinusoidal(t, d), atol=1e-5
    )


@pytest.mark.parametrize("theta", [10000.0, 100.0])
def test_rope_matches_interleaved_pair_rotation(theta):
    x = np.random.default_rng(0).normal(size=(2, 40, 3, 8)).astype(np.float32)
    got = np.asarray(positional.apply_rope(jnp.asarray(x), theta))
    np.testing.assert_allclose(got, np_rope(x.astype(np.float64), theta), atol=1e-5)
    # a rotation keeps each pair's length
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@pytest.mark.parametrize("shift", [1, 17, 300])
def test_rope_score_depends_only_on_the_relative_offset(shift):
    # q at position m and k at position n give the same score as at m + shift, n + shift
    rng = np.random.default_rng(shift)
    e, t = 16, 512
    q, k = rng.normal(size=(e,)), rng.normal(size=(e,))
    x = np.zeros((1, t, 2, e), np.float32)
    x[0, :, 0], x[0, :, 1] = q, k  # the same q and k vectors placed at every position
    rot = np.asarray(positional.apply_rope(jnp.asarray(x)), np.float64)
    score = lambda m, n: rot[0, m, 0] @ rot[0, n, 1]
    for m, n in [(5, 2), (9, 9), (3, 11), (100, 40)]:
        assert abs(score(m, n) - score(m + shift, n + shift)) < 1e-4
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # but it does depend on the offset


def test_rope_refuses_odd_head_dimension():
    with pytest.raises(ValueError, match="even head dimension"):
        positional.apply_rope(jnp.zeros((1, 4, 2, 5)))


def np_alibi_slopes(n):
    """The paper's get_slopes (Press et al. 2022, github.com/ofirpress/attention_with_linear_biases)."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest) + np_alibi_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 12, 16])
def test_alibi_slopes_match_the_paper(n):
    np.testing.assert_allclose(np.asarray(positional.alibi_slopes(n)), np_alibi_slopes(n), rtol=1e-6)


def test_alibi_known_values():
    # the paper: 8 heads -> 1/2, 1/4, ..., 1/256
    np.testing.assert_allclose(np.asarray(positional.alibi_slopes(8)), [2.0**-i for i in range(1, 9)])
    # 6 heads: the 4 slopes of 4 heads (2^-2, 2^-4, 2^-6, 2^-8) then every other of 8: 2^-1, 2^-3
    np.testing.assert_allclose(
        np.asarray(positional.alibi_slopes(6)), [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    )


@pytest.mark.parametrize("n,t,s", [(4, 6, 6), (3, 5, 9)])
def test_alibi_bias_matches_the_formula(n, t, s):
    slopes = np.asarray(np_alibi_slopes(n))
    bias = np.asarray(positional.alibi_bias(n, t, s))
    assert bias.shape == (n, t, s)
    for h in range(n):
        for i in range(t):
            qpos = i + (s - t)
            for j in range(s):
                assert bias[h, i, j] == pytest.approx(-slopes[h] * abs(qpos - j), rel=1e-6, abs=0)
    assert np.all(bias[:, np.arange(t), np.arange(t) + (s - t)] == 0)  # a query's own key: no penalty
