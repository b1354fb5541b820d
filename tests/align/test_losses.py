"""lab.align.losses against values worked out by hand, NumPy float64 references and, for GAE and PPO's
clipped policy loss, DeepMind's rlax as an outside oracle (the `test` extra installs it; without it those two
tests skip, saying so). Tolerance 1e-6. rlax has no PPO value-clipping loss, so the value loss is checked by
hand and against float64 only."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.align import losses

TOL = 1e-6


def gae_reference(rewards, values, mask, gamma, lam):
    """GAE by the textbook backward loop, in float64, over each row's masked span."""
    rewards, values, mask = (np.asarray(a, np.float64) for a in (rewards, values, mask))
    adv = np.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        nxt_a, nxt_v = 0.0, 0.0
        for t in reversed(range(rewards.shape[1])):
            if not mask[b, t]:
                nxt_a, nxt_v = 0.0, 0.0
                continue
            delta = rewards[b, t] + gamma * nxt_v - values[b, t]
            adv[b, t] = delta + gamma * lam * nxt_a
            nxt_a, nxt_v = adv[b, t], values[b, t]
    return adv, (adv + values) * mask


def test_gae_equals_a_hand_computed_episode():
    # delta = (1 + .9*1 - .5, 0 + .9*(-.5) - 1, 2 - (-.5)) = (1.4, -1.45, 2.5); A_t = delta_t + .72 A_{t+1}
    adv, ret = losses.gae(
        jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[0.5, 1.0, -0.5]]), jnp.ones((1, 3), bool), 0.9, 0.8
    )
    np.testing.assert_allclose(adv, [[1.652, 0.35, 2.5]], atol=TOL, rtol=0)
    np.testing.assert_allclose(ret, [[2.152, 1.35, 2.0]], atol=TOL, rtol=0)


def test_gae_matches_the_float64_loop_on_masked_responses():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(5, 9)), rng.normal(size=(5, 9))
    mask = np.arange(9)[None, :] >= np.array([[0], [2], [4], [6], [8]])  # prompts of different lengths
    for gamma, lam in ((1.0, 0.95), (0.99, 1.0), (0.9, 0.0)):
        want_a, want_r = gae_reference(r, v, mask, gamma, lam)
        adv, ret = losses.gae(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32), mask, gamma, lam)
        np.testing.assert_allclose(adv, want_a, atol=TOL, rtol=0)
        np.testing.assert_allclose(ret, want_r, atol=TOL, rtol=0)
        assert np.all(np.asarray(adv)[~mask] == 0)


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    r, v = jnp.array([[0.3, -0.2, 1.0]]), jnp.array([[0.1, 0.4, 0.2]])
    adv, _ = losses.gae(r, v, jnp.ones((1, 3), bool), 0.5, 0.0)
    np.testing.assert_allclose(adv, [[0.3 + 0.2 - 0.1, -0.2 + 0.1 - 0.4, 1.0 - 0.2]], atol=TOL, rtol=0)


def test_clipped_policy_loss_equals_the_hand_computed_value():
    # ratios (1, 1.5, 0.5), advantages (1, 1, -1), clip 0.2: min terms (1, 1.2, -0.8) -> loss -1.4/3;
    # the clipped term is the smaller at positions 1 and 2 -> clip fraction 2/3
    logp = jnp.log(jnp.array([[1.0, 1.5, 0.5]]))
    loss, frac = losses.ppo_policy_loss(
        logp, jnp.zeros((1, 3)), jnp.array([[1.0, 1.0, -1.0]]), jnp.ones((1, 3), bool), 0.2
    )
    assert abs(float(loss) - (-1.4 / 3)) < TOL
    assert abs(float(frac) - 2 / 3) < TOL


def test_clipped_policy_loss_counts_only_masked_tokens_and_matches_float64():
    rng = np.random.default_rng(1)
    lp, old, adv = rng.normal(0, 0.3, (4, 7)), rng.normal(0, 0.3, (4, 7)), rng.normal(size=(4, 7))
    mask = rng.random((4, 7)) < 0.6
    ratio = np.exp(lp - old)
    want = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)[mask].mean()
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    got, _ = losses.ppo_policy_loss(f32(lp), f32(old), f32(adv), mask, 0.2)
    assert abs(float(got) - want) < TOL


def _rlax():
    return pytest.importorskip(
        "rlax", reason="rlax is not installed (it comes with the test extra: pip install -e .[test])"
    )


def test_gae_equals_rlax_on_each_rows_response_span():
    # rlax computes one episode from values at times [0, k] (the last one bootstraps); ours ends each row's
    # masked span with a value of 0 after it, so rlax gets the span's values with a 0 appended.
    rlax = _rlax()
    rng = np.random.default_rng(3)
    r, v = rng.normal(size=(4, 10)).astype(np.float32), rng.normal(size=(4, 10)).astype(np.float32)
    starts = [0, 3, 5, 9]  # prompts of different lengths; the response runs to the end of the row
    mask = np.arange(10)[None, :] >= np.array(starts)[:, None]
    for gamma, lam in ((1.0, 0.95), (0.99, 1.0), (0.9, 0.0), (0.5, 0.5)):
        adv, ret = losses.gae(jnp.asarray(r), jnp.asarray(v), mask, gamma, lam)
        for b, s in enumerate(starts):
            want = rlax.truncated_generalized_advantage_estimation(
                jnp.asarray(r[b, s:]),
                jnp.full(10 - s, gamma, jnp.float32),
                lam,
                jnp.asarray(np.append(v[b, s:], np.float32(0))),
            )
            np.testing.assert_allclose(np.asarray(adv)[b, s:], want, atol=TOL, rtol=0)
            np.testing.assert_allclose(np.asarray(ret)[b, s:], np.asarray(want) + v[b, s:], atol=TOL, rtol=0)


