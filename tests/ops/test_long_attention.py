"""Tests for lab.ops.long_attention: blocked (online softmax, custom VJP), banded (sliding-window) and fused
(jax.nn.dot_product_attention) attention against the oracle `jax.nn.dot_product_attention` given an
explicit mask built from positions (never its `is_causal`, which aligns top-left), and against a NumPy
float64 reference where the oracle has no equivalent (sink renumbering, ALiBi; every fused case).

Tolerances: rtol = atol = 1e-5 in float32, as the issue sets and as tests/ops/test_attention.py argues
(O(1) inputs, head size 8, at most 45 keys: float32 roundoff differences are ~1e-7; a leaked or dropped
key, a wrong head group or a wrong rescaling changes outputs at the 1e-2..1 level). Gradients: the same
tolerance against autodiff of the naive computation. Masks and "window >= T is full causal" are exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.ops import long_attention as la
from lab.ops import masks
from lab.ops.positional import alibi_slopes, apply_rope

RTOL = ATOL = 1e-5
B, T, D = 2, 45, 8  # T = 45: not a multiple of the blocks used (8, 16)


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def qkv(h=4, kv=4, t=T, seed=0):
    r = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
    return f(B, t, h, D), f(B, t, kv, D), f(B, t, kv, D)


def oracle(q, k, v, mask_BTS):
    """jax.nn.dot_product_attention with an explicit (B, T, S) mask; rows with no visible key are set
    to 0 (the module's documented value; the oracle's own value there is not specified)."""
    m = mask_BTS[:, None]
    out = jax.nn.dot_product_attention(q, k, v, mask=m)
    return jnp.where(mask_BTS.any(-1)[:, :, None, None], out, 0.0)


def mask_for(window=None, sinks=0, valid=None, t=T):
    m = la.visible(jnp.arange(t), jnp.arange(t), window=window, sinks=sinks)[None]
    m = jnp.broadcast_to(m, (B, t, t))
    return m if valid is None else m & valid[:, None, :]


PADDED = np.ones((B, T), bool)
PADDED[1, -7:] = False  # example 1: its last 7 positions are padding keys
CASES = {
    "causal": dict(),
    "window": dict(window=10),
    "window+sinks": dict(window=10, sinks=3),
    "padding": dict(valid=PADDED),
    "window+padding": dict(window=10, valid=PADDED),
}


@pytest.mark.parametrize(
    "case,heads",
    [
        ("causal", (4, 4)),
        ("causal", (4, 2)),
        ("window", (4, 2)),
        ("window+sinks", (4, 2)),
        ("padding", (4, 1)),
        ("window+padding", (4, 4)),
    ],
    ids=lambda x: x if isinstance(x, str) else {4: "MHA", 2: "GQA", 1: "MQA"}[x[1]],
)
def test_blocked_and_banded_equal_the_oracle(case, heads):
    kw = CASES[case]
    q, k, v = qkv(*heads)
    valid = None if "valid" not in kw else jnp.asarray(kw["valid"])
    want = oracle(q, k, v, mask_for(kw.get("window"), kw.get("sinks", 0), valid))
    common = dict(window=kw.get("window"), sinks=kw.get("sinks", 0), kv_valid_BS=valid)
    got = la.blocked_attention(q, k, v, block=8, **common)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(la.reference_attention(q, k, v, **common), want, rtol=RTOL, atol=ATOL)
    if kw.get("window"):
        got = la.banded_attention(
            q, k, v, kw["window"], sinks=kw.get("sinks", 0), kv_valid_BT=valid, block=16
        )
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_blocked_decoding_queries_take_their_mask_from_positions():
    """Three queries at positions 42..44 over 45 keys (the cache layout): the oracle's is_causal would
    align them with keys 0..2; the positions give the right rows."""
    q, k, v = qkv()
    qp = jnp.arange(T - 3, T)
    want = oracle(q[:, -3:], k, v, mask_for()[:, -3:])
    got = la.blocked_attention(q[:, -3:], k, v, q_pos=qp, block=16)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    wrong = jax.nn.dot_product_attention(q[:, -3:], k, v, is_causal=True)
    assert np.abs(np.asarray(wrong - want)).max() > 1e-2  # the trap the issue names is real


def test_window_at_least_t_is_full_causal_exactly():
    for w in (T, T + 10):
        assert np.array_equal(masks.sliding_window_mask(T, w), masks.causal_mask(T))
        assert np.array_equal(la.visible(jnp.arange(T), jnp.arange(T), window=w), masks.causal_mask(T))
    q, k, v = qkv()
    full = la.reference_attention(q, k, v)
    assert np.array_equal(la.reference_attention(q, k, v, window=T), full)
    blocked = la.blocked_attention(q, k, v, block=16)
    for w in (T, T + 10):  # the same blocks and the same visible keys: the same arithmetic, bit for bit
        assert np.array_equal(la.blocked_attention(q, k, v, window=w, block=16), blocked)
    # banded sums each query's keys in slabs of its own, not in reference's order: equal within rounding
    np.testing.assert_allclose(la.banded_attention(q, k, v, T + 3, block=16), full, rtol=RTOL, atol=ATOL)
    # more sinks than positions (a short prompt under a model with sinks): every key is in the window
    for f in (la.banded_attention, la.blocked_attention, la.reference_attention):
        got = f(q[:, :3], k[:, :3], v[:, :3], window=8, sinks=4)
        np.testing.assert_allclose(
            got, la.reference_attention(q[:, :3], k[:, :3], v[:, :3]), rtol=RTOL, atol=ATOL
        )


def test_sliding_window_mask_counts():
    m = np.asarray(masks.sliding_window_mask(12, 4, sinks=2))
    assert m.sum(1).tolist() == [1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6]  # window 4, then + the 2 sinks
    assert not m[9, 2:6].any() and m[9, :2].all() and m[9, 6:10].all() and not m[9, 10:].any()


def grad(fn):
    """The gradients (q, k, v) of sum(fn(q, k, v) * w) for a fixed random w, compiled (run eagerly, every op
    would compile on its own)."""
    w = jnp.asarray(np.random.default_rng(5).normal(size=(B, T, 4, D)), jnp.float32)
    return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), (0, 1, 2)))


@pytest.mark.parametrize("case", ["causal", "window+sinks", "window+padding", "window+alibi"])
def test_gradients_equal_the_naive_ones(case):
    kw = CASES[case.replace("+alibi", "")]
    q, k, v = qkv(4, 2)
    valid = None if "valid" not in kw else jnp.asarray(kw["valid"])
    common = dict(window=kw.get("window"), sinks=kw.get("sinks", 0), kv_valid_BS=valid)
    if case.endswith("alibi"):  # the bias recomputed in the backward pass (no sinks: none to renumber)
        common["slopes_H"] = alibi_slopes(4)
    want = grad(lambda q, k, v: la.reference_attention(q, k, v, **common))(q, k, v)
    got = grad(lambda q, k, v: la.blocked_attention(q, k, v, block=8, **common))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    if kw.get("window"):
        band = lambda q, k, v: la.banded_attention(
            q, k, v, kw["window"], sinks=kw.get("sinks", 0), kv_valid_BT=valid, slopes_H=common.get("slopes_H"),
            block=16,
        )  # fmt: skip
        for a, b in zip(grad(band)(q, k, v), want):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_a_row_with_no_visible_key_is_zero_with_zero_gradient_not_nan():
    q, k, v = qkv()
    valid = jnp.ones((B, T), bool).at[1, :6].set(False)  # example 1: queries 0..5 see no key
    for fn in (
        lambda q: la.blocked_attention(q, k, v, kv_valid_BS=valid, block=8),
        lambda q: la.reference_attention(q, k, v, kv_valid_BS=valid),
        lambda q: la.banded_attention(q, k, v, 10, kv_valid_BT=valid, block=16),
    ):
        out = jax.jit(fn)(q)
        g = jax.jit(jax.grad(lambda q, fn=fn: jnp.sum(fn(q) ** 2)))(q)
        assert np.isfinite(np.asarray(out)).all() and np.isfinite(np.asarray(g)).all()
        assert np.array_equal(out[1, :6], np.zeros_like(out[1, :6]))
        assert np.array_equal(g[1, :6], np.zeros_like(g[1, :6]))
        assert np.abs(np.asarray(out[0, :6])).max() > 0  # the same queries with visible keys are not 0


def np_sinks_reference(q, k, v, window, sinks, q_sinks=None, slopes=None):
    """Float64 causal window+sinks attention with StreamingLLM's renumbering: against a sink key outside
    the window, the query is q_sinks and stands at min(t, sinks + window - 1) for ALiBi's distance."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    qs = q if q_sinks is None else np.asarray(q_sinks, np.float64)
    t, h = q.shape[1], q.shape[2]
    k, v = np.repeat(k, h // k.shape[2], 2), np.repeat(v, h // v.shape[2], 2)
    out = np.zeros_like(q)
    for i in range(t):
        for j_h in range(h):
            ks = [j for j in range(i + 1) if i - j < window or j < sinks]
            sink = [j < sinks and i - j >= window for j in ks]
            qi = [qs[:, i, j_h] if s else q[:, i, j_h] for s in sink]
            sc = np.stack([np.sum(qq * k[:, j, j_h], -1) for qq, j in zip(qi, ks)], -1) / np.sqrt(q.shape[-1])
            if slopes is not None:
                dist = [(min(i, sinks + window - 1) if s else i) - j for s, j in zip(sink, ks)]
                sc = sc - float(slopes[j_h]) * np.asarray(dist, np.float64)[None]
            p = np.exp(sc - sc.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, i, j_h] = np.einsum("bs,bsd->bd", p, v[:, ks, j_h])
    return out


def test_sink_renumbering_matches_the_float64_reference():
    """RoPE: queries against sink keys rotated at min(t, sinks + window - 1); ALiBi: that distance. The
    banded, naive and reference computations agree, and renumbering changes the result (it is not a no-op)."""
    t, window, sinks = 30, 6, 2
    q, k, v = qkv(4, 2, t=t, seed=3)
    renum = la.renumbered_sink_positions(jnp.arange(t), window, sinks)
    q_sinks = apply_rope(q, 10000.0, renum - jnp.arange(t))
    q, k = apply_rope(q, 10000.0), apply_rope(k, 10000.0)
    slopes = alibi_slopes(4)
    want = np_sinks_reference(q, k, v, window, sinks, q_sinks, slopes)
    kw = dict(sinks=sinks, q_sinks_BTHD=q_sinks, slopes_H=slopes)
    np.testing.assert_allclose(
        la.reference_attention(q, k, v, window=window, **kw), want, rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        la.banded_attention(q, k, v, window, block=8, **kw), want, rtol=RTOL, atol=ATOL
    )
    plain = np_sinks_reference(q, k, v, window, sinks)
    assert np.abs(want[:, sinks + window :] - plain[:, sinks + window :]).max() > 1e-3


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(window=0), "window must be >= 1"),
        (dict(window=4, sinks=5), "sinks must be in 0..window"),
        (dict(sinks=2), "need a window"),
        (dict(block=0), "block must be >= 1"),
    ],
)
def test_bad_sizes_are_refused(kw, needle):
    q, k, v = qkv(t=8)
    with pytest.raises(ValueError, match=needle):
        la.blocked_attention(q, k, v, **kw)


