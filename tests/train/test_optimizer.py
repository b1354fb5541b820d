"""The optimizer against a plain NumPy float64 AdamW with nanoGPT's learning-rate schedule."""

import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.errors import ConfigError
from lab.train.config import Schedule, TrainConfig
from lab.train.optimizer import SCHEDULES, apply_updates, make_optimizer, unit_schedule


def nanogpt_lr(it, lr, warmup, decay_iters, min_lr):
    # nanoGPT train.py get_lr, written out here from its description
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


@pytest.mark.parametrize("warmup", [0, 10])
def test_schedule_matches_nanogpt(warmup):
    tcfg = TrainConfig(steps=100, warmup_steps=warmup, min_lr_ratio=0.1)
    sched = jax.jit(unit_schedule(tcfg))
    for t in [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]:
        want = nanogpt_lr(t, 1.0, warmup, 100, 0.1)
        assert float(sched(t)) == pytest.approx(want, rel=1e-6, abs=1e-7), t


def schedule_reference(t, steps, warmup, kind, min_ratio, decay_fraction):
    """The multiplier of the peak learning rate at step t, in float64, written from the definitions."""
    if t < warmup:
        return (t + 1) / (warmup + 1)
    if kind == "cosine":
        return nanogpt_lr(t, 1.0, warmup, steps, min_ratio)
    start = warmup if kind == "linear" else steps * (1 - decay_fraction)
    if t <= start:
        return 1.0
    frac = min(1.0, (t - start) / (steps - start))
    return 1.0 - (1.0 - min_ratio) * frac


@pytest.mark.parametrize("kind", typing.get_args(Schedule))
@pytest.mark.parametrize("min_ratio, decay_fraction", [(0.1, 0.2), (0.0, 0.5), (0.3, 1.0)])
def test_every_schedule_matches_its_float64_definition_at_every_step(kind, min_ratio, decay_fraction):
    tcfg = TrainConfig(
        steps=200, warmup_steps=20, schedule=kind, min_lr_ratio=min_ratio, decay_fraction=decay_fraction
    )
    got = np.asarray(jax.jit(jax.vmap(unit_schedule(tcfg)))(jnp.arange(260)))
    want = np.array([schedule_reference(t, 200, 20, kind, min_ratio, decay_fraction) for t in range(260)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got[199:].min() >= min_ratio - 1e-7 and abs(got[-1] - min_ratio) < 1e-7  # ends at the floor


def test_wsd_holds_the_peak_then_decays_with_a_higher_mean_rate_than_cosine():
    tcfg = TrainConfig(steps=100, warmup_steps=10, schedule="wsd", min_lr_ratio=0.0, decay_fraction=0.2)
    s = np.asarray(jax.vmap(unit_schedule(tcfg))(jnp.arange(100)))
    assert np.all(s[10:81] == 1.0)  # stable: exactly the peak until the last 20% of steps
    assert np.all(np.diff(s[80:]) < 0)  # then strictly decreasing
    cos = np.asarray(jax.vmap(unit_schedule(tcfg.replace(schedule="cosine")))(jnp.arange(100)))
    assert s.mean() > cos.mean() + 0.3


def test_schedule_names_match_the_dispatch_dict_and_bad_ones_are_refused():
    assert set(typing.get_args(Schedule)) == set(SCHEDULES)
    with pytest.raises(ConfigError, match="train.schedule must be one of 'cosine', 'linear', 'wsd'"):
        TrainConfig(schedule="step")
    with pytest.raises(ConfigError, match=r"train.decay_fraction must be in \(0, 1\]"):
        TrainConfig(schedule="wsd", decay_fraction=0.0)


def adamw_reference(params, grads_seq, tcfg, lr):
    """float64 AdamW: clip by global norm, Adam moments with bias correction, decoupled decay on matrices."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(grads_seq):
        g = {k: np.asarray(x, np.float64) for k, x in g.items()}
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
        if tcfg.grad_clip > 0 and norm > tcfg.grad_clip:
            g = {k: x * tcfg.grad_clip / norm for k, x in g.items()}
        s = nanogpt_lr(t, 1.0, tcfg.warmup_steps, tcfg.steps, tcfg.min_lr_ratio)
        for k in p:
            m[k] = tcfg.beta1 * m[k] + (1 - tcfg.beta1) * g[k]
            v2[k] = tcfg.beta2 * v2[k] + (1 - tcfg.beta2) * g[k] ** 2
            mh = m[k] / (1 - tcfg.beta1 ** (t + 1))
            vh = v2[k] / (1 - tcfg.beta2 ** (t + 1))
            u = mh / (np.sqrt(vh) + tcfg.eps)
            if p[k].ndim >= 2:
                u = u + tcfg.weight_decay * p[k]
            p[k] = p[k] - lr * s * u
    return p


def test_adamw_matches_float64_reference():
    tcfg = TrainConfig(steps=20, warmup_steps=3, weight_decay=0.1, grad_clip=0.5, beta2=0.99)
    rng = np.random.default_rng(0)
    params = {
        "w": rng.normal(size=(4, 3)).astype(np.float32),
        "scale": rng.normal(size=(3,)).astype(np.float32),
    }
    grads_seq = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()} for _ in range(6)
    ]
    tx = make_optimizer(tcfg)
    p = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(p)
    lr = 3e-2
    for g in grads_seq:
        u, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, p)
        p = apply_updates(p, u, lr)
    want = adamw_reference(params, grads_seq, tcfg, lr)
    for k in params:
        # float32 arithmetic over 6 steps of O(1) values: 1e-5 relative is ~100 ulps of headroom
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-5, atol=1e-6)
    # and decay really is off for the vector: with zero gradients only matrices would shrink
    u, _ = tx.update(jax.tree_util.tree_map(jnp.zeros_like, p), tx.init(p), p)
    assert float(jnp.abs(u["scale"]).max()) == 0.0
    assert float(jnp.abs(u["w"]).max()) > 0.0


def test_config_rejects_bad_values():
    from lab.errors import ConfigError

    for kw in [
        dict(lr=0),
        dict(steps=0),
        dict(eval_every=15, log_every=10),
        dict(beta2=1.0),
        dict(grad_clip=-1),
    ]:
        with pytest.raises(ConfigError) as e:
            TrainConfig(**kw)
        assert "\n" not in str(e.value)
