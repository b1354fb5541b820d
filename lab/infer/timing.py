"""Wall-clock time of JAX calls. JAX dispatches work asynchronously (a call returns before its results are
computed), so a call is timed until its results are ready (`jax.block_until_ready`)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from lab.infer.cached import decode_steps
from lab.model import init_cache
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
