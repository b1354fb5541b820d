"""Tests for lab.ops.kv_cache: attention over a cache filled chunk by chunk equals a NumPy float64 attention
over the whole sequence (causal; causal + sliding window for the ring buffer), for MHA and GQA; the ring
buffer holds exactly the last W positions, scoring naively or in key blocks (impl="blocked", whose long
prefill XLA plans without the T x S score array); measured bytes equal the formula.

Tolerance: rtol = atol = 1e-5, as in test_attention.py (float32 with O(1) inputs, head size 8, at most 24
keys: float32-vs-float64 differences are ~1e-7; a leaked masked key or a wrong slot changes outputs at
the 1e-2..1 level). Cache contents are checked exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.ops import kv_cache

RTOL = ATOL = 1e-5
B, H, D = 2, 4, 8


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def np_reference(q, k, v, window=None):
    """(B, T, H, D) float64 causal (and sliding-window) attention over the whole sequence."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    t, h, kv = q.shape[1], q.shape[2], k.shape[2]
    k, v = np.repeat(k, h // kv, axis=2), np.repeat(v, h // kv, axis=2)
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    m = j <= i
    if window is not None:
        m &= j > i - window
    s = np.where(m, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v)


def _qkv(t, kv, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, t, H, D)).astype(np.float32),
        rng.normal(size=(B, t, kv, D)).astype(np.float32),
        rng.normal(size=(B, t, kv, D)).astype(np.float32),
    )


