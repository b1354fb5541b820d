"""Multi-head to grouped-query attention: checkpoint conversion by mean-pooling key/value heads.

Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints": to turn a trained multi-head model with H heads into one with G key/value heads, average
the key and value projection heads of each group of H/G query heads into one head, then continue training
briefly ("uptraining"). The grouping is the one lab.ops.attention uses: query head h reads key/value head
h // (H/G), so group g is query heads g*H/G .. (g+1)*H/G - 1. Queries and the output projection are kept.

G = H leaves every parameter unchanged (a group of one head: the mean of one value is that value), so the
converted model is the multi-head model exactly; G = 1 is multi-query attention (Shazeer 2019).
"""

from __future__ import annotations

import jax.numpy as jnp

from lab.model.config import ModelConfig


def gqa_config(cfg: ModelConfig, n_kv_heads: int) -> ModelConfig:
    """The multi-head config `cfg` with `n_kv_heads` key/value heads (validated by ModelConfig)."""
    if cfg.kv_heads != cfg.n_heads:
        raise ValueError(f"conversion starts from a multi-head model, got n_kv_heads={cfg.kv_heads}")
    return cfg.replace(n_kv_heads=n_kv_heads)


def mha_to_gqa(params: dict, n_kv_heads: int) -> dict:
    """A copy of multi-head `params` whose key/value projections (and biases) are mean-pooled into
    `n_kv_heads` heads. Run it with `gqa_config(cfg, n_kv_heads)`. Works on stacked (vmapped) parameters
    too: the head axis is found from the end (w: (..., D, H, E); b: (..., H, E))."""
    out = dict(params)
    blocks = [k for k in params if k.startswith("block_")]
    if not blocks:
        raise ValueError("no transformer blocks (block_0, ...) in the parameters")
    for name in blocks:
        attn = dict(params[name]["attn"])
        h = attn["wq"].shape[-2]
        if attn["wk"].shape[-2] != h:
            raise ValueError(
                f"{name}: key/value heads ({attn['wk'].shape[-2]}) != query heads ({h}); not MHA"
            )
        if not (1 <= n_kv_heads <= h and h % n_kv_heads == 0):
            raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide the number of heads ({h})")
        for key in ("wk", "wv", "bk", "bv"):
            if key in attn:
                attn[key] = _pool(attn[key], n_kv_heads)
        out[name] = {**params[name], "attn": attn}
    return out


def _pool(x, g: int):
    """Mean over groups of consecutive heads: (..., H, E) -> (..., G, E)."""
    *lead, h, e = x.shape
    return jnp.mean(x.reshape(*lead, g, h // g, e), axis=-2)