def test_memory_is_linear_for_blocked_and_banded_and_quadratic_for_naive():
    """XLA's own count of temporary bytes (compiled, never run) when T doubles from 512 to 1024: the naive
    forward+backward grows ~4x (the (H, T, T) scores), blocked and banded ~2x."""

    def temp(fn, t):
        x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)
        g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2)))
        return g.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    fns = {
        "naive": lambda q, k, v: la.reference_attention(q, k, v),
        "blocked": lambda q, k, v: la.blocked_attention(q, k, v, block=64),
        "banded": lambda q, k, v: la.banded_attention(q, k, v, 64, block=64),
    }
    ratio = {n: temp(f, 1024) / temp(f, 512) for n, f in fns.items()}
    assert ratio["naive"] > 3.5, ratio
    assert ratio["blocked"] < 2.3 and ratio["banded"] < 2.3, ratio


# --- fused: jax.nn.dot_product_attention (causal self-attention, window, GQA, ALiBi; no sinks, no padding) ---
FUSED_CASES = {  # name: (heads, window, alibi)
    "causal-MHA": ((4, 4), None, False),
    "causal-GQA": ((4, 2), None, False),
    "causal-MQA": ((4, 1), None, False),
    "window-GQA": ((4, 2), 10, False),
    "alibi-GQA": ((4, 2), None, True),
    "window+alibi-MHA": ((4, 4), 10, True),
}


