"""Tests for lab.ops.attention against a plain NumPy float64 reference written from the formula

    softmax(Q K^T * scale + mask) V,  query head h reading key/value head h // (H / K)  (GQA),

with a query row that sees no key defined (as the module documents) as the uniform average over all keys.

Tolerances: the JAX code runs in float32 (unit roundoff 6e-8); with O(1) inputs, head size <= 8 and at most
8 keys, each output is a short sum of O(1) terms, so float32-vs-float64 differences are ~1e-7. We use
rtol = atol = 1e-5 (two orders of margin, still far below any real error such as a wrong head grouping,
a missing scale or a leaked masked key, which change outputs at the 1e-2..1 level).
Causality is checked exactly: masked keys get probability exactly 0, so outputs and gradients must match
bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.ops import attention, masks

RTOL = ATOL = 1e-5
BF16_RTOL = BF16_ATOL = 2.0**-6  # bfloat16 keeps 8 significant bits (unit roundoff 2^-9); a few roundings
B, T, H, D = 3, 8, 4, 8


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    # On GPU/TPU JAX may run float32 matmuls with TF32/bf16 passes by default; the tolerances above assume
    # real float32 products (which is what CPU always does).
    with jax.default_matmul_precision("highest"):
        yield


# --- NumPy float64 reference ------------------------------------------------------------------------------
def np_attention_weights(q, k, mask=None, scale=None):
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    assert h % kv == 0
    k = np.repeat(k, h // kv, axis=2)  # explicit GQA: query head i uses key head i // (h // kv)
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    scores = np.einsum("bthd,bshd->bhts", q, k) * scale
    m = np.ones((b, h, t, s), bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), (b, h, t, s))
    scores = np.where(m, scores, -np.inf)
    row_max = np.max(scores, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(scores - row_max)
    denom = e.sum(-1, keepdims=True)
    w = np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 1.0 / s)  # no visible key: uniform
    return w


def np_attention(q, k, v, mask=None, scale=None):
    w = np_attention_weights(q, k, mask, scale)
    h = q.shape[2]
    v = np.repeat(np.asarray(v, np.float64), h // v.shape[2], axis=2)
    return np.einsum("bhts,bshd->bthd", w, v)


def np_mha(x, wq, wk, wv, wo, mask=None, bq=None, bk=None, bv=None, bo=None, qkv_fn=None):
    f = lambda a: None if a is None else np.asarray(a, np.float64)
    x, wq, wk, wv, wo, bq, bk, bv, bo = map(f, (x, wq, wk, wv, wo, bq, bk, bv, bo))
    q = np.einsum("btd,dhe->bthe", x, wq)
    k = np.einsum("btd,dke->btke", x, wk)
    v = np.einsum("btd,dke->btke", x, wv)
    if bq is not None:
        q, k, v = q + bq, k + bk, v + bv
    if qkv_fn is not None:
        q, k, v = qkv_fn(q, k, v)
    o = np_attention(q, k, v, mask)
    y = np.einsum("bthe,hed->btd", o, wo)
    return y if bo is None else y + bo


# --- helpers ----------------------------------------------------------------------------------------------
def _qkv(seed, kv, b=B, t=T, s=None, h=H, d=D, dtype=np.float32):
    rng = np.random.default_rng(seed)
    s = t if s is None else s
    q = rng.normal(size=(b, t, h, d)).astype(dtype)
    k = rng.normal(size=(b, s, kv, d)).astype(dtype)
    v = rng.normal(size=(b, s, kv, d)).astype(dtype)
    return q, k, v


def _mask(kind, b=B, t=T, lengths=(8, 5, 1), prefix=(0, 3, 8)):
    if kind == "none":
        return None
    if kind == "causal":
        return masks.causal_mask(t)
    if kind == "bidirectional":
        return masks.bidirectional_mask(t)
    if kind == "padding":
        valid = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
        return masks.padding_mask(jnp.asarray(valid))
    if kind == "prefix":
        return masks.prefix_lm_mask(jnp.asarray(prefix), t)
    if kind == "causal+padding":
        valid = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
        return masks.combine_masks(masks.causal_mask(t), masks.padding_mask(jnp.asarray(valid)))
    raise ValueError(kind)


MASK_KINDS = ["none", "causal", "bidirectional", "padding", "prefix", "causal+padding"]


# --- dot_product_attention --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("kv", [H, 2, 1])
def test_dot_product_attention_matches_reference(kind, kv):
    q, k, v = _qkv(0, kv)
    mask = _mask(kind)
    out = attention.dot_product_attention(q, k, v, mask)
    assert out.shape == (B, T, H, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, mask), rtol=RTOL, atol=ATOL)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, T), min_size=B, max_size=B),
    prefix=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_per_example_padding_and_prefix_lengths(lengths, prefix, seed):
    q, k, v = _qkv(seed, 2)
    for kind in ("padding", "prefix"):
        mask = _mask(kind, lengths=lengths, prefix=prefix)
        out = attention.dot_product_attention(q, k, v, mask)
        np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, mask), rtol=RTOL, atol=ATOL)


def test_padding_keys_are_ignored():
    # changing keys/values at padded positions changes nothing (bit for bit)
    lengths = (8, 5, 2)
    q, k, v = _qkv(1, H)
    mask = _mask("padding", lengths=lengths)
    out = np.asarray(attention.dot_product_attention(q, k, v, mask))
    k2, v2 = k.copy(), v.copy()
    for b, n in enumerate(lengths):
        k2[b, n:] += 10.0
        v2[b, n:] -= 7.0
    np.testing.assert_array_equal(np.asarray(attention.dot_product_attention(q, k2, v2, mask)), out)


@pytest.mark.parametrize("kv", [H, 2, 1])
def test_gqa_equals_repeated_kv_heads(kv):
    """K/V heads shared by groups of H/K query heads == multi-head attention on explicitly repeated heads."""
    q, k, v = _qkv(2, kv)
    mask = _mask("causal")
    g = H // kv
    out = attention.dot_product_attention(q, k, v, mask)
    rep = attention.dot_product_attention(q, np.repeat(k, g, axis=2), np.repeat(v, g, axis=2), mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(rep), rtol=RTOL, atol=ATOL)
    # query heads in the same group read the same keys, so with equal queries they give equal outputs
    q_same = np.repeat(q[:, :, ::g], g, axis=2)
    o = np.asarray(attention.dot_product_attention(q_same, k, v, mask))
    for h in range(H):
        np.testing.assert_array_equal(o[:, :, h], o[:, :, (h // g) * g])


def test_gqa_rejects_heads_not_a_multiple():
    q, k, v = _qkv(3, 3)
    with pytest.raises(ValueError, match="multiple"):
        attention.dot_product_attention(q, k, v)


@pytest.mark.parametrize("kv", [H, 2, 1])
def test_cross_attention_with_more_keys_than_queries(kv):
    """T=3 new queries over S=8 keys with the cache-style causal mask (queries are the last T positions)."""
    q, k, v = _qkv(4, kv, t=3, s=8)
    mask = masks.causal_mask(3, 8)
    out = attention.dot_product_attention(q, k, v, mask)
    assert out.shape == (B, 3, H, D)
    np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, mask), rtol=RTOL, atol=ATOL)


def test_explicit_scale():
    q, k, v = _qkv(5, 2)
    out = attention.dot_product_attention(q, k, v, masks.causal_mask(T), scale=0.7)
    np.testing.assert_allclose(
        np.asarray(out), np_attention(q, k, v, masks.causal_mask(T), scale=0.7), rtol=RTOL, atol=ATOL
    )


def test_value_head_size_may_differ_from_query_head_size():
    q, k, _ = _qkv(6, 2)
    v = np.random.default_rng(6).normal(size=(B, T, 2, 5)).astype(np.float32)
    out = attention.dot_product_attention(q, k, v, masks.causal_mask(T))
    assert out.shape == (B, T, H, 5)
    want = np_attention(q, k, v, masks.causal_mask(T))
    np.testing.assert_allclose(np.asarray(out), want, rtol=RTOL, atol=ATOL)


def test_bfloat16_inputs():
    q, k, v = (a.astype(jnp.bfloat16) for a in map(jnp.asarray, _qkv(7, 2)))
    out = attention.dot_product_attention(q, k, v, masks.causal_mask(T))
    assert out.dtype == jnp.bfloat16
    f64 = lambda a: np.asarray(a.astype(jnp.float32), np.float64)  # reference from the same rounded inputs
    want = np_attention(f64(q), f64(k), f64(v), masks.causal_mask(T))
    np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), want, rtol=BF16_RTOL, atol=BF16_ATOL)


# --- attention_weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("kv", [H, 2, 1])
def test_attention_weights_rows_sum_to_one(kind, kv):
    q, k, _ = _qkv(8, kv)
    mask = _mask(kind)
    w = np.asarray(attention.attention_weights(q, k, mask))
    assert w.shape == (B, H, T, T) and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(w, np_attention_weights(q, k, mask), rtol=RTOL, atol=ATOL)
    if mask is not None:
        assert (w[~np.broadcast_to(np.asarray(mask), w.shape)] == 0).all()  # masked keys: exactly 0


def test_fully_masked_query_row_gives_no_nan():
    q, k, v = _qkv(9, 2)
    mask = np.tril(np.ones((B, 1, T, T), bool))
    mask[0, 0, 3, :] = False  # query 3 of example 0 sees nothing
    mask[1] = False  # example 1 sees nothing at all (e.g. an all-padding row)
    w = np.asarray(attention.attention_weights(q, k, mask))
    out = np.asarray(attention.dot_product_attention(q, k, v, mask))
    assert np.isfinite(w).all() and np.isfinite(out).all()
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=0, atol=1e-6)
    # documented behaviour: a row with no visible key is the uniform average of all values
    np.testing.assert_allclose(out, np_attention(q, k, v, mask), rtol=RTOL, atol=ATOL)
    loss = lambda q, k, v: attention.dot_product_attention(q, k, v, mask).sum()
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


# --- causality --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kv", [H, 2, 1])
def test_causal_by_perturbation(kv):
    """Changing q, k, v at positions > t leaves the outputs at positions <= t bit-for-bit unchanged."""
    q, k, v = _qkv(10, kv)
    mask = masks.causal_mask(T)
    out = np.asarray(attention.dot_product_attention(q, k, v, mask))
    rng = np.random.default_rng(11)
    for t in range(T - 1):
        q2, k2, v2 = (a.copy() for a in (q, k, v))
        for a in (q2, k2, v2):
            a[:, t + 1 :] = rng.normal(size=a[:, t + 1 :].shape) * 5
        out2 = np.asarray(attention.dot_product_attention(q2, k2, v2, mask))
        np.testing.assert_array_equal(out2[:, : t + 1], out[:, : t + 1])
        assert not np.allclose(out2[:, t + 1], out[:, t + 1])  # the test can see a change when there is one


@pytest.mark.parametrize("kv", [H, 1])
def test_causal_by_gradient(kv):
    """d out[t] / d (q, k, v)[s] is exactly zero for every s > t (and not identically zero for s <= t)."""
    q, k, v = _qkv(12, kv, b=1, d=4)
    mask = masks.causal_mask(T)
    f = lambda q, k, v: attention.dot_product_attention(q, k, v, mask)
    for name, j in zip("qkv", jax.jit(jax.jacrev(f, argnums=(0, 1, 2)))(q, k, v)):
        j = np.asarray(j)  # (1, T, H, D, 1, S, heads, D): output position axis 1, input position axis 5
        for t in range(T):
            assert (j[:, t, :, :, :, t + 1 :] == 0).all(), f"output {t} depends on a later {name}"
            # non-vacuous; at t = 0 the single visible key has weight 1 whatever q and k are
            if name == "v" or t > 0:
                assert np.abs(j[:, t, :, :, :, : t + 1]).max() > 0


def test_multi_head_attention_causal_by_gradient_and_perturbation():
    rng = np.random.default_rng(13)
    d_model, h, kv, e = 8, 4, 2, 2
    w = dict(
        wq_DHE=rng.normal(size=(d_model, h, e)),
        wk_DKE=rng.normal(size=(d_model, kv, e)),
        wv_DKE=rng.normal(size=(d_model, kv, e)),
        wo_HED=rng.normal(size=(h, e, d_model)),
    )
    w = {n: a.astype(np.float32) for n, a in w.items()}
    x = rng.normal(size=(1, T, d_model)).astype(np.float32)
    mask = masks.causal_mask(T)
    f = jax.jit(lambda x: attention.multi_head_attention(x, mask=mask, **w))
    j = np.asarray(jax.jit(jax.jacrev(f))(x))  # (1, T, D, 1, T, D)
    for t in range(T):
        assert (j[:, t, :, :, t + 1 :] == 0).all()
        assert np.abs(j[:, t, :, :, : t + 1]).max() > 0
    y = np.asarray(f(x))
    for t in range(T - 1):
        x2 = x.copy()
        x2[:, t + 1 :] += rng.normal(size=x2[:, t + 1 :].shape).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(f(x2))[:, : t + 1], y[:, : t + 1])


# --- multi_head_attention end to end ----------------------------------------------------------------------
def _mha_weights(seed, d_model, h, kv, e, bias):
    rng = np.random.default_rng(seed)
    n = lambda std, *shape: (std * rng.normal(size=shape)).astype(np.float32)
    s_in, s_out = d_model**-0.5, (h * e) ** -0.5  # keep activations O(1)
    w = dict(
        wq_DHE=n(s_in, d_model, h, e),
        wk_DKE=n(s_in, d_model, kv, e),
        wv_DKE=n(s_in, d_model, kv, e),
        wo_HED=n(s_out, h, e, d_model),
    )
    if bias:
        w.update(bq_HE=n(0.5, h, e), bk_KE=n(0.5, kv, e), bv_KE=n(0.5, kv, e), bo_D=n(0.5, d_model))
    return w


_NP_NAMES = {
    "wq_DHE": "wq",
    "wk_DKE": "wk",
    "wv_DKE": "wv",
    "wo_HED": "wo",
    "bq_HE": "bq",
    "bk_KE": "bk",
    "bv_KE": "bv",
    "bo_D": "bo",
}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kv", [H, 2, 1])
@pytest.mark.parametrize("kind", ["causal", "padding", "prefix"])
def test_multi_head_attention_matches_reference(bias, kv, kind):
    d_model, e = 16, 4
    w = _mha_weights(14, d_model, H, kv, e, bias)
    x = np.random.default_rng(15).normal(size=(B, T, d_model)).astype(np.float32)
    mask = _mask(kind)
    y = attention.multi_head_attention(x, mask=mask, **w)
    assert y.shape == (B, T, d_model) and y.dtype == jnp.float32
    want = np_mha(x, mask=mask, **{_NP_NAMES[n]: a for n, a in w.items()})
    np.testing.assert_allclose(np.asarray(y), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kv", [H, 2])
def test_multi_head_attention_qkv_fn(kv):
    """qkv_fn sees the biased projections and its outputs are what attention uses."""
    d_model, e = 16, 4
    w = _mha_weights(16, d_model, H, kv, e, True)
    x = np.random.default_rng(17).normal(size=(B, T, d_model)).astype(np.float32)
    fn = lambda q, k, v: (0.5 * q, v, k)  # scale queries, swap keys and values (shape-preserving for any K)
    mask = masks.causal_mask(T)
    y = attention.multi_head_attention(x, mask=mask, qkv_fn=fn, **w)
    want = np_mha(x, mask=mask, qkv_fn=fn, **{_NP_NAMES[n]: a for n, a in w.items()})
    np.testing.assert_allclose(np.asarray(y), want, rtol=RTOL, atol=ATOL)
    # and it really changed something
    assert not np.allclose(np.asarray(y), np_mha(x, mask=mask, **{_NP_NAMES[n]: a for n, a in w.items()}))
    if kv == H:  # swapping q and k needs as many key heads as query heads
        swap = lambda q, k, v: (k, q, v)
        y = attention.multi_head_attention(x, mask=mask, qkv_fn=swap, **w)
        want = np_mha(x, mask=mask, qkv_fn=swap, **{_NP_NAMES[n]: a for n, a in w.items()})
        np.testing.assert_allclose(np.asarray(y), want, rtol=RTOL, atol=ATOL)


# --- project 3: one query, step by step; additive score bias ----------------------------------------------
def test_one_query_step_by_step_equals_the_batched_attention():
    rng = np.random.default_rng(30)
    q, k, v = (rng.normal(size=(B, T, H, D)).astype(np.float32) for _ in range(3))
    mask = masks.causal_mask(T)
    out, w = attention.dot_product_attention(q, k, v, mask, return_weights=True)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                o1, p1 = attention.attend_one_query(q[b, t, h], k[b, :, h], v[b, :, h], np.asarray(mask)[t])
                np.testing.assert_allclose(np.asarray(o1), np.asarray(out)[b, t, h], rtol=RTOL, atol=ATOL)
                np.testing.assert_allclose(np.asarray(p1), np.asarray(w)[b, h, t], rtol=RTOL, atol=ATOL)
                assert np.all(np.asarray(p1)[t + 1 :] == 0)  # future keys get exactly zero
    np.testing.assert_allclose(np.asarray(out), np_attention(q, k, v, mask), rtol=RTOL, atol=ATOL)


def test_score_bias_is_added_before_the_softmax():
    rng = np.random.default_rng(31)
    q, k, v = (rng.normal(size=(B, T, H, D)).astype(np.float32) for _ in range(3))
    bias = rng.normal(size=(H, T, T)).astype(np.float32)
    got = attention.dot_product_attention(q, k, v, masks.causal_mask(T), bias=bias)
    # reference: fold the bias into the scores by hand
    s = np.einsum("bthd,bshd->bhts", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(D) + bias
    s = np.where(np.asarray(masks.causal_mask(T)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bhts,bshd->bthd", w, v.astype(np.float64))
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL, atol=ATOL)
