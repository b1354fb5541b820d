"""Tests for lab.ops.losses against a NumPy float64 reference: nll = logsumexp(logits) - logits[target],
with logsumexp computed stably (max-shifted) in float64.

Tolerance: the JAX loss is a float32 log-softmax; its error is a few float32 roundoffs (u = 2^-24) of the
largest logit magnitude, so atol = 16 u * max(1, max|logits|) plus rtol 1e-6 -- a fixed formula that also
covers the 1e4-sized logits (atol ~ 1e-2 there, on losses of ~1e4).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.ops import losses

U32 = 2.0**-24
B, T, V = 3, 8, 11


def np_token_nll(logits, targets):
    x = np.asarray(logits, np.float64)
    m = x.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]
    return lse - np.take_along_axis(x, np.asarray(targets)[..., None], axis=-1)[..., 0]


def np_cross_entropy(logits, targets, mask=None):
    nll = np_token_nll(logits, targets)
    if mask is None:
        return nll.mean(), nll.size
    m = np.asarray(mask, np.float64)
    return (nll * m).sum() / max(m.sum(), 1.0), m.sum()


def _atol(logits):
    return 16 * U32 * max(1.0, float(np.abs(np.asarray(logits, np.float64)).max()))


def _data(seed, scale):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=(B, T, V))).astype(np.float32)
    targets = rng.integers(0, V, size=(B, T)).astype(np.int32)
    return logits, targets


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]))
def test_token_cross_entropy(seed, scale):
    logits, targets = _data(seed, scale)
    nll = losses.token_cross_entropy(logits, targets)
    assert nll.shape == (B, T) and nll.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(nll), np_token_nll(logits, targets), rtol=1e-6, atol=_atol(logits))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_cross_entropy_without_mask(seed, scale):
    logits, targets = _data(seed, scale)
    loss, n = losses.cross_entropy(logits, targets)
    want, want_n = np_cross_entropy(logits, targets)
    assert loss.shape == () and float(n) == want_n == B * T
    np.testing.assert_allclose(float(loss), want, rtol=1e-6, atol=_atol(logits))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), mask_bits=st.integers(1, 2 ** (B * T) - 1))
def test_cross_entropy_with_mask(seed, mask_bits):
    logits, targets = _data(seed, 2.0)
    mask = np.array([(mask_bits >> i) & 1 for i in range(B * T)], bool).reshape(B, T)
    loss, n = losses.cross_entropy(logits, targets, mask)
    want, want_n = np_cross_entropy(logits, targets, mask)
    assert float(n) == want_n == mask.sum()
    np.testing.assert_allclose(float(loss), want, rtol=1e-6, atol=_atol(logits))


def test_masked_positions_do_not_matter():
    logits, targets = _data(1, 1.0)
    mask = np.zeros((B, T), bool)
    mask[:, 2:5] = True
    logits2, targets2 = logits.copy(), targets.copy()
    logits2[~mask] = 1e3 * np.sign(logits2[~mask])
    targets2[~mask] = (targets2[~mask] + 1) % V
    assert float(losses.cross_entropy(logits, targets, mask)[0]) == float(
        losses.cross_entropy(logits2, targets2, mask)[0]
    )


def test_all_false_mask_gives_zero_not_nan():
    logits, targets = _data(2, 1.0)
    mask = np.zeros((B, T), bool)
    loss, n = losses.cross_entropy(logits, targets, mask)
    assert float(loss) == 0.0 and float(n) == 0.0
    g = jax.jit(jax.grad(lambda x: losses.cross_entropy(x, targets, mask)[0]))(logits)
    assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()


@pytest.mark.parametrize("with_mask", [False, True])
def test_large_logits_stay_finite(with_mask):
    logits, targets = _data(3, 1e4)
    mask = (np.arange(T)[None, :] < np.array([8, 4, 1])[:, None]) if with_mask else None
    loss, _ = losses.cross_entropy(logits, targets, mask)
    assert np.isfinite(float(loss))
    want = np_cross_entropy(logits, targets, mask)[0]
    np.testing.assert_allclose(float(loss), want, rtol=1e-6, atol=_atol(logits))
    g = jax.jit(jax.grad(lambda x: losses.cross_entropy(x, targets, mask)[0]))(logits)
    assert np.isfinite(np.asarray(g)).all()


def test_one_hot_extreme_logits_exact():
    logits = np.zeros((1, 2, V), np.float32)
    logits[..., 0] = 1e4
    nll = np.asarray(losses.token_cross_entropy(logits, np.array([[0, 1]], np.int32)))
    assert nll[0, 0] == 0.0  # exp(-1e4) underflows to exactly 0: a certain, correct prediction costs 0
    assert nll[0, 1] == 1e4


def test_bfloat16_logits_are_scored_in_float32():
    logits, targets = _data(4, 3.0)
    lb = jnp.asarray(logits).astype(jnp.bfloat16)
    nll = losses.token_cross_entropy(lb, targets)
    assert nll.dtype == jnp.float32
    l64 = np.asarray(lb.astype(jnp.float32), np.float64)
    np.testing.assert_allclose(np.asarray(nll), np_token_nll(l64, targets), rtol=1e-6, atol=_atol(l64))