@pytest.mark.parametrize("case", list(FUSED_CASES))
def test_fused_equals_the_float64_reference_and_naive(case):
    """T = 45 (not a power of two); the float64 reference with window T and no sinks is plain causal."""
    heads, window, alibi = FUSED_CASES[case]
    q, k, v = qkv(*heads)
    slopes = alibi_slopes(4) if alibi else None
    got = jax.jit(lambda q, k, v: la.fused_attention(q, k, v, window=window, slopes_H=slopes))(q, k, v)
    want = np_sinks_reference(q, k, v, window or T, 0, slopes=slopes)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    naive = la.reference_attention(q, k, v, window=window, slopes_H=slopes)
    np.testing.assert_allclose(got, naive, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["causal-GQA", "window-GQA", "window+alibi-MHA"])
def test_fused_gradients_equal_the_naive_ones(case):
    heads, window, alibi = FUSED_CASES[case]
    q, k, v = qkv(*heads)
    kw = dict(window=window, slopes_H=alibi_slopes(4) if alibi else None)
    want = grad(lambda q, k, v: la.reference_attention(q, k, v, **kw))(q, k, v)
    got = grad(lambda q, k, v: la.fused_attention(q, k, v, **kw))(q, k, v)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_fused_bfloat16_is_finite_and_close_to_float32():
    """bfloat16 q, k, v (what a bfloat16 model passes): the fused kernel multiplies bfloat16 operands with
    float32 scores and softmax, then rounds the probabilities and the output to bfloat16 (8 significant bits:
    relative 2^-9 each). Against float32 attention of the same bfloat16-rounded inputs, outputs (|o| < 2.2
    here, so rounding the output alone costs up to 2^-8) agree within atol 2^-6 (measured: fused 6.3e-3, naive
    attention in bfloat16, whose only rounding is the output's, 5.8e-3); gradients are finite."""
    q, k, v = (x.astype(jnp.bfloat16) for x in qkv(4, 2))
    want = la.reference_attention(*(x.astype(jnp.float32) for x in (q, k, v)), window=10)
    got = jax.jit(lambda q, k, v: la.fused_attention(q, k, v, window=10))(q, k, v)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=0, atol=2**-6)
    g = jax.jit(jax.grad(lambda q: jnp.sum(la.fused_attention(q, k, v).astype(jnp.float32) ** 2)))(q)
    assert np.isfinite(np.asarray(g, np.float32)).all() and np.abs(np.asarray(g, np.float32)).max() > 0


