"""The optimizer against a plain NumPy float64 AdamW with nanoGPT's learning-rate schedule."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.train.config import TrainConfig
from lab.train.optimizer import apply_updates, make_optimizer, unit_schedule


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
