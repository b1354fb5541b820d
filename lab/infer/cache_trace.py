"""Which K/V rows a cached decode computes, which it reads from the cache and which the cache has evicted,
read from the cache's own slot positions (`KVCache.pos`) during a real greedy decode (project 6's timeline).

    trace = slot_trace(cfg, params, prompt_P, steps, window=None)   # JAX: decode and record
    grid = slot_states(trace, total, window)                         # NumPy: (steps, positions) states
    grid = recompute_states(prompt_len, steps)                       # the same without a cache

Step 0 is the prefill of the prompt; each later step feeds one token. A query at position q sees the rows
of positions q - W + 1..q with a sliding window of W (lab.ops.kv_cache.visible), all of 0..q without one.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lab.infer.cached import decode_step, prefill
from lab.model import init_cache

COMPUTED, READ, EVICTED, NOT_YET = 0, 1, 2, 3  # the state of one position's K/V row at one step
STATE_NAMES = ("computed this step", "read from cache", "evicted (no longer cached)", "not generated yet")


def slot_trace(cfg, params, prompt_P, steps: int, window: int | None = None) -> list[dict]:
    """Greedy decoding of one prompt for `steps` steps (the prefill and steps - 1 decode steps) with a full
    cache, or a sliding-window one of `window` slots, recording each step's query positions and the cache's
    slot positions before and after it: [{"query": [...], "before": [...], "after": [...]}] (-1 = empty)."""
    p = len(prompt_P)
    cache = init_cache(cfg, 1, p + steps, window=window)
    logits, cache = prefill(cfg, params, jnp.asarray(prompt_P)[None], cache)
    trace = [{"query": list(range(p)), "before": [], "after": np.asarray(cache.pos).tolist()}]
    for i in range(steps - 1):
        before = np.asarray(cache.pos).tolist()
        tok = jnp.argmax(logits[:, -1], axis=-1)[:, None].astype(jnp.int32)
        logits, cache = decode_step(cfg, params, tok, cache)
        trace.append({"query": [p + i], "before": before, "after": np.asarray(cache.pos).tolist()})
    return trace


def slot_states(trace: list[dict], total: int, window: int | None) -> np.ndarray:
    """(steps, total) int8: the state (COMPUTED, READ, EVICTED, NOT_YET) of every position's K/V row at
    every step of a `slot_trace`. Raises ValueError if a cached row is invisible to its query."""
    grid = np.full((len(trace), total), NOT_YET, np.int8)
    for r, s in enumerate(trace):
        q = max(s["query"])
        before = {p for p in s["before"] if p >= 0}
        after = {p for p in s["after"] if p >= 0}
        for j in range(q + 1):
            if j in s["query"]:
                grid[r, j] = COMPUTED
            elif j in before and (window is None or j > q - window):
                grid[r, j] = READ
            elif j in after:
                raise ValueError(f"step {r}: position {j} is cached but invisible to query {q}")
            else:  # overwritten this step (the ring's oldest row) or earlier
                grid[r, j] = EVICTED
    return grid


def recompute_states(prompt_len: int, steps: int) -> np.ndarray:
    """(steps, prompt_len + steps) int8: without a cache every step computes every row up to its position."""
    grid = np.full((steps, prompt_len + steps), NOT_YET, np.int8)
    for r in range(steps):
        grid[r, : prompt_len + r if r else prompt_len] = COMPUTED
    return grid
