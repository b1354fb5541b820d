"""Generation with a KV cache: prefill the prompt once, then decode one token per step (project 6).

    tokens = generate_cached(cfg, params, prompt_BP, n_new, temperature=0.8, key=key)

The prompt runs through the model in one call that fills a fixed-shape cache (lab.ops.kv_cache); each
further token is one call on a single position that reads the cached keys and values instead of
recomputing the prefix. The decode steps are a `lax.scan`, and everything has a fixed shape, so a call
compiles once per (config, batch, prompt length, n_new, sampler) and never per token.

It samples exactly as the uncached `lab.infer.generate` (same key schedule and rule), so with the same key
both give the same tokens; the logits agree to float32 roundoff (tests/infer/test_cached.py).

`sample_fn(logits_BV, key) -> tokens_B` plugs in any sampler (it must be hashable, e.g. a module-level
function or a functools.partial of one, since it is a static argument); the default is greedy at
temperature 0 and softmax(logits / temperature) sampling otherwise (lab.infer.next_token).
`window=W` decodes with a sliding-window cache of W positions that evicts the oldest (see
lab.ops.kv_cache): constant memory, but the model then sees only the last W tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lab.infer.next_token import check_args, next_token
from lab.model import ModelConfig, apply_cached, init_cache
from lab.model.transformer import cache_layout


@functools.partial(jax.jit, static_argnames=("cfg", "n_new", "window", "sample_fn", "return_logits"))
def _generate_cached(cfg, params, prompt_BP, n_new, temperature, key, window, sample_fn, return_logits):
    b, p = prompt_BP.shape
    total = p + n_new
    cache = init_cache(cfg, b, total, window=window)
    logits, cache = apply_cached(cfg, params, prompt_BP.astype(jnp.int32), cache)
    logits = logits[:, -1]
    key, sub = jax.random.split(key)
    first = next_token(logits, sub, temperature, sample_fn)

    def step(carry, _):
        cache, tok, key = carry
        logits, cache = apply_cached(cfg, params, tok[:, None], cache)
        logits = logits[:, 0]
        key, sub = jax.random.split(key)
        nxt = next_token(logits, sub, temperature, sample_fn)
        return (cache, nxt, key), (nxt, logits if return_logits else None)

    # n_new - 1 decode steps: the last sampled token is never fed back.
    _, (rest, rest_logits) = jax.lax.scan(step, (cache, first, key), None, length=n_new - 1)
    out = jnp.concatenate([prompt_BP.astype(jnp.int32), first[:, None], rest.T], axis=1)
    if not return_logits:
        return out
    return out, jnp.concatenate([logits[:, None], jnp.swapaxes(rest_logits, 0, 1)], axis=1)


def generate_cached(
    cfg: ModelConfig,
    params,
    prompt_BP,
    n_new: int,
    *,
    temperature: float = 0.0,
    key=None,
    sample_fn=None,
    window: int | None = None,
    return_logits: bool = False,
):
    """(B, P + n_new) tokens: the prompt and `n_new` generated tokens; with return_logits=True also the
    (B, n_new, V) logits each generated token was drawn from."""
    prompt_BP = check_args(cfg, prompt_BP, n_new, temperature)
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    total = prompt_BP.shape[1] + n_new
    cache_layout(cfg, total, window)  # checks mask, positions and sizes up front
    key = jax.random.PRNGKey(0) if key is None else key
    return _generate_cached(
        cfg, params, prompt_BP, n_new, jnp.float32(temperature), key, window, sample_fn, return_logits
    )


# Single calls for measuring and visualizing (lab.model.apply_cached, jitted once per config and shape).
prefill = jax.jit(apply_cached, static_argnums=0)
decode_step = jax.jit(apply_cached, static_argnums=0, donate_argnums=3)


@functools.partial(jax.jit, static_argnames=("cfg", "n"), donate_argnames=("cache",))
def decode_steps(cfg: ModelConfig, params, tokens_B1, cache, n: int):
    """(tokens (B, n), cache): `n` greedy decode steps from `cache` in one `lax.scan` (no prefill), for
    measuring decode throughput alone. The cache is donated (updated in place)."""

    def step(carry, _):
        cache, tok = carry
        logits, cache = apply_cached(cfg, params, tok, cache)
        nxt = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)[:, None]
        return (cache, nxt), nxt[:, 0]

    (cache, _), toks = jax.lax.scan(step, (cache, tokens_B1.astype(jnp.int32)), None, length=n)
    return toks.T, cache
