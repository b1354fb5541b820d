"""A GPT-style decoder (Radford et al. 2019) as pure functions over a plain parameter dict.

    params = init(cfg, key)                   # nested dict of float32 arrays
    logits = apply(cfg, params, tokens_BT)    # (B, T, vocab_size)

`cfg` is a frozen dataclass, so `jax.jit(apply, static_argnums=0)` compiles once per config.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lab.model.config import ModelConfig
from lab.model.layers import MASKS, NORMS, POSITIONAL, Block, normal


class Transformer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BT, prefix_len_B=None):
        c = self.cfg
        dt = jnp.dtype(c.dtype)
        wte = self.param("wte", normal(c.init_std), (c.vocab_size, c.d_model))
        x = wte.astype(dt)[tokens_BT]
        x = POSITIONAL[c.position].embed(self, x, c)
        mask = MASKS[c.mask](tokens_BT.shape[1], prefix_len_B)
        self.sow("intermediates", "embedded", x)
        for i in range(c.n_layers):
            x = Block(c, name=f"block_{i}")(x, mask)
        if c.norm_placement == "pre":  # post-norm blocks already end in a norm
            x = NORMS[c.norm](c, name="norm_f")(x)
        if c.tie_embeddings:
            return x @ wte.astype(dt).T
        return x @ self.param("lm_head", normal(c.init_std), (c.d_model, c.vocab_size)).astype(dt)


def init(cfg: ModelConfig, key: jax.Array) -> dict:
    """Fresh parameters (a nested dict of float32 arrays) for `cfg`."""
    tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
    prefix = jnp.zeros((1,), jnp.int32) if cfg.mask == "prefix" else None
    return Transformer(cfg).init(key, tokens, prefix)["params"]


def apply(cfg: ModelConfig, params: dict, tokens_BT: jax.Array, prefix_len_B: jax.Array | None = None):
    """Logits (B, T, vocab_size) for integer tokens (B, T), T <= cfg.max_len when positions are learned."""
    return Transformer(cfg).apply({"params": params}, tokens_BT, prefix_len_B)


def capture(cfg: ModelConfig, params: dict, tokens_BT, prefix_len_B=None) -> tuple[jax.Array, dict]:
    """(logits, intermediates) where intermediates holds, as float32 arrays:
    "residual": (L+1, B, T, D) the residual stream after the embedding and after each block;
    "mlp_hidden": (L, B, T, F) each MLP's activation (after the nonlinearity / gating);
    "attn_weights": (L, B, H, T, T) each layer's attention probabilities."""
    logits, state = Transformer(cfg).apply(
        {"params": params}, tokens_BT, prefix_len_B, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    blocks = [inter[f"block_{i}"] for i in range(cfg.n_layers)]
    f32 = lambda xs: jnp.stack([x.astype(jnp.float32) for x in xs])
    return logits, {
        "residual": f32([inter["embedded"][0]] + [b["residual"][0] for b in blocks]),
        "mlp_hidden": f32([b["mlp"]["hidden"][0] for b in blocks]),
        "attn_weights": f32([b["attn"]["attn_weights"][0] for b in blocks]),
    }


def param_count(params: dict) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