def test_clipped_policy_loss_equals_rlax_on_the_masked_tokens():
    rlax = _rlax()
    rng = np.random.default_rng(4)
    lp, old = rng.normal(0, 0.3, (4, 7)).astype(np.float32), rng.normal(0, 0.3, (4, 7)).astype(np.float32)
    adv, mask = rng.normal(size=(4, 7)).astype(np.float32), rng.random((4, 7)) < 0.6
    for clip in (0.1, 0.2, 0.3):
        got, _ = losses.ppo_policy_loss(jnp.asarray(lp), jnp.asarray(old), jnp.asarray(adv), mask, clip)
        ratio = jnp.exp(jnp.asarray(lp) - jnp.asarray(old))[mask]
        want = rlax.clipped_surrogate_pg_loss(ratio, jnp.asarray(adv[mask]), clip)
        assert abs(float(got) - float(want)) < TOL, (clip, float(got), float(want))


def test_clipped_value_loss_equals_the_hand_computed_value():
    # V (1, 2), old (.5, .5), returns (1.5, 0), clip .2: V_clipped (.7, .7);
    # max((1-1.5)^2, (.7-1.5)^2) = .64, max((2-0)^2, (.7-0)^2) = 4 -> 0.5 * mean = 1.16
    got = losses.ppo_value_loss(
        jnp.array([[1.0, 2.0]]), jnp.array([[0.5, 0.5]]), jnp.array([[1.5, 0.0]]), jnp.ones((1, 2), bool), 0.2
    )
    assert abs(float(got) - 1.16) < TOL


def test_clipped_value_loss_matches_float64():
    rng = np.random.default_rng(2)
    v, old, ret = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    mask = rng.random((3, 6)) < 0.7
    vc = old + np.clip(v - old, -0.3, 0.3)
    want = 0.5 * np.maximum((v - ret) ** 2, (vc - ret) ** 2)[mask].mean()
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    assert abs(float(losses.ppo_value_loss(f32(v), f32(old), f32(ret), mask, 0.3)) - want) < TOL


def test_kl_estimators_by_hand_and_in_expectation():
    # pi = .5, ref = .25: k1 = ln 2; k3 = (r - 1) - ln r with r = .5 -> -.5 + ln 2
    k1 = losses.kl_k1(jnp.log(0.5), jnp.log(0.25))
    k3 = losses.kl_k3(jnp.log(0.5), jnp.log(0.25))
    assert abs(float(k1) - math.log(2)) < TOL and abs(float(k3) - (math.log(2) - 0.5)) < TOL
    # over a whole distribution both estimators' expectations under pi are KL(pi || ref) exactly
    rng = np.random.default_rng(3)
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    kl = np.sum(p * np.log(p / q))
    lp, lq = jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(q, jnp.float32))
    assert abs(float(jnp.sum(jnp.asarray(p) * losses.kl_k1(lp, lq))) - kl) < TOL
    assert abs(float(jnp.sum(jnp.asarray(p) * losses.kl_k3(lp, lq))) - kl) < TOL
    assert np.all(np.asarray(losses.kl_k3(lp, lq)) >= 0)
    assert float(losses.kl_k1(lp, lp).sum()) == 0.0 and float(losses.kl_k3(lp, lp).sum()) == 0.0


def test_pairwise_reward_model_loss_by_hand():
    got = losses.pairwise_loss(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]))
    want = (math.log1p(math.exp(-1.0)) + math.log(2)) / 2
    assert abs(float(got) - want) < TOL


def test_dpo_loss_is_ln2_when_the_policy_is_the_reference_and_by_hand_otherwise():
    rng = np.random.default_rng(4)
    c, r = jnp.asarray(rng.normal(-20, 3, 8), jnp.float32), jnp.asarray(rng.normal(-20, 3, 8), jnp.float32)
    loss, rc, rr = losses.dpo_loss(c, r, c, r, 0.1)
    assert abs(float(loss) - math.log(2)) < TOL and float(jnp.abs(rc).max()) == 0.0
    # beta .1, chosen +2 nats over the reference, rejected -1: -log sigmoid(.3)
    loss, rc, rr = losses.dpo_loss(jnp.array([2.0]), jnp.array([-1.0]), jnp.zeros(1), jnp.zeros(1), 0.1)
    assert abs(float(loss) - math.log1p(math.exp(-0.3))) < TOL
    assert abs(float(rc[0]) - 0.2) < TOL and abs(float(rr[0]) + 0.1) < TOL


def test_sequence_logp_at_a_temperature_with_banned_tokens_matches_float64():
    rng = np.random.default_rng(5)
    logits, tokens = rng.normal(size=(2, 4, 6)), rng.integers(2, 6, size=(2, 4))
    mask = np.array([[0, 1, 1, 1], [0, 0, 1, 1]], bool)
    z = logits / 0.7
    z[..., :2] = -np.inf
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    want = np.where(mask, np.take_along_axis(lp, tokens[..., None], -1)[..., 0], 0.0)
    got = losses.sequence_logp(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens), mask, 0.7, (0, 1))
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    grads = jax.grad(lambda x: losses.sequence_logp(x, jnp.asarray(tokens), mask, 0.7, (0, 1)).sum())(
        jnp.asarray(logits, jnp.float32)
    )
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[..., :2] == 0)