def test_fused_implementation_choice(monkeypatch):
    monkeypatch.delenv("LAB_FUSED_ATTENTION", raising=False)
    choose = la.fused_implementation
    assert choose(jnp.bfloat16, 64, False, "gpu") == "cudnn"  # GPT-2 small in bfloat16 on a GPU
    assert choose(jnp.float16, 128, False, "gpu") == "cudnn"
    assert choose(jnp.float32, 64, False, "gpu") == "xla"  # cuDNN's flash attention takes 16-bit inputs
    assert choose(jnp.bfloat16, 12, False, "gpu") == "xla"  # head size not a multiple of 8
    assert choose(jnp.bfloat16, 64, True, "gpu") == "xla"  # ALiBi stays a float32 bias
    assert choose(jnp.bfloat16, 64, False, "cpu") == "xla"
    monkeypatch.setenv("LAB_FUSED_ATTENTION", "xla")
    assert choose(jnp.bfloat16, 64, False, "gpu") == "xla"
    monkeypatch.setenv("LAB_FUSED_ATTENTION", "flash")
    with pytest.raises(ValueError, match="allowed: auto, xla, cudnn"):
        choose(jnp.bfloat16, 64, False, "gpu")


def test_fused_refuses_keys_that_are_not_the_queries_positions():
    q, k, v = qkv(t=8)
    with pytest.raises(ValueError, match="self-attention"):
        la.fused_attention(q[:, -3:], k, v)  # is_causal would align these 3 queries with keys 0..2
