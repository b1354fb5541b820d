"""Plain autoregressive generation: each new token recomputes the model over a window of the context.

No KV cache (project 6 adds one): the point here is the simplest correct loop. The token buffer has a
fixed shape and the loop is a `lax.fori_loop`, so a call compiles once per (config, prompt length,
number of new tokens) and not once per token. When the context grows past `cfg.max_len` the window
slides, keeping the last `max_len` tokens.

temperature == 0 is greedy (argmax); temperature > 0 samples from softmax(logits / temperature);
`sample_fn(logits, key) -> tokens` replaces both (lab.infer.next_token). Project 6's `generate_cached`
(lab.infer.cached) samples the same way and is the fast path; this is its baseline.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lab.infer.next_token import next_token
from lab.model import ModelConfig, apply


def window_logits(cfg: ModelConfig, params, buf_BN, cur, w: int):
    """(B, V) next-token logits for position `cur` (traced) of a fixed token buffer (B, N): the model runs
    on the `w` tokens ending just before `cur` (or the first `w` while cur <= w). Positions from `cur` on
    may hold anything; the causal mask hides them from position cur - 1."""
    b, total = buf_BN.shape
    start = jnp.clip(cur - w, 0, total - w)
    window = jax.lax.dynamic_slice(buf_BN, (0, start), (b, w))
    return jax.lax.dynamic_index_in_dim(apply(cfg, params, window), cur - 1 - start, 1, keepdims=False)


@functools.partial(jax.jit, static_argnames=("cfg", "n_new", "sample_fn"))
def _generate(cfg: ModelConfig, params, prompt_BP, n_new: int, temperature, key, sample_fn=None):
    b, p = prompt_BP.shape
    total = p + n_new
    w = min(cfg.max_len, total)
    buf = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt_BP.astype(jnp.int32))

    def body(i, carry):
        buf, key = carry
        cur = p + i  # tokens already in the buffer
        logits = window_logits(cfg, params, buf, cur, w)
        key, sub = jax.random.split(key)
        tok = next_token(logits, sub, temperature, sample_fn)
        return jax.lax.dynamic_update_slice(buf, tok[:, None], (0, cur)), key

    buf, _ = jax.lax.fori_loop(0, n_new, body, (buf, key))
    return buf


def generate(
    cfg: ModelConfig, params, prompt_BP, n_new: int, *, temperature: float = 0.0, key=None, sample_fn=None
):
    """(B, P + n_new) tokens: the prompt followed by `n_new` generated tokens."""
    if cfg.mask != "causal":
        raise ValueError(f"generation needs a causal model, got model.mask={cfg.mask!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    prompt_BP = jnp.asarray(prompt_BP)
    if prompt_BP.ndim != 2 or prompt_BP.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, length >= 1) token ids, got shape {prompt_BP.shape}")
    key = jax.random.PRNGKey(0) if key is None else key
    return _generate(cfg, params, prompt_BP, n_new, jnp.float32(temperature), key, sample_fn)
