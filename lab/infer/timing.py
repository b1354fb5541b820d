"""Wall-clock time of JAX calls. JAX dispatches work asynchronously (a call returns before its results are
computed), so a call is timed until its results are ready (`jax.block_until_ready`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from lab.infer.cached import decode_step, decode_steps
from lab.model import apply, init_cache
from lab.ops import kv_cache


def timed(fn):
    """(seconds, result) of `fn()`, timed until every array of the result is ready."""
    t0 = time.perf_counter()
    result = jax.block_until_ready(fn())
    return time.perf_counter() - t0, result


def decode_step_seconds(cfg, params, batch: int, size: int, n: int, repeats: int) -> list[float]:
    """Seconds per greedy decode step at the end of a full cache of `size` positions: `n` steps in one call
    (lab.infer.cached.decode_steps) from a cache marked as holding size - n positions, so that the last step
    fills it; one call per repeat, after one that compiles. Each call gets a fresh cache (it is donated)."""
    tok = jnp.zeros((batch, 1), jnp.int32)
    full = lambda: jax.block_until_ready(kv_cache.filled(init_cache(cfg, batch, size), size - n))
    jax.block_until_ready(decode_steps(cfg, params, tok, full(), n))  # compile
    secs = []
    for _ in range(repeats):
        cache = full()
        secs.append(timed(lambda cache=cache: decode_steps(cfg, params, tok, cache, n))[0] / n)
    return secs


def token_seconds(cfg, params, prompt_P, positions, size: int, calls: int) -> tuple[dict, dict]:
    """Seconds for the token at each position t (batch 1), with and without a KV cache: the median of
    `calls` single cached decode steps on a cache of `size` slots marked as holding t - 1 positions (a
    step's cost depends on the cache's fixed shape, not on what it holds), and the median of `calls`
    forward passes over t tokens (the prompt repeated; what a step without a cache costs at t). `params` is
    a list of parameter sets (repeats); returns ({t: [seconds per parameter set]}, the same without)."""
    fwd = jax.jit(apply, static_argnums=0)
    token = jnp.asarray(np.asarray(prompt_P)[:1][None])  # (1, 1)
    cached, uncached = {}, {}
    for t in positions:
        fresh = lambda t=t: kv_cache.filled(init_cache(cfg, 1, size), t - 1)  # a step donates its cache
        seq = jnp.asarray(np.resize(prompt_P, (1, t)))
        jax.block_until_ready(decode_step(cfg, params[0], token, fresh()))  # compile (once for all t)
        jax.block_until_ready(fwd(cfg, params[0], seq))  # compile (once per t)
        cached[t], uncached[t] = [], []
        for p in params:
            # Median of single calls: robust to the other processes of a shared machine. The two kinds are
            # timed in separate blocks: interleaved, the long forward pass evicts the CPU caches and the
            # decode step after it would be timed cold (an artifact that grows with t).
            caches = jax.block_until_ready([fresh() for _ in range(calls)])
            c = [timed(lambda c=c, p=p: decode_step(cfg, p, token, c)[0])[0] for c in caches]
            u = [timed(lambda p=p, seq=seq: fwd(cfg, p, seq))[0] for _ in range(calls)]
            cached[t].append(float(np.median(c)))
            uncached[t].append(float(np.median(u)))
    return cached, uncached
