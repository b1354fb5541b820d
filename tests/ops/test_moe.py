"""Tests for lab.ops.moe (mixture-of-experts routing, dispatch and auxiliary losses) against NumPy float64
references written from the papers' definitions, and on hand-built routings whose counts are exact.

Tolerances: the layer is two float32 matmuls of width D = 8 and F = 16 around an activation, so each output
is a sum of ~F products of float32-rounded values; rtol 1e-5 with atol 1e-6 covers that (u = 6e-8 times the
sum's terms). Counts, slots and drop fractions are exact. The losses are float32 reductions over N <= 64
values of size ~1: rtol 1e-6.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.ops import activations, moe

N, D, F = 24, 8, 16
RTOL, ATOL = 1e-5, 1e-6


# --- NumPy float64 references -----------------------------------------------------------------------------
def np_gelu(x):
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_route(x, w_r, k):
    probs = np_softmax(np.asarray(x, np.float64) @ np.asarray(w_r, np.float64))
    experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, experts, -1)
    gates = top if k == 1 else top / top.sum(-1, keepdims=True)
    return probs, experts, gates


def np_moe(x, w_r, w1, w2, k, cap, dropless=False):
    """The layer by its definition: first choices in token order, then second choices, each kept while its
    expert has a slot left; a kept choice adds gate * MLP_e(x), a dropped one nothing."""
    x64 = np.asarray(x, np.float64)
    _, experts, gates = np_route(x, w_r, k)
    e_total = w1.shape[0]
    used, y, kept = np.zeros(e_total, int), np.zeros_like(x64), np.zeros(experts.shape, bool)
    for j in range(k):
        for n in range(x.shape[0]):
            e = experts[n, j]
            if dropless or used[e] < cap:
                used[e] += 1
                kept[n, j] = True
                h = np_gelu(x64[n] @ np.asarray(w1[e], np.float64)) @ np.asarray(w2[e], np.float64)
                y[n] += gates[n, j] * h
    return y, kept


def _weights(e, seed=0, router_std=1.0):
    ks = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(ks[0], (N, D))
    w_r = router_std * jax.random.normal(ks[1], (D, e))
    w1 = jax.random.normal(ks[2], (e, D, F)) / np.sqrt(D)
    w2 = jax.random.normal(ks[3], (e, F, D)) / np.sqrt(F)
    return x, w_r, w1, w2


def _capacity_layer(x, w_r, w1, w2, k, cf):
    e = w1.shape[0]
    _, experts, gates = moe.top_k_route(moe.router_logits(x, w_r), k)
    cap = moe.capacity(x.shape[0], e, k, cf)
    slot, kept = moe.capacity_slots(experts, e, cap)
    fn = lambda x_ECD: moe.expert_mlp(x_ECD, w1, w2, activations.gelu)
    return moe.capacity_combine(x, slot, kept, gates, fn, e, cap), kept, cap


# --- the layer against the reference ------------------------------------------------------------------------
@pytest.mark.parametrize("e,k,cf", [(4, 1, 1.25), (4, 1, 0.5), (4, 2, 1.0), (8, 2, 1.5), (2, 1, 0.75)])
def test_capacity_layer_matches_the_float64_reference(e, k, cf):
    x, w_r, w1, w2 = _weights(e)
    y, kept, cap = _capacity_layer(x, w_r, w1, w2, k, cf)
    want, want_kept = np_moe(x, w_r, w1, w2, k, cap)
    np.testing.assert_array_equal(np.asarray(kept), want_kept)
    np.testing.assert_allclose(np.asarray(y), want, rtol=RTOL, atol=ATOL)
    if cf < 1:  # something was dropped, and a dropped token's output is exactly zero (it rides the residual)
        assert not want_kept.all()
        none = ~want_kept.any(-1)
        np.testing.assert_array_equal(np.asarray(y)[none], 0.0)


@pytest.mark.parametrize("e,k", [(4, 1), (4, 2), (8, 2)])
def test_dropless_matches_the_reference_and_the_capacity_path_with_room_for_all(e, k):
    x, w_r, w1, w2 = _weights(e, seed=1)
    _, experts, gates = moe.top_k_route(moe.router_logits(x, w_r), k)
    y = moe.dropless_combine(x, experts, gates, activations.gelu, e, w1, w2)
    want, _ = np_moe(x, w_r, w1, w2, k, cap=None, dropless=True)
    np.testing.assert_allclose(np.asarray(y), want, rtol=RTOL, atol=ATOL)
    roomy, kept, cap = _capacity_layer(x, w_r, w1, w2, k, cf=e / k)  # C = N: nothing can drop
    assert cap == N and bool(kept.all())
    np.testing.assert_allclose(np.asarray(roomy), np.asarray(y), rtol=RTOL, atol=ATOL)


def test_one_expert_is_the_dense_mlp():
    """E = 1: the softmax over one expert is exactly 1, and capacity 1.0 holds every token."""
    x, w_r, w1, w2 = _weights(1, seed=2)
    y, kept, _ = _capacity_layer(x, w_r, w1, w2, k=1, cf=1.0)
    dense = activations.gelu(x @ w1[0]) @ w2[0]
    assert bool(kept.all())
    np.testing.assert_allclose(np.asarray(y), np.asarray(dense), rtol=0, atol=1e-6)


# --- capacity accounting on hand-built routings --------------------------------------------------------------
@pytest.mark.parametrize("n,e,cf", [(64, 4, 1.25), (64, 4, 1.0), (64, 8, 2.0), (40, 2, 0.5), (64, 4, 0.25)])
def test_all_tokens_to_one_expert_drop_one_minus_cf_over_e(n, e, cf):
    experts = jnp.zeros((n, 1), jnp.int32)
    cap = moe.capacity(n, e, 1, cf)
    assert cap == cf * n / e  # these sizes make cf * N / E a whole number
    slot, kept = moe.capacity_slots(experts, e, cap)
    dropped = 1.0 - float(np.mean(np.asarray(kept)))
    assert dropped == pytest.approx(1.0 - cf / e, abs=1e-12)
    np.testing.assert_array_equal(
        np.asarray(kept[:, 0]), np.arange(n) < cap
    )  # the first C tokens keep theirs
    np.testing.assert_array_equal(np.asarray(slot[:cap, 0]), np.arange(cap))  # in order, expert 0's slots
    np.testing.assert_array_equal(np.asarray(slot[cap:, 0]), e * cap)  # the rest: the overflow slot


def test_balanced_routing_drops_nothing_at_capacity_one_and_slots_are_distinct():
    n, e = 32, 4
    experts = jnp.asarray(np.arange(n) % e, jnp.int32)[:, None]
    slot, kept = moe.capacity_slots(experts, e, moe.capacity(n, e, 1, 1.0))
    assert bool(kept.all()) and len(set(np.asarray(slot).ravel().tolist())) == n


def test_first_choices_have_priority_over_second_choices():
    """Top-2, capacity 2 per expert: tokens 0-2 want expert 0 first, token 3 wants expert 1 first and
    expert 0 second. Expert 0's two slots go to tokens 0 and 1 (first choices, in token order): token 2's first
    choice and token 3's second are dropped. Expert 1 serves token 3's first choice (slot 2) before token 0's
    second choice (slot 3), although token 0 comes first."""
    experts = jnp.asarray([[0, 1], [0, 2], [0, 3], [1, 0]], jnp.int32)
    slot, kept = moe.capacity_slots(experts, 4, 2)
    np.testing.assert_array_equal(np.asarray(kept), [[1, 1], [1, 1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(np.asarray(slot), [[0, 3], [1, 4], [8, 6], [2, 8]])


def test_capacity_formula():
    assert moe.capacity(64, 4, 1, 1.25) == 20
    assert moe.capacity(64, 4, 2, 1.25) == 40
    assert moe.capacity(10, 4, 1, 1.0) == 3  # ceil(2.5)
    assert moe.capacity(10, 4, 1, 0.01) == 1  # at least one slot
    assert moe.capacity(10, 2, 2, 4.0) == 10  # at most N
    assert moe.capacity(1024, 8, 1, 1.1) == 141  # ceil(140.8), no float fuzz either way
    assert moe.capacity(300, 3, 1, 1.0) == 100


# --- auxiliary losses ----------------------------------------------------------------------------------------
def test_balance_loss_is_one_at_uniform_routing_and_not_less_when_probabilities_follow_the_routing():
    e, n = 4, 64
    uniform_probs = jnp.full((n, e), 1.0 / e)
    balanced = jnp.asarray(np.arange(n) % e, jnp.int32)[:, None]
    assert float(moe.balance_loss(uniform_probs, balanced)) == pytest.approx(1.0, rel=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(5):  # P = f: E * sum f^2 >= 1 (Cauchy-Schwarz), equal only at f uniform
        counts = rng.multinomial(n, rng.dirichlet(np.ones(e)))
        experts = jnp.asarray(np.repeat(np.arange(e), counts), jnp.int32)[:, None]
        f = counts / n
        probs = jnp.asarray(np.tile(f, (n, 1)), jnp.float32)
        value = float(moe.balance_loss(probs, experts))
        assert value == pytest.approx(e * np.sum(f**2), rel=1e-6) and value >= 1.0 - 1e-6
    collapsed = jnp.zeros((n, 1), jnp.int32)  # everything to expert 0 with certainty: the maximum, E
    onehot = jax.nn.one_hot(jnp.zeros(n, jnp.int32), e)
    assert float(moe.balance_loss(onehot, collapsed)) == pytest.approx(e, rel=1e-6)


def test_balance_loss_can_dip_below_one_when_argmax_and_mean_probability_disagree():
    """Not a minimum over every routing: with the dispatch fraction f from argmax and P the mean probability,
    two near-ties to expert 0 and one certain token to expert 1 give 2 * (2/3 * 0.34 + 1/3 * 0.66) < 1.
    Uniform routing is the minimum of E * sum f_i P_i only where P follows f (the test above)."""
    probs = jnp.asarray([[0.51, 0.49], [0.51, 0.49], [0.0, 1.0]])
    experts = jnp.asarray([[0], [0], [1]], jnp.int32)
    assert float(moe.balance_loss(probs, experts)) == pytest.approx(
        2 * (2 / 3 * 0.34 + 1 / 3 * 0.66), rel=1e-6
    )


def test_balance_loss_matches_float64_on_random_routing_top2():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(N, 4)) * 2
    probs = np_softmax(logits)
    experts = np.argsort(-probs, -1, kind="stable")[:, :2]
    f = np.bincount(experts.ravel(), minlength=4) / experts.size
    want = 4 * np.sum(f * probs.mean(0))
    got = moe.balance_loss(jnp.asarray(probs, jnp.float32), jnp.asarray(experts, jnp.int32))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_z_loss_and_entropy_match_float64():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(N, 8)) * 3
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    assert float(moe.z_loss(jnp.asarray(logits, jnp.float32))) == pytest.approx(np.mean(lse**2), rel=1e-6)
    p = np_softmax(logits)
    want = np.mean(-np.sum(p * np.log(p), -1))
    assert float(moe.routing_entropy(jnp.asarray(p, jnp.float32))) == pytest.approx(want, rel=1e-6)
    assert float(moe.routing_entropy(jnp.full((3, 8), 1 / 8))) == pytest.approx(np.log(8), rel=1e-6)
    assert float(moe.routing_entropy(jax.nn.one_hot(jnp.arange(3), 8))) == 0.0


def test_expert_fractions_with_and_without_drops():
    experts = jnp.asarray([[0], [0], [0], [1]], jnp.int32)
    np.testing.assert_allclose(np.asarray(moe.expert_fractions(experts, 2)), [0.75, 0.25])
    kept = jnp.asarray([[True], [True], [False], [True]])
    np.testing.assert_allclose(np.asarray(moe.expert_fractions(experts, 2, kept)), [0.5, 0.25])


# --- gradients -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2])
def test_gradients_reach_the_router_through_the_gates_and_the_balance_loss(k):
    x, w_r, w1, w2 = _weights(4, seed=3, router_std=0.1)
    r = jax.random.normal(jax.random.key(9), (N, D))

    def task(w):
        return jnp.sum(_capacity_layer(x, w, w1, w2, k, 1.25)[0] * r)

    def balance(w):
        probs, experts, _ = moe.top_k_route(moe.router_logits(x, w), k)
        return moe.balance_loss(probs, experts) + moe.z_loss(moe.router_logits(x, w))

    for fn in (task, balance):
        g = np.asarray(jax.grad(fn)(w_r))
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4
        # a central difference along the gradient agrees with it (routing does not change for a step this small)
        h = 1e-3 * g / np.linalg.norm(g)
        slope = (float(fn(w_r + h)) - float(fn(w_r - h))) / 2e-3
        assert slope == pytest.approx(np.linalg.norm(g), rel=2e-2)
