"""GPTQ against a plain NumPy float64 implementation of the paper's loop, and the property it exists for: a
smaller layer output error than round-to-nearest on correlated inputs (and the same result on uncorrelated)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.quant import gptq as qg
from lab.quant import uniform as qz


def ref_gptq(w, h, bits, group, damp=0.01):
    """float64, symmetric; group = K for per-channel scales fixed from the original weights."""
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    k, n = w.shape
    h = h + damp * np.mean(np.diag(h)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    qmax, qmin = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
    q = np.zeros_like(w)
    blocks = np.abs(w).reshape(k // group, group, n).max(axis=1) / (2 ** (bits - 1) - 0.5)
    scales = np.where(blocks < 1e-12, 1.0, blocks)  # from the original weights
    for i in range(k):
        s = scales[i // group]
        q[i] = np.clip(np.rint(w[i] / s), qmin, qmax) * s
        e = (w[i] - q[i]) / u[i, i]
        w[i + 1 :] -= np.outer(u[i, i + 1 :], e)
    return q


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((16, 16))
    x = rng.standard_normal((256, 16)) @ mix  # correlated input features
    w = rng.standard_normal((16, 6))
    # Each group's (and column's) largest magnitude made positive: the absmax entry lands exactly on the half step
    # (absmax / scale = 2^(b-1) - 1/2), a tie float32 and float64 may break differently; on the positive
    # side both neighbours clip to the same code, so the comparison with the reference is exact.
    for rows in (slice(0, 8), slice(8, 16)):  # per group of 8 inputs (and so per column too)
        w[rows] *= np.sign(w[rows][np.abs(w[rows]).argmax(axis=0), np.arange(6)])
    return x.astype(np.float32), w.astype(np.float32)


def test_gptq_matches_the_float64_reference(layer):
    x, w = layer
    h = np.asarray(x, np.float64).T @ x / len(x)
    run = jax.jit(qg.gptq, static_argnames=("symmetric", "granularity", "group", "damp"))
    for gran, group in (("channel", 16), ("group", 8)):
        got = np.asarray(
            run(
                jnp.asarray(w),
                jnp.asarray(h, jnp.float32),
                3.0,
                granularity=gran,
                group=group if gran == "group" else 0,
            )
        )
        want = ref_gptq(w, h, 3, group)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_gptq_beats_round_to_nearest_on_correlated_inputs_and_equals_it_on_white_ones(layer):
    x, w = layer
    h = qg.hessian(x) / len(x)
    for bits in (2, 3, 4):
        g = qg.gptq(w, h, bits)
        r = qz.quant_dequant(w, bits, granularity="channel")
        assert float(qg.layer_error(x, w, g)) < 0.9 * float(qg.layer_error(x, w, r))
    # uncorrelated inputs (H diagonal): no error is pushed anywhere, so GPTQ is round-to-nearest
    np.testing.assert_allclose(
        np.asarray(qg.gptq(w, jnp.eye(16) * 3.0, 4)),
        np.asarray(qz.quant_dequant(w, 4, granularity="channel")),
        atol=1e-6,
    )


def test_dead_inputs_zero_their_rows():
    w = jnp.ones((4, 3))
    h = jnp.diag(jnp.asarray([1.0, 0.0, 2.0, 1.0]))
    q = np.asarray(qg.gptq(w, h, 4))
    assert np.all(q[1] == 0) and np.all(q[[0, 2, 3]] != 0)
