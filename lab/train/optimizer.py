"""AdamW (Loshchilov & Hutter 2019) with warmup, a decay schedule and gradient clipping, built from optax.

The optax chain produces updates for a *unit* peak learning rate; the train step multiplies them by the
member's own peak learning rate, a traced scalar in the train state. That is what lets one compiled
program train a sweep of learning rates under `jax.vmap`.

    u_t = schedule(t) * (adam(clip(g))_t + weight_decay * p_t),    p_{t+1} = p_t - lr * u_t

which is PyTorch's AdamW (decoupled decay scaled by the learning rate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lab.train.config import TrainConfig


def _progress(t, start: float, tcfg: TrainConfig):
    """How far step t lies from `start` to the last step, clipped to [0, 1]."""
    return jnp.clip((t - start) / max(float(tcfg.steps) - start, 1.0), 0.0, 1.0)


def _cosine(t, tcfg: TrainConfig):
    """Half a cosine from 1 down to min_lr_ratio over the steps after warmup (nanoGPT's `get_lr`)."""
    m = tcfg.min_lr_ratio
    return m + 0.5 * (1.0 + jnp.cos(jnp.pi * _progress(t, float(tcfg.warmup_steps), tcfg))) * (1.0 - m)


def _linear(t, tcfg: TrainConfig):
    """A straight line from 1 down to min_lr_ratio over the steps after warmup."""
    return 1.0 - (1.0 - tcfg.min_lr_ratio) * _progress(t, float(tcfg.warmup_steps), tcfg)


def _wsd(t, tcfg: TrainConfig):
    """Warmup-stable-decay: 1 until the last `decay_fraction` of all steps, then a line to min_lr_ratio."""
    start = float(tcfg.steps) * (1.0 - tcfg.decay_fraction)
    return 1.0 - (1.0 - tcfg.min_lr_ratio) * _progress(t, start, tcfg)


# name -> f(step t as float32, tcfg) -> multiplier of the peak learning rate once warmup is over
SCHEDULES = {"cosine": _cosine, "linear": _linear, "wsd": _wsd}


def unit_schedule(tcfg: TrainConfig):
    """Learning-rate multiplier at step t (0-based): the share of the peak learning rate.

    warmup (t < w = warmup_steps): (t + 1) / (w + 1), nanoGPT's convention (its `get_lr` returns
    lr * (it + 1) / (warmup_iters + 1)). The first step already moves (by 1/(w+1) of the peak, where
    optax.linear_schedule from 0 would start at exactly 0), the last warmup step reaches w/(w+1), and step
    w is the first at the full peak. Then `tcfg.schedule` (cosine, linear or wsd) down to min_lr_ratio at
    t = steps; constant after. The cosine is nanoGPT's `get_lr` divided by the peak.
    """
    decay = SCHEDULES[tcfg.schedule]

    def schedule(t):
        t = jnp.asarray(t, jnp.float32)
        w = float(tcfg.warmup_steps)
        return jnp.where(t < w, (t + 1.0) / (w + 1.0), decay(t, tcfg))

    return schedule


def decay_mask(params):
    """Weight decay on matrices (embeddings and projections), not on norm scales or biases."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    parts = []
    if tcfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tcfg.grad_clip))
    parts += [
        optax.scale_by_adam(b1=tcfg.beta1, b2=tcfg.beta2, eps=tcfg.eps),
        optax.add_decayed_weights(tcfg.weight_decay, mask=decay_mask),
        optax.scale_by_schedule(unit_schedule(tcfg)),
    ]
    return optax.chain(*parts)


def apply_updates(params, updates, lr):
    """p - lr * u, in each parameter's dtype."""
    return jax.tree_util.tree_map(lambda p, u: (p - lr * u).astype(p.dtype), params, updates)
