"""lab.ops.linear (lab/ops/matmul.py): x @ w over the last axis as one 2-D matmul. Same values and gradients
as a float64 NumPy reference, and what it is for: XLA:CPU computes the weight's gradient without a transposed
copy."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from lab.ops.matmul import linear


def _data():
    x = jax.random.normal(jax.random.key(0), (4, 16, 32))
    w = jax.random.normal(jax.random.key(1), (32, 48)) / 6.0
    return x, w


def test_linear_matches_a_float64_reference_in_value_and_gradient():
    x, w = _data()
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    np.testing.assert_allclose(linear(x, w), x64 @ w64, rtol=1e-5, atol=1e-5)
    # loss = sum(sin(x @ w)): d/dw = x^T cos(x @ w), d/dx = cos(x @ w) w^T (rows of every leading position)
    gw, gx = jax.grad(lambda w, x: jnp.sum(jnp.sin(linear(x, w))), argnums=(0, 1))(w, x)
    c = np.cos(x64 @ w64)
    np.testing.assert_allclose(gw, x64.reshape(-1, 32).T @ c.reshape(-1, 48), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gx, c @ w64.T, rtol=1e-5, atol=1e-5)
    assert linear(x[0, 0], w).shape == (48,)  # any number of leading axes, none included


def test_the_weight_gradient_needs_no_transposed_copy():
    # With `x @ w` on 3-D x, XLA:CPU (JAX 0.10) fed the weight-gradient dot a transposed copy of the output's
    # gradient (and took a slower dot for it); merged rows give a plain 2-D dot over them (lab.ops.linear).
    x, w = _data()
    grad = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.sin(linear(x, w)))))
    hlo = grad.lower(w, x).compile().as_text()
    moves = re.findall(r"= \S+ (?:copy|transpose)\(", hlo)  # instructions, not op names in metadata
    assert not moves, moves
