"""Project 7's model settings (model.attention, model.window, model.sinks): every way of computing attention
(naive, blocked, banded, fused) gives the default model's logits, a window covering the sequence changes
nothing, decoding through a ring KV cache with sinks (or a fused, blocked or banded model through its cache,
which attends in key blocks for the latter two) gives the full forward's logits, positions are renumbered inside the sink cache, and bad sizes are refused at config time.

Tolerance: rtol = atol = 1e-5 on float32 logits (two blocks of O(1) activations; the computations differ only
in the order of float32 sums, ~1e-7), as in tests/ops/test_long_attention.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.errors import ConfigError
from lab.model import ModelConfig, transformer
from lab.model.transformer import init_cache

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first use,
# which costs several times one compilation of the whole program.
init, apply, apply_cached = (
    jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply, transformer.apply_cached)
)

RTOL = ATOL = 1e-5
T = 20


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def tokens(t=T, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 40, (2, t)), jnp.int32)


def model(**kw):
    base = dict(vocab_size=40, max_len=T, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, position="rope")
    return ModelConfig(**(base | kw))


@pytest.mark.parametrize("position", ["rope", "alibi", "learned"])
def test_every_attention_computes_the_default_model(position):
    cfg = model(position=position)
    p, x = init(cfg, jax.random.PRNGKey(0)), tokens()
    full = apply(cfg, p, x)
    np.testing.assert_allclose(apply(cfg.replace(attention="blocked", attn_block=8), p, x), full, RTOL, ATOL)
    assert np.array_equal(apply(cfg.replace(window=T), p, x), full)  # window >= T: exactly full causal
    win = cfg.replace(window=6, sinks=2)
    naive = apply(win, p, x)
    np.testing.assert_allclose(apply(win.replace(attention="banded", attn_block=7), p, x), naive, RTOL, ATOL)
    assert np.abs(np.asarray(naive - full)).max() > 1e-3  # the window does change what the model computes


@pytest.mark.parametrize("position", ["rope", "alibi", "learned"])
def test_fused_attention_computes_the_default_model(position):
    """model.attention="fused" (jax.nn.dot_product_attention): the naive model's logits, with full causal
    attention and with a window (no sinks), grouped-query heads (4 over 2), T = 20."""
    cfg = model(position=position)
    p, x = init(cfg, jax.random.PRNGKey(0)), tokens()
    np.testing.assert_allclose(apply(cfg.replace(attention="fused"), p, x), apply(cfg, p, x), RTOL, ATOL)
    win = cfg.replace(window=6)
    np.testing.assert_allclose(apply(win.replace(attention="fused"), p, x), apply(win, p, x), RTOL, ATOL)


def test_fused_attention_in_bfloat16_is_finite_and_close_to_float32():
    """A bfloat16 model with fused attention against the float32 model: logits within atol 2^-7 (|logit|
    < 0.8 at initialization; measured 1.8e-3, the naive bfloat16 model 2.1e-3)."""
    cfg = model(position="alibi", window=6)
    p, x = init(cfg, jax.random.PRNGKey(0)), tokens()
    got = apply(cfg.replace(attention="fused", dtype="bfloat16"), p, x)
    assert got.dtype == jnp.float32 and np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, apply(cfg, p, x), rtol=0, atol=2**-7)


@pytest.mark.parametrize(
    "attention,position,window",
    [("fused", "rope", None), ("fused", "alibi", 5), ("blocked", "rope", None), ("blocked", "alibi", None),
     ("blocked", "learned", 5), ("banded", "alibi", 5)],
)  # fmt: skip
def test_decoding_through_the_cache_equals_the_full_forward(attention, position, window):
    """The cache attends with masks from positions (the new queries are not keys 0..T-1): naively for fused
    models, in key blocks of 8 with an online softmax for blocked and banded ones (ALiBi as slopes). A
    prefill chunk, then one token at a time (a full cache, or a ring of the model's window), gives the
    model's full-forward logits and the same greedy tokens."""
    cfg = model(position=position, window=window, attention=attention, attn_block=8)
    p, x = init(cfg, jax.random.PRNGKey(1)), tokens()
    want = apply(cfg, p, x)
    cache = init_cache(cfg, 2, T)
    assert cache.ring == (window is not None)
    logits, cache = apply_cached(cfg, p, x[:, :4], cache)
    outs = [logits]
    for i in range(4, T):
        logits, cache = apply_cached(cfg, p, x[:, i : i + 1], cache)
        outs.append(logits)
    got = jnp.concatenate(outs, 1)
    np.testing.assert_allclose(got, want, RTOL, ATOL)
    assert np.array_equal(np.argmax(got, -1), np.argmax(want, -1))


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_decoding_through_a_sink_cache_equals_the_full_forward(position):
    cfg = model(position=position, window=5, sinks=2)
    p, x = init(cfg, jax.random.PRNGKey(1)), tokens()
    want = apply(cfg, p, x)
    cache = init_cache(cfg, 2, T)
    assert (cache.size, cache.sinks, cache.ring) == (7, 2, True)
    outs = []
    logits, cache = apply_cached(cfg, p, x[:, :4], cache)  # a prefill chunk, then one token at a time
    outs.append(logits)
    for i in range(4, T):
        logits, cache = apply_cached(cfg, p, x[:, i : i + 1], cache)
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), want, RTOL, ATOL)
    assert sorted(np.asarray(cache.pos).tolist()) == [0, 1, 15, 16, 17, 18, 19]  # the sinks and the last 5


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_positions_are_renumbered_inside_the_sink_cache(position):
    """One layer, window 4, 2 sinks: the last token's logits depend on what the cache holds (the 2 sinks and
    the last 4 tokens), not on how many tokens were evicted between them, because the query stands at
    sinks + window - 1 against the sinks however far the stream has gone (StreamingLLM)."""
    cfg = model(position=position, n_layers=1, window=4, sinks=2, max_len=40)
    p = init(cfg, jax.random.PRNGKey(2))
    head, tail = [3, 7], [11, 12, 13, 14]
    last = []
    for n_evicted in (3, 9):
        filler = list(np.random.default_rng(n_evicted).integers(0, 40, n_evicted))
        x = jnp.asarray([head + filler + tail], jnp.int32)
        last.append(np.asarray(apply(cfg, p, x)[0, -1]))
    np.testing.assert_allclose(last[0], last[1], RTOL, ATOL)


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(window=0), "model.window must be >= 1"),
        (dict(window=4, sinks=5), "model.sinks (5) must be <= model.window (4)"),
        (dict(sinks=2), "needs a model.window"),
        (dict(attn_block=0), "model.attn_block must be >= 1"),
        (dict(attention="banded"), "set model.window"),
        (dict(attention="blocked", window=8, sinks=2), "does not renumber sink positions"),
        (dict(window=8, mask="bidirectional"), "model.mask must be 'causal'"),
        (
            dict(attention="fused", window=8, sinks=2),
            "model.attention='fused' (jax.nn.dot_product_attention) has no",
        ),
        (dict(attention="fused", mask="prefix"), "model.mask must be 'causal'"),
    ],
)
def test_bad_long_context_settings_are_refused(kw, needle):
    with pytest.raises(ConfigError) as e:
        model(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)
