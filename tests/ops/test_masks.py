"""Tests for lab.ops.masks: each boolean mask against an element-by-element definition written with loops.

Masks are exact (booleans), so every comparison here is exact equality.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.ops import masks

T = 8
B = 4


def _loop_causal(t, s):
    """Query i sits at absolute position i + (s - t) (the last t of s keys) and sees keys at or before it."""
    return np.array([[j <= i + (s - t) for j in range(s)] for i in range(t)], dtype=bool)


def _loop_prefix(prefix_len_B, t):
    """(B, 1, T, T): key j is visible to query i if j is in the example's prefix or j <= i."""
    out = np.zeros((len(prefix_len_B), 1, t, t), dtype=bool)
    for b, p in enumerate(prefix_len_B):
        for i in range(t):
            for j in range(t):
                out[b, 0, i, j] = j < p or j <= i
    return out


@pytest.mark.parametrize("t,s", [(1, 1), (5, 5), (8, 8), (3, 8), (1, 6)])
def test_causal_mask(t, s):
    m = np.asarray(masks.causal_mask(t, s))
    assert m.shape == (t, s) and m.dtype == np.bool_
    np.testing.assert_array_equal(m, _loop_causal(t, s))
    # the last query is the newest position and sees every key
    assert m[-1].all()


def test_causal_mask_default_square_is_lower_triangular():
    np.testing.assert_array_equal(np.asarray(masks.causal_mask(T)), np.tril(np.ones((T, T), dtype=bool)))


@pytest.mark.parametrize("t,s", [(4, None), (3, 7)])
def test_bidirectional_mask(t, s):
    m = np.asarray(masks.bidirectional_mask(t, s))
    assert m.shape == (t, t if s is None else s) and m.dtype == np.bool_
    assert m.all()


def test_padding_mask_shape_and_values():
    valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int32)
    m = np.asarray(masks.padding_mask(jnp.asarray(valid)))
    assert m.shape == (3, 1, 1, 5) and m.dtype == np.bool_
    np.testing.assert_array_equal(m[:, 0, 0, :], valid.astype(bool))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, T), min_size=B, max_size=B))
def test_prefix_lm_mask_matches_definition(prefix_lens):
    m = np.asarray(masks.prefix_lm_mask(jnp.asarray(prefix_lens, dtype=jnp.int32), T))
    assert m.shape == (B, 1, T, T) and m.dtype == np.bool_
    np.testing.assert_array_equal(m, _loop_prefix(prefix_lens, T))


def test_prefix_lm_mask_limits():
    # prefix 0 is causal, prefix T is bidirectional
    m = np.asarray(masks.prefix_lm_mask(jnp.array([0, T]), T))
    np.testing.assert_array_equal(m[0, 0], np.tril(np.ones((T, T), dtype=bool)))
    assert m[1, 0].all()


def test_prefix_is_not_causal_inside_the_prefix():
    p = 5
    m = np.asarray(masks.prefix_lm_mask(jnp.array([p]), T))[0, 0]
    # every position inside the prefix sees the whole prefix, including later prefix positions ...
    assert m[:p, :p].all()
    assert m[0, p - 1]  # position 0 sees position p-1: not causal
    # ... but no prefix position sees past the prefix
    assert not m[:p, p:].any()
    # after the prefix: causal (the prefix plus itself and earlier positions)
    np.testing.assert_array_equal(m[p:], _loop_causal(T, T)[p:])


def test_combine_masks():
    assert masks.combine_masks() is None
    assert masks.combine_masks(None, None) is None
    c = masks.causal_mask(T)
    np.testing.assert_array_equal(np.asarray(masks.combine_masks(None, c)), np.asarray(c))
    lengths = np.array([8, 3, 0])
    valid = np.arange(T)[None, :] < lengths[:, None]
    m = np.asarray(masks.combine_masks(c, None, masks.padding_mask(jnp.asarray(valid))))
    assert m.shape == (3, 1, T, T)
    want = np.zeros((3, 1, T, T), dtype=bool)
    for b in range(3):
        for i in range(T):
            for j in range(T):
                want[b, 0, i, j] = j <= i and j < lengths[b]
    np.testing.assert_array_equal(m, want)
