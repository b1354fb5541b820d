"""Samplers: turning next-token logits into a token. Pure, jittable and batched over the leading axis.

The chain is a table, `SAMPLERS`: one `Knob` per step, applied in the table's order by `process_logits`
and `sample`. Today it is the order users of Hugging Face / llama.cpp expect:
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

`temperature` is the one step the chain knows by name: the steps before it reshape what the model says
(penalties; their result is the "penalized" distribution, at temperature 1), the steps after it filter.

Knob values travel as a dict {name: value} (`knobs(...)` fills in the neutral ones), each a scalar or a
(B,) array: every knob is an array argument (not a Python constant), so moving a slider never recompiles.
Shapes: logits (B, V); the context for the penalty is ids (B, T) with a validity mask (B, T).

A new filter is one pure function `fn(logits_BV, value_B1) -> logits_BV` (set removed tokens to -inf; keep
the most probable one; return the logits unchanged at the neutral value) and one `Knob` in `SAMPLERS`
(neutral value, allowed range, slider, label); `sample`, `lab.infer.sample_trace` and the dashboard's
request checks, sliders and JavaScript all follow the table (tests/infer/test_new_filter.py does it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


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


def temperature_scale(logits_BV, t):
    """logits / T, and the logits unchanged where T == 0 (greedy: `sample` then takes the argmax)."""
    t = _col(t, logits_BV)
    return logits_BV / jnp.where(t > 0, t, 1.0)


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
    p = _col(p, logits_BV)
    # the most probable token is always in, even for p = 0 (which would otherwise keep nothing: 0 < 0 fails)
    in_set = (mass_before < p) | (jnp.arange(desc.shape[-1]) == 0)
    threshold = jnp.min(jnp.where(in_set, desc, jnp.inf), axis=-1, keepdims=True)
    # p >= 1 keeps all: in float32 the cumulative mass can round to 1 before the tail's tiny probabilities
    return jnp.where((probs >= threshold) | (p >= 1), logits_BV, NEG_INF)


def min_p_filter(logits_BV, min_p):
    """Keep tokens with probability >= min_p * max probability (min_p = 0 keeps all)."""
    probs = jax.nn.softmax(logits_BV, axis=-1)
    keep = probs >= _col(min_p, logits_BV) * jnp.max(probs, axis=-1, keepdims=True)
    return jnp.where(keep, logits_BV, NEG_INF)


@dataclass(frozen=True)
class Knob:
    """One step of the sampling chain: its function and what a person (or a request) may set it to."""

    name: str  # the knob's key in a knobs dict, a request field and the dashboard's slider id
    fn: Callable  # fn(logits_BV, value_B1) -> logits_BV; with context=True fn(logits, context_BT, mask_BT, value)
    neutral: float  # the value that leaves the distribution unchanged (the default)
    label: str  # one line: the dashboard's label
    valid: tuple  # (lo, hi): the values allowed (lo excluded if lo_open); hi None = the vocabulary size
    slider: tuple  # the dashboard's (min, max, step); with `valid` hi None, max is capped at the vocabulary
    integer: bool = False
    lo_open: bool = False
    context: bool = False  # fn also takes the context ids and mask (a penalty; skipped without a context)
    start: float | None = None  # the slider's first position (default: neutral)


SAMPLERS = (
    Knob("repetition_penalty", repetition_penalty, 1.0, "repetition penalty (1 = off)", (0.0, 10.0),
         (1.0, 2.0, 0.05), lo_open=True, context=True),
    Knob("temperature", temperature_scale, 1.0, "temperature (0 = greedy)", (0.0, 10.0), (0.0, 2.0, 0.05),
         start=0.8),
    Knob("top_k", top_k_filter, 0, "top-k (0 = off)", (0, None), (0, 100, 1), integer=True),
    Knob("top_p", top_p_filter, 1.0, "top-p (1 = off)", (0.0, 1.0), (0.05, 1.0, 0.05), lo_open=True),
    Knob("min_p", min_p_filter, 0.0, "min-p (0 = off)", (0.0, 1.0), (0.0, 0.5, 0.01)),
)  # fmt: skip


def knobs(table=None, /, **values) -> dict:
    """{name: value} for every knob of `table` (default SAMPLERS): the values given, the rest neutral."""
    table = SAMPLERS if table is None else table
    names = [k.name for k in table]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown sampler knob {unknown[0]!r}; the table has {', '.join(names)}")
    return {k.name: values.get(k.name, k.neutral) for k in table}


def process_logits(logits_BV, params: dict, context_BT=None, mask_BT=None, table=SAMPLERS):
    """(penalized logits, filtered logits / T): the distribution before and after the temperature step.

    The first is what the model says after the steps before temperature (temperature 1); the second is
    what `sample` draws from (softmax of it). At temperature 0 the second is the penalized logits themselves.
    """
    names = [k.name for k in table]
    if "temperature" not in names or set(params) - set(names):
        raise ValueError(f"knobs {sorted(params)} do not fit the table {names} (it needs a temperature)")
    logits = penalized = logits_BV.astype(jnp.float32)
    for k in table:
        value = _col(params.get(k.name, k.neutral), logits)
        if k.name == "temperature":
            penalized = logits
        if not k.context:
            logits = k.fn(logits, value)
        elif context_BT is not None:
            mask = jnp.ones(context_BT.shape, bool) if mask_BT is None else mask_BT
            logits = k.fn(logits, context_BT, mask, value)
    t = _col(params.get("temperature", 1.0), logits)
    return penalized, jnp.where(t > 0, logits, penalized)


def sample(key, logits_BV, params: dict | None = None, context_BT=None, mask_BT=None, table=SAMPLERS):
    """(B,) int32 token ids drawn with knobs `params` (default: plain sampling at T = 1; T = 0 rows are greedy)."""
    params = knobs(table) if params is None else params
    penalized, filtered = process_logits(logits_BV, params, context_BT, mask_BT, table)
    drawn = jax.random.categorical(key, filtered, axis=-1)
    greedy = jnp.argmax(penalized, axis=-1)
    t = jnp.broadcast_to(jnp.asarray(params.get("temperature", 1.0)).reshape(-1), (logits_BV.shape[0],))
    return jnp.where(t > 0, drawn, greedy).astype(jnp.int32)


def entropy(logits_BV):
    """(B,) Shannon entropy in nats of softmax(logits); -inf entries contribute 0."""
    logp = jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)
