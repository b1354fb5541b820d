"""Tests for lab.ops.norms.layer_norm and lab.ops.activations (gelu, gelu_tanh, relu) against NumPy float64
references written from the formulas (math.erf for the exact GELU).

Tolerances (float32 code vs float64 reference; float32 unit roundoff u = 2^-24 ~ 6e-8):
- layer_norm: rounding the inputs to float32 costs u * max|x| per element, and centring and dividing by the
  standard deviation amplifies that by 1 / std; so atol = 32 u * max|x| / std (a fixed formula) plus
  rtol 1e-5. bfloat16 input: the float32 result is rounded to bfloat16 (8 significant bits, half an ulp
  = 2^-9 relative), so rtol = 2^-8 on top of the float32 tolerance.
- gelu / gelu_tanh: rtol 1e-5, atol 2e-6. For x < 0, 1 + erf(x/sqrt 2) (or 1 + tanh) cancels, and an
  O(u) float32 error in erf/tanh becomes an absolute error of about |x|/2 * a few u <= 1e-6 on |x| <= 8.
- relu: exact.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lab.ops import activations, norms

U32 = 2.0**-24
ACT_RTOL, ACT_ATOL = 1e-5, 2e-6
SHAPE = (4, 16)


# --- NumPy float64 references -----------------------------------------------------------------------------
def np_layer_norm(x, scale, bias=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased (population) variance
    y = (x - mean) / np.sqrt(var + eps) * np.asarray(scale, np.float64)
    return y if bias is None else y + np.asarray(bias, np.float64)


def np_gelu(x):
    x = np.asarray(x, np.float64)
    erf = np.vectorize(math.erf)
    return x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))


def np_gelu_tanh(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _ln_atol(x, eps=1e-5):
    x = np.asarray(x, np.float64)
    std = np.sqrt(x.var(-1) + eps).min()
    return 32 * U32 * np.abs(x).max() / std


def _ln_inputs(seed, loc, spread):
    rng = np.random.default_rng(seed)
    x = (loc + spread * rng.normal(size=SHAPE)).astype(np.float32)
    scale = (1.0 + 0.5 * rng.normal(size=SHAPE[-1:])).astype(np.float32)
    bias = rng.normal(size=SHAPE[-1:]).astype(np.float32)
    return x, scale, bias


# --- layer_norm -------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), loc=st.floats(-8, 8), spread=st.floats(0.05, 8), with_bias=st.booleans())
def test_layer_norm_matches_reference(seed, loc, spread, with_bias):
    x, scale, bias = _ln_inputs(seed, loc, spread)
    bias = bias if with_bias else None
    y = norms.layer_norm(x, scale, bias)
    assert y.shape == x.shape and y.dtype == jnp.float32
    atol = _ln_atol(x) * np.abs(scale).max()
    np.testing.assert_allclose(np.asarray(y), np_layer_norm(x, scale, bias), rtol=1e-5, atol=atol)


def test_layer_norm_unit_scale_gives_zero_mean_unit_variance():
    x, _, _ = _ln_inputs(1, 3.0, 2.0)
    y = np.asarray(norms.layer_norm(x, np.ones(SHAPE[-1], np.float32)), np.float64)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-6)
    var = x.astype(np.float64).var(-1)
    np.testing.assert_allclose(y.var(-1), var / (var + 1e-5), rtol=1e-5)  # the eps is inside the sqrt


def test_layer_norm_no_bias_equals_zero_bias_and_eps_is_used():
    x, scale, _ = _ln_inputs(2, 0.0, 0.3)
    zero = np.zeros(SHAPE[-1], np.float32)
    no_bias, zero_bias = norms.layer_norm(x, scale), norms.layer_norm(x, scale, zero)
    np.testing.assert_array_equal(np.asarray(no_bias), np.asarray(zero_bias))
    y = np.asarray(norms.layer_norm(x, scale, eps=0.5))
    np.testing.assert_allclose(y, np_layer_norm(x, scale, eps=0.5), rtol=1e-5, atol=_ln_atol(x, 0.5))


def test_layer_norm_constant_row_gives_bias_not_nan():
    x = np.full(SHAPE, 0.5, np.float32)  # sums of 0.5 are exact, so x - mean is exactly 0
    _, scale, bias = _ln_inputs(3, 0.0, 1.0)
    y = np.asarray(norms.layer_norm(x, scale, bias))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, np.broadcast_to(bias, SHAPE), rtol=0, atol=1e-6)


@pytest.mark.parametrize("with_bias", [False, True])
def test_layer_norm_bfloat16_in_bfloat16_out(with_bias):
    x32, scale, bias = _ln_inputs(4, 1.0, 2.0)
    bias = bias if with_bias else None
    x = jnp.asarray(x32).astype(jnp.bfloat16)
    y = norms.layer_norm(x, jnp.asarray(scale), bias)
    assert y.dtype == jnp.bfloat16
    x64 = np.asarray(x.astype(jnp.float32), np.float64)  # the reference sees the same (rounded) input
    atol = _ln_atol(x64) * np.abs(scale).max()
    np.testing.assert_allclose(
        np.asarray(y.astype(jnp.float32)), np_layer_norm(x64, scale, bias), rtol=2.0**-8, atol=atol
    )


# --- activations ------------------------------------------------------------------------------------------
_floats = hnp.arrays(np.float32, (64,), elements=st.floats(-8, 8, width=32, allow_subnormal=False))


@settings(max_examples=30, deadline=None)
@given(_floats)
def test_gelu_exact_matches_erf_reference(x):
    y = activations.gelu(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np_gelu(x), rtol=ACT_RTOL, atol=ACT_ATOL)


@settings(max_examples=30, deadline=None)
@given(_floats)
def test_gelu_tanh_matches_formula(x):
    y = activations.gelu_tanh(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np_gelu_tanh(x), rtol=ACT_RTOL, atol=ACT_ATOL)


def test_gelu_and_gelu_tanh_are_different_functions():
    # they differ by up to ~4.7e-4 (near |x| = 2.7); a swapped implementation would fail the tests above
    x = np.linspace(-4, 4, 801, dtype=np.float32)
    assert np.abs(np.asarray(activations.gelu(x)) - np.asarray(activations.gelu_tanh(x))).max() > 2e-4
    assert np.abs(np_gelu(x) - np_gelu_tanh(x)).max() > 2e-4


@pytest.mark.parametrize("fn", [activations.gelu, activations.gelu_tanh])
def test_gelu_limits_and_dtype(fn):
    x = np.array([0.0, 30.0, -30.0, 1e4, -1e4], np.float32)
    y = np.asarray(fn(x))
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, [0.0, 30.0, 0.0, 1e4, 0.0])
    assert fn(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


@settings(max_examples=20, deadline=None)
# XLA on CPU flushes float32 subnormals to zero (a platform property, not the lab's), so none are drawn
@given(hnp.arrays(np.float32, (64,), elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=False)))
def test_relu_exact(x):
    y = np.asarray(activations.relu(x))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.maximum(x.astype(np.float64), 0.0).astype(np.float32))


def test_relu_dtypes_and_gradient():
    assert activations.relu(jnp.array([-1.0, 2.0], jnp.bfloat16)).dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(activations.relu(jnp.array([-3, 0, 4]))), [0, 0, 4])
    g = jax.grad(lambda x: activations.relu(x).sum())(jnp.array([-1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(g), [0.0, 1.0])


# --- project 10: RMSNorm, SiLU, SwiGLU, GeGLU ---------------------------------------------------------------
def np_rms_norm(x, scale, eps=1e-6):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * np.asarray(scale, np.float64)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), loc=st.floats(-8, 8), spread=st.floats(0.05, 8))
def test_rms_norm_matches_reference(seed, loc, spread):
    # no centring, so no cancellation: the error is a few roundoffs relative to each output, rtol 1e-5
    x, scale, _ = _ln_inputs(seed, loc, spread)
    y = norms.rms_norm(x, scale)
    assert y.shape == x.shape and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np_rms_norm(x, scale), rtol=1e-5, atol=1e-6)


def test_rms_norm_gives_unit_rms_and_keeps_the_mean():
    x, _, _ = _ln_inputs(5, 3.0, 1.0)
    y = np.asarray(norms.rms_norm(x, np.ones(SHAPE[-1], np.float32)), np.float64)
    np.testing.assert_allclose(np.sqrt((y**2).mean(-1)), 1.0, rtol=1e-5)
    assert np.all(y.mean(-1) > 0.5)  # unlike layer_norm, the mean is not removed
    assert norms.rms_norm(jnp.asarray(x, jnp.bfloat16), jnp.ones(SHAPE[-1])).dtype == jnp.bfloat16


def np_silu(x):
    x = np.asarray(x, np.float64)
    return x / (1.0 + np.exp(-x))


@settings(max_examples=30, deadline=None)
@given(_floats, _floats)
def test_gated_units_match_reference(gate, up):
    # products of two O(1) float32 terms: rtol 1e-5 on top of each factor's own tolerance
    np.testing.assert_allclose(
        np.asarray(activations.silu(gate)), np_silu(gate), rtol=ACT_RTOL, atol=ACT_ATOL
    )
    up64 = up.astype(np.float64)
    np.testing.assert_allclose(
        np.asarray(activations.swiglu(gate, up)), np_silu(gate) * up64, rtol=ACT_RTOL, atol=8 * ACT_ATOL
    )
    np.testing.assert_allclose(
        np.asarray(activations.geglu(gate, up)), np_gelu(gate) * up64, rtol=ACT_RTOL, atol=8 * ACT_ATOL
    )


def test_silu_limits():
    y = np.asarray(activations.silu(np.array([0.0, 50.0, -50.0, -1e4], np.float32)))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [0.0, 50.0, 0.0, 0.0], atol=1e-18)
