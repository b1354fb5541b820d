"""Samplers on hand-made logits, each against a plain NumPy reference of its documented rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lab.ops import sampling as S

LOGITS = np.log(np.array([[0.5, 0.2, 0.2, 0.1], [0.05, 0.05, 0.6, 0.3]]))


def kept(filtered):
    return np.isfinite(np.asarray(filtered))


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_top_k_keeps_the_k_largest_and_ties():
    np.testing.assert_array_equal(kept(S.top_k_filter(jnp.asarray(LOGITS), 1)), [[1, 0, 0, 0], [0, 0, 1, 0]])
    # k = 2 in row 0: the 2nd largest (0.2) is tied with the 3rd, so both are kept (3 tokens)
    np.testing.assert_array_equal(kept(S.top_k_filter(jnp.asarray(LOGITS), 2)), [[1, 1, 1, 0], [0, 0, 1, 1]])
    assert (
        kept(S.top_k_filter(jnp.asarray(LOGITS), 0)).all()
        and kept(S.top_k_filter(jnp.asarray(LOGITS), 9)).all()
    )
    # per-row k
    np.testing.assert_array_equal(
        kept(S.top_k_filter(jnp.asarray(LOGITS), jnp.array([1, 0]))), [[1, 0, 0, 0], [1, 1, 1, 1]]
    )


def test_top_p_keeps_the_smallest_set_reaching_p_with_ties():
    f = lambda p: kept(S.top_p_filter(jnp.asarray(LOGITS), p))  # noqa: E731
    np.testing.assert_array_equal(f(0.5), [[1, 0, 0, 0], [0, 0, 1, 0]])  # 0.5 reaches 0.5; 0.6 reaches 0.5
    # row 0, p = 0.6: {0.5, 0.2} reaches it; the other 0.2 is tied with the last member and is kept too
    np.testing.assert_array_equal(f(0.6), [[1, 1, 1, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(f(0.95), [[1, 1, 1, 1], [1, 1, 1, 1]])  # row 1: 0.6+0.3 < 0.95 -> ties 0.05
    np.testing.assert_array_equal(f(1e-9), [[1, 0, 0, 0], [0, 0, 1, 0]])  # the top token always survives
    np.testing.assert_array_equal(f(0.0), [[1, 0, 0, 0], [0, 0, 1, 0]])  # even at p = 0 (greedy, not NaN)
    assert f(1.0).all()
    # p = 1 keeps even tokens whose probability is lost in float32's cumulative sum (it rounds to 1 first)
    tail = jnp.array([[30.0, 0.0, -1.0, 5.0]])
    assert kept(S.top_p_filter(tail, 1.0)).all() and not kept(S.top_p_filter(tail, 0.999999)).all()


def test_min_p_is_relative_to_the_top_probability():
    f = lambda m: kept(S.min_p_filter(jnp.asarray(LOGITS), m))  # noqa: E731
    np.testing.assert_array_equal(f(0.39), [[1, 1, 1, 0], [0, 0, 1, 1]])  # >= 0.195 and >= 0.234
    np.testing.assert_array_equal(f(0.45), [[1, 0, 0, 0], [0, 0, 1, 1]])  # >= 0.225 and >= 0.27
    assert f(0.0).all()


def test_repetition_penalty_matches_ctrl_rule():
    logits = jnp.array([[2.0, -1.0, 0.5, 3.0]])
    ctx = jnp.array([[0, 1, 3]])
    out = np.asarray(S.repetition_penalty(logits, ctx, jnp.array([[True, True, False]]), 2.0))
    np.testing.assert_allclose(out, [[1.0, -2.0, 0.5, 3.0]])  # token 3 masked out of the context
    assert np.array_equal(np.asarray(S.repetition_penalty(logits, ctx, jnp.ones((1, 3), bool), 1.0)), logits)


@settings(max_examples=40, deadline=None)
@example(seed=0, k=0, p=1.0, m=0.0, t=0.125)  # p = 1 at a low temperature: the tail underflows to 0
@example(seed=0, k=0, p=0.9999999999999999, m=0.0, t=0.125)  # 1.0 in float32: top-p is off
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(0, 12),
    p=st.floats(0.05, 1.0),
    m=st.floats(0.0, 0.9),
    t=st.floats(0.1, 3.0),
)
def test_composed_filters_equal_numpy_reference(seed, k, p, m, t):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 10)) * 2
    logits[0, 3] = logits[0, 5]  # a tie
    _, got = S.process_logits(jnp.asarray(logits), S.knobs(temperature=t, top_k=k, top_p=p, min_p=m))
    p = float(np.float32(p))  # the knob as lab holds it (float32): a p within 2^-25 of 1 is 1, i.e. off
    x = logits / t
    if 0 < k < 10:
        kth = np.sort(x, axis=-1)[:, ::-1][:, k - 1 : k]
        x = np.where(x >= kth, x, -np.inf)
    probs = np_softmax(x)
    order = np.sort(probs, axis=-1)[:, ::-1]
    before = np.cumsum(order, axis=-1) - order
    thr = np.array([row[b < p].min() for row, b in zip(order, before)])[:, None]
    x = np.where((probs >= thr) | (p >= 1), x, -np.inf)  # top_p = 1 is off (the Knob default), as in lab
    probs = np_softmax(x)
    x = np.where(probs >= m * probs.max(axis=-1, keepdims=True), x, -np.inf)
    np.testing.assert_array_equal(np.isfinite(np.asarray(got)), np.isfinite(x))
    np.testing.assert_allclose(np.asarray(got)[np.isfinite(x)], x[np.isfinite(x)], rtol=1e-5, atol=1e-5)


def test_greedy_limits():
    key = jax.random.PRNGKey(0)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(64, 50)), jnp.float32)
    greedy = np.asarray(jnp.argmax(logits, -1))
    assert np.array_equal(S.sample(key, logits, S.knobs(temperature=0.0)), greedy)
    assert np.array_equal(S.sample(key, logits, S.knobs(temperature=1e-4)), greedy)  # T -> 0
    assert np.array_equal(S.sample(key, logits, S.knobs(temperature=1.5, top_k=1)), greedy)
    assert np.array_equal(S.sample(key, logits, S.knobs(temperature=1.5, top_p=1e-6)), greedy)
    mixed = S.sample(key, logits, S.knobs(temperature=jnp.array([0.0, 1.0] * 32)))
    assert np.array_equal(np.asarray(mixed)[::2], greedy[::2])


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = jnp.tile(jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]])), (20000, 1))
    toks = np.asarray(S.sample(jax.random.PRNGKey(3), logits, S.knobs(temperature=1.0, top_p=0.7)))
    freq = np.bincount(toks, minlength=4) / len(toks)
    np.testing.assert_allclose(freq, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=0.015)  # 4 sd of a binomial
    toks = np.asarray(S.sample(jax.random.PRNGKey(4), logits, S.knobs(temperature=2.0)))
    want = np_softmax(np.log([0.5, 0.3, 0.15, 0.05]) / 2.0)
    np.testing.assert_allclose(np.bincount(toks, minlength=4) / len(toks), want, atol=0.015)


def test_entropy_in_nats():
    assert float(S.entropy(jnp.zeros((1, 8)))[0]) == pytest.approx(np.log(8), rel=1e-6)
    assert float(S.entropy(jnp.array([[0.0, -jnp.inf, -jnp.inf]]))[0]) == pytest.approx(0.0, abs=1e-7)


def test_knobs_do_not_recompile():
    f = jax.jit(S.sample)
    logits = jnp.zeros((2, 5))
    f(
        jax.random.PRNGKey(0),
        logits,
        S.knobs(temperature=0.7, top_k=3, top_p=0.9, min_p=0.05, repetition_penalty=1.2),
    )
    n = f._cache_size()
    f(
        jax.random.PRNGKey(0),
        logits,
        S.knobs(temperature=1.3, top_k=1, top_p=0.5, min_p=0.0, repetition_penalty=1.0),
    )
    assert f._cache_size() == n


@pytest.mark.parametrize("knob", S.SAMPLERS, ids=lambda k: k.name)
def test_each_knob_is_a_no_op_at_its_neutral_value_and_keeps_the_top_token(knob):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 12)) * 2, jnp.float32)
    ctx = (jnp.asarray(rng.integers(0, 12, size=(4, 5))), jnp.ones((4, 5), bool)) if knob.context else ()
    col = lambda v: jnp.full((4, 1), v, jnp.int32 if knob.integer else jnp.float32)  # noqa: E731
    np.testing.assert_array_equal(knob.fn(logits, *ctx, col(knob.neutral)), logits)
    lo, hi, _ = knob.slider
    allowed_lo, allowed_hi = knob.valid
    assert (
        allowed_lo <= lo < hi and (allowed_hi is None or hi <= allowed_hi) and not (knob.lo_open and lo == 0)
    )
    if not knob.context:  # a step after the penalties may reshape or cut, never remove the most likely token
        for v in (lo, hi, knob.neutral):
            out = np.asarray(knob.fn(logits, col(v)))
            top = np.argmax(np.asarray(logits), -1)
            assert np.isfinite(out[np.arange(4), top]).all() and (np.argmax(out, -1) == top).all()


def test_knobs_fill_neutral_values_and_refuse_unknown_names():
    assert S.knobs(top_k=3) == {
        "repetition_penalty": 1.0,
        "temperature": 1.0,
        "top_k": 3,
        "top_p": 1.0,
        "min_p": 0.0,
    }
    with pytest.raises(ValueError, match="unknown sampler knob 'temp'"):
        S.knobs(temp=1.0)
    with pytest.raises(ValueError, match="do not fit the table"):
        S.process_logits(jnp.zeros((1, 3)), {"temp": 1.0})


def test_the_penalty_comes_before_temperature_and_shapes_the_greedy_choice():
    logits = jnp.array([[2.0, 1.5, 0.0]])
    ctx = jnp.array([[0]])  # token 0 was seen: 2 / 2 = 1 < 1.5
    penalized, filtered = S.process_logits(logits, S.knobs(repetition_penalty=2.0, temperature=0.5), ctx)
    np.testing.assert_allclose(np.asarray(penalized), [[1.0, 1.5, 0.0]])
    np.testing.assert_allclose(np.asarray(filtered), [[2.0, 3.0, 0.0]])
    greedy = S.sample(jax.random.PRNGKey(0), logits, S.knobs(repetition_penalty=2.0, temperature=0.0), ctx)
    assert int(greedy[0]) == 1
