"""Choosing the next token from logits, shared by the uncached and the cached generator.

`sample_fn(logits_BV, key) -> tokens_B` is the plug for samplers (top-k, top-p, ... live in
lab.ops.sampling); without one, temperature 0 is greedy (argmax) and temperature > 0 samples from
softmax(logits / temperature). Both generators split their key the same way each step, so with the same
key and sampler they draw the same tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token(logits_BV, key, temperature, sample_fn=None) -> jnp.ndarray:
    """(B,) int32 tokens; `temperature` may be traced (ignored when `sample_fn` is given)."""
    if sample_fn is not None:
        return sample_fn(logits_BV, key).astype(jnp.int32)
    t = jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(key, logits_BV.astype(jnp.float32) / t, axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits_BV, axis=-1)).astype(jnp.int32)


def check_args(cfg, prompt_BP, n_new: int, temperature: float):
    """The prompt as an array, after refusing what no generator can do (before anything compiles)."""
    if cfg.mask != "causal":
        raise ValueError(f"generation needs a causal model, got model.mask={cfg.mask!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if int(n_new) < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    prompt_BP = jnp.asarray(prompt_BP)
    if prompt_BP.ndim != 2 or prompt_BP.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, length >= 1) token ids, got shape {prompt_BP.shape}")
    return prompt_BP
