"""AdamW (Loshchilov & Hutter 2019) with warmup + cosine decay and gradient clipping, built from optax.

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


def unit_schedule(tcfg: TrainConfig):
    """Learning-rate multiplier at step t (0-based): nanoGPT's `get_lr` divided by the peak.

    warmup: (t + 1) / (warmup + 1); then cosine from 1 down to min_lr_ratio at t = steps; constant after.
    """

    def schedule(t):
        t = jnp.asarray(t, jnp.float32)
        w = float(tcfg.warmup_steps)
        warm = (t + 1.0) / (w + 1.0)
        span = max(float(tcfg.steps) - w, 1.0)
        ratio = jnp.clip((t - w) / span, 0.0, 1.0)
        cos = tcfg.min_lr_ratio + 0.5 * (1.0 + jnp.cos(jnp.pi * ratio)) * (1.0 - tcfg.min_lr_ratio)
        return jnp.where(t < w, warm, cos)

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