def _run_chunks(cache, q, k, v, chunks, impl="naive"):
    """Feed the sequence through layer 0 of `cache` in chunks of the given sizes; outputs concatenated."""
    outs, start = [], 0
    attend = jax.jit(kv_cache.attend, static_argnums=1, static_argnames=("impl", "block"))
    for c in chunks:
        sl = slice(start, start + c)
        o, k_new, v_new = attend(cache, 0, q[:, sl], k[:, sl], v[:, sl], impl=impl, block=4)
        cache = kv_cache.advance(cache, [k_new], [v_new], c)
        outs.append(np.asarray(o))
        start += c
    return np.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("kv", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize(
    "chunks, impl",
    [([24], "naive"), ([5] + [1] * 19, "naive"), ([1] * 24, "naive"), ([7, 9, 1, 7], "naive"),
     ([24], "blocked"), ([7, 9, 1, 7], "blocked")],
)  # fmt: skip
def test_full_cache_equals_whole_sequence_attention(kv, chunks, impl):
    t = sum(chunks)
    q, k, v = _qkv(t, kv)
    cache = kv_cache.init(1, B, 32, kv, D)  # more slots than positions: the empty ones must stay invisible
    out, cache = _run_chunks(cache, q, k, v, chunks, impl)
    np.testing.assert_allclose(out, np_reference(q, k, v), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(np.asarray(cache.k[0])[:, :t], k)
    np.testing.assert_array_equal(np.asarray(cache.k[0])[:, t:], 0.0)
    np.testing.assert_array_equal(np.asarray(cache.pos), np.where(np.arange(32) < t, np.arange(32), -1))
    assert int(cache.length) == t


@pytest.mark.parametrize("kv", [4, 2])
@pytest.mark.parametrize(
    "window, chunks, impl",
    [(6, [1] * 20, "naive"), (6, [4] + [1] * 16, "naive"), (6, [9, 1, 1, 13], "naive"), (5, [3, 8, 2], "naive"),
     (6, [9, 1, 1, 13], "blocked"), (5, [3, 8, 2], "blocked")],
)  # fmt: skip
def test_ring_cache_equals_sliding_window_attention_and_holds_the_last_w_positions(kv, window, chunks, impl):
    t = sum(chunks)
    q, k, v = _qkv(t, kv, seed=1)
    cache = kv_cache.init(1, B, window, kv, D, ring=True)
    out, cache = _run_chunks(cache, q, k, v, chunks, impl)
    np.testing.assert_allclose(out, np_reference(q, k, v, window), rtol=RTOL, atol=ATOL)
    pos = np.asarray(cache.pos)
    assert sorted(pos.tolist()) == list(range(t - window, t))  # the newest W positions, nothing else
    np.testing.assert_array_equal(pos % window, np.arange(window))  # position p lives in slot p mod W
    np.testing.assert_array_equal(np.asarray(cache.v[0]), v[:, pos])


def test_a_blocked_prefill_never_holds_the_score_matrix():
    """XLA's plan (compiled, not run) for one prefill chunk of T = S tokens into a full cache, 4 heads: naive
    scoring keeps at least one float32 (B, H, T, S) array, and doubling T quadruples its temporaries;
    blocked scoring (64 keys a step) holds T x 64 scores, and doubling T at most doubles them (+10%)."""

    def temp(impl, t):
        cache = kv_cache.init(1, B, t, H, D)
        x = jax.ShapeDtypeStruct((B, t, H, D), jnp.float32)
        fn = jax.jit(lambda c, q, k, v: kv_cache.attend(c, 0, q, k, v, impl=impl, block=64))
        return fn.lower(cache, x, x, x).compile().memory_analysis().temp_size_in_bytes

    naive, blocked = ([temp(impl, t) for t in (512, 1024)] for impl in ("naive", "blocked"))
    assert naive[1] >= B * H * 1024 * 1024 * 4 and naive[1] / naive[0] >= 3.5, naive
    assert blocked[1] / blocked[0] <= 2.2 and blocked[1] < naive[1] / 4, blocked
    with pytest.raises(ValueError, match="impl must be one of"):
        kv_cache.attend(kv_cache.init(1, B, 4, H, D), 0, *(jnp.zeros((B, 1, H, D)),) * 3, impl="flash")


def test_ring_that_is_never_full_equals_the_full_cache():
    q, k, v = _qkv(10, 2, seed=2)
    full, _ = _run_chunks(kv_cache.init(1, B, 10, 2, D), q, k, v, [3] + [1] * 7)
    ring, _ = _run_chunks(kv_cache.init(1, B, 10, 2, D, ring=True), q, k, v, [3] + [1] * 7)
    # One-token steps attend over the same 10 slots holding the same bits in both: identical. The 3-token
    # prefill attends over 10 slots in the full cache but over 10 + 3 (old slots and new rows) in the ring,
    # so its float32 sums run over different lengths and may differ in the last bit (they do on some CPUs):
    # equal to the float64 reference within the file's tolerances, like every other output here.
    np.testing.assert_array_equal(full[:, 3:], ring[:, 3:])
    np.testing.assert_allclose(ring[:, :3], np_reference(q, k, v)[:, :3], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(full[:, :3], np_reference(q, k, v)[:, :3], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype, size", [(jnp.float32, 4), (jnp.bfloat16, 2)])
@pytest.mark.parametrize(
    "layers, batch, kv, hd, length", [(2, 1, 4, 16, 64), (3, 5, 1, 8, 100), (1, 2, 2, 4, 7)]
)
def test_measured_bytes_equal_the_formula(dtype, size, layers, batch, kv, hd, length):
    cache = kv_cache.init(layers, batch, length, kv, hd, dtype)
    want = 2 * layers * batch * kv * hd * length * size
    assert kv_cache.nbytes(cache) == kv_cache.cache_bytes(layers, batch, kv, hd, length, size) == want
    assert kv_cache.bookkeeping_bytes(cache) == 4 * length + 4


def test_cache_is_a_pytree_with_a_static_ring_flag():
    cache = kv_cache.init(2, 1, 8, 1, 4, ring=True)
    leaves, tree = jax.tree_util.tree_flatten(cache)
    assert len(leaves) == 6  # 2 k + 2 v + pos + length; `ring` is static
    again = jax.tree_util.tree_unflatten(tree, leaves)
    assert again.ring and again.size == 8 and again.n_layers == 2
    with pytest.raises(ValueError, match=">= 1"):
        kv_cache.init(0, 1, 8, 1, 4)


def test_filled_marks_the_first_t_slots_and_attention_sees_only_them():
    """A cache whose every slot holds a row, marked as holding 0..t-1: a token at position t attends to
    exactly the first t rows and itself, as in whole-sequence attention over t + 1 positions."""
    s, t = 12, 7
    q, k, v = _qkv(s, 2, seed=5)
    cache = kv_cache.init(1, B, s, 2, D).replace(k=(jnp.asarray(k),), v=(jnp.asarray(v),))
    cache = kv_cache.filled(cache, t)
    np.testing.assert_array_equal(np.asarray(cache.pos), np.where(np.arange(s) < t, np.arange(s), -1))
    assert int(cache.length) == t
    np.testing.assert_array_equal(np.asarray(cache.k[0]), k)  # the arrays are left as they are
    out, _, _ = kv_cache.attend(cache, 0, q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1])
    want = np_reference(q[:, : t + 1], k[:, : t + 1], v[:, : t + 1])[:, t:]
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=ATOL)
