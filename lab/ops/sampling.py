"""Samplers: turning next-token logits into a token. Pure, jittable and batched over the leading axis.

The order is the one users of Hugging Face / llama.cpp expect, and `sample` applies it:
  1. repetition penalty (Keskar et al. 2019, CTRL): a token already in the context has its logit divided
     by `penalty` if positive and multiplied by it if negative, so it always becomes less likely
  2. temperature: logits / T; T == 0 means greedy (argmax of the penalized logits), skipping the filters
  3. filters, each removing tokens (logit -> -inf) and then renormalising implicitly through softmax:
       top-k   keep tokens whose logit is at least the k-th largest; k = 0 keeps all.
               Ties at the k-th value are all kept, so more than k tokens can survive.
       top-p   nucleus (Holtzman et al. 2020): keep the smallest set of most-probable tokens whose mass
               reaches p, i.e. every token whose probability is >= the least probable token of that set;
               tokens tied with it are all kept. p = 1 keeps all; the most probable token always survives.
       min-p   keep tokens whose probability is >= min_p * (the largest probability); 0 keeps all.
  4. draw from softmax of what is left.

Every knob is an array argument (not a Python constant), so moving a slider never recompiles.
Shapes: logits (B, V); the context for the penalty is ids (B, T) with a validity mask (B, T).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


class SamplingParams(NamedTuple):
    """Per-call knobs (scalars or (B,) arrays). Defaults leave the distribution unchanged (pure sampling)."""

    temperature: jax.Array | float = 1.0
    top_k: jax.Array | int = 0
    top_p: jax.Array | float = 1.0
    min_p: jax.Array | float = 0.0
    repetition_penalty: jax.Array | float = 1.0


def _col(x, logits):
    """A scalar or (B,) knob as a (B, 1) column broadcastable against (B, V) logits."""
    x = jnp.asarray(x)
    return jnp.broadcast_to(x.reshape(-1, 1) if x.ndim else x, (logits.shape[0], 1))


def repetition_penalty(logits_BV, context_BT, mask_BT, penalty):
    """CTRL's penalty on every token id present (where mask) in the context; penalty 1 is a no-op."""
    b, v = logits_BV.shape
    seen = jnp.zeros((b, v), bool).at[jnp.arange(b)[:, None], context_BT].max(mask_BT)
    p = _col(penalty, logits_BV).astype(logits_BV.dtype)
    penalized = jnp.where(logits_BV > 0, logits_BV / p, logits_BV * p)
    return jnp.where(seen, penalized, logits_BV)


def top_k_filter(logits_BV, k):
    """Keep logits >= the k-th largest (ties kept); k <= 0 or k >= V keeps everything."""
    v = logits_BV.shape[-1]
    k = _col(k, logits_BV).astype(jnp.int32)
    desc = -jnp.sort(-logits_BV, axis=-1)
    kth = jnp.take_along_axis(desc, jnp.clip(k - 1, 0, v - 1), axis=-1)
    keep = (logits_BV >= kth) | (k <= 0) | (k >= v)
    return jnp.where(keep, logits_BV, NEG_INF)


def top_p_filter(logits_BV, p):
    """Nucleus: keep the smallest most-probable set with mass >= p (plus ties of its last member)."""
    probs = jax.nn.softmax(logits_BV, axis=-1)
    desc = -jnp.sort(-probs, axis=-1)
    mass_before = jnp.cumsum(desc, axis=-1) - desc  # mass of strictly more probable tokens in sorted order
    in_set = mass_before < _col(p, logits_BV)  # the first sorted token is always in (mass_before = 0)
    threshold = jnp.min(jnp.where(in_set, desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(probs >= threshold, logits_BV, NEG_INF)


def min_p_filter(logits_BV, min_p):
    """Keep tokens with probability >= min_p * max probability (min_p = 0 keeps all)."""
    probs = jax.nn.softmax(logits_BV, axis=-1)
    keep = probs >= _col(min_p, logits_BV) * jnp.max(probs, axis=-1, keepdims=True)
    return jnp.where(keep, logits_BV, NEG_INF)


def process_logits(logits_BV, params: SamplingParams, context_BT=None, mask_BT=None):
    """(penalized logits, filtered logits / T): the distribution before and after steps 2-3.

    The first is what the model says after the repetition penalty (temperature 1); the second is what
    `sample` draws from (softmax of it). At temperature 0 the second is the penalized logits themselves.
    """
    logits = logits_BV.astype(jnp.float32)
    if context_BT is not None:
        mask = jnp.ones(context_BT.shape, bool) if mask_BT is None else mask_BT
        logits = repetition_penalty(logits, context_BT, mask, params.repetition_penalty)
    t = _col(params.temperature, logits)
    scaled = logits / jnp.where(t > 0, t, 1.0)
    filtered = min_p_filter(top_p_filter(top_k_filter(scaled, params.top_k), params.top_p), params.min_p)
    return logits, jnp.where(t > 0, filtered, logits)


def sample(key, logits_BV, params: SamplingParams | None = None, context_BT=None, mask_BT=None):
    """(B,) int32 token ids drawn with `params` (default: plain sampling at T = 1; T = 0 rows are greedy)."""
    params = SamplingParams() if params is None else params
    penalized, filtered = process_logits(logits_BV, params, context_BT, mask_BT)
    drawn = jax.random.categorical(key, filtered, axis=-1)
    greedy = jnp.argmax(penalized, axis=-1)
    t = jnp.broadcast_to(jnp.asarray(params.temperature).reshape(-1), (logits_BV.shape[0],))
    return jnp.where(t > 0, drawn, greedy).astype(jnp.int32)


def entropy(logits_BV):
    """(B,) Shannon entropy in nats of softmax(logits); -inf entries contribute 0."""
    logp = jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)
