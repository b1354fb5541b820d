"""A GPT-style decoder (Radford et al. 2019) as pure functions over a plain parameter dict.

    params = init(cfg, key)                   # nested dict of float32 arrays
    logits = apply(cfg, params, tokens_BT)    # (B, T, vocab_size), float32 whatever cfg.dtype

Decoding with a KV cache (lab.ops.kv_cache, an explicit pytree passed in and out):

    cache = init_cache(cfg, batch, size)                          # empty, fixed shape
    logits, cache = apply_cached(cfg, params, prompt_BP, cache)   # prefill: P positions at once
    logits, cache = apply_cached(cfg, params, token_B1, cache)    # decode: the next position

`cfg` is a frozen dataclass, so `jax.jit(apply, static_argnums=0)` compiles once per config.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lab.model.config import ModelConfig
from lab.model.layers import MASKS, NORMS, POSITIONAL, Block, normal
from lab.ops import kv_cache


class Transformer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BT, prefix_len_B=None, cache=None):
        """Logits (B, T, V); with a KV cache, (logits, cache) for the T positions after the cached ones."""
        c = self.cfg
        dt = jnp.dtype(c.dtype)
        wte = self.param("wte", normal(c.init_std), (c.vocab_size, c.d_model))
        x = wte.astype(dt)[tokens_BT]
        if cache is None:
            x = POSITIONAL[c.position].embed(self, x, c)
            mask = MASKS[c.mask](tokens_BT.shape[1], prefix_len_B)
            self.sow("intermediates", "embedded", x)
            for i in range(c.n_layers):
                x = Block(c, name=f"block_{i}")(x, mask, None, i)
        else:  # causal only (checked by cache_layout); the cache builds its own mask from its positions
            x = POSITIONAL[c.position].embed(self, x, c, offset=cache.length)
            ks, vs = [], []
            for i in range(c.n_layers):
                x, (k, v) = Block(c, name=f"block_{i}")(x, None, cache, i)
                ks.append(k)
                vs.append(v)
            cache = kv_cache.advance(cache, ks, vs, tokens_BT.shape[1])
        if c.norm_placement == "pre":  # post-norm blocks already end in a norm
            x = NORMS[c.norm](c, name="norm_f")(x)
        w_DV = (
            wte.astype(dt).T
            if c.tie_embeddings
            else self.param("lm_head", normal(c.init_std), (c.d_model, c.vocab_size)).astype(dt)
        )
        # Mixed precision: the unembedding multiplies in the compute dtype but accumulates and returns
        # float32 logits, so the loss's float32 log-softmax (lab.ops.losses) and the samplers never see
        # logits rounded to bfloat16 (8 significant bits: up to ~0.02 at a logit of 10).
        logits = jnp.matmul(x, w_DV, preferred_element_type=jnp.float32)
        return logits if cache is None else (logits, cache)


def init(cfg: ModelConfig, key: jax.Array) -> dict:
    """Fresh parameters (a nested dict of float32 arrays) for `cfg`."""
    tokens = jnp.zeros((1, cfg.max_len), jnp.int32)
    prefix = jnp.zeros((1,), jnp.int32) if cfg.mask == "prefix" else None
    return Transformer(cfg).init(key, tokens, prefix)["params"]


def apply(cfg: ModelConfig, params: dict, tokens_BT: jax.Array, prefix_len_B: jax.Array | None = None):
    """Logits (B, T, vocab_size) for integer tokens (B, T), T <= cfg.max_len when positions are learned."""
    return Transformer(cfg).apply({"params": params}, tokens_BT, prefix_len_B)


def apply_with_aux(cfg: ModelConfig, params: dict, tokens_BT: jax.Array, prefix_len_B=None):
    """(logits, moe) for a model with mixture-of-experts blocks: the logits `apply` returns and, stacked over
    the MoE blocks (cfg.moe_layers, in order), what each router saw on this batch:
    "balance_loss" (L,), "z_loss" (L,) (lab.ops.moe), "share" (L, E) the fraction of routing choices per
    expert, "dropped" (L,) the fraction of choices past capacity, "entropy" (L,) the mean routing entropy
    in nats, "top1" (L, B, T) int32 each token's first-choice expert. A dense model gives empty dict."""
    logits, state = Transformer(cfg).apply({"params": params}, tokens_BT, prefix_len_B, mutable=["moe"])
    found = state.get("moe", {})
    blocks = [found[f"block_{i}"]["mlp"] for i in cfg.moe_layers]
    if not blocks:
        return logits, {}
    stack = lambda k: jnp.stack([b[k][0] for b in blocks])
    return logits, {k: stack(k) for k in blocks[0] if k != "top1_BT"} | {"top1": stack("top1_BT")}


def moe_aux_loss(cfg: ModelConfig, moe: dict) -> jax.Array:
    """The routers' auxiliary loss summed over MoE blocks: moe_balance_coef * balance + moe_z_coef * z
    (Switch adds each layer's balance loss; ST-MoE its z-loss)."""
    if not moe:
        return jnp.zeros((), jnp.float32)
    return cfg.moe_balance_coef * jnp.sum(moe["balance_loss"]) + cfg.moe_z_coef * jnp.sum(moe["z_loss"])


def capture(cfg: ModelConfig, params: dict, tokens_BT, prefix_len_B=None) -> tuple[jax.Array, dict]:
    """(logits, intermediates) where intermediates holds, as float32 arrays:
    "residual": (L+1, B, T, D) the residual stream after the embedding and after each block;
    "mlp_hidden": (L, B, T, F) each MLP's activation (after the nonlinearity / gating), for dense MLPs only
        (a mixture-of-experts block has no single hidden layer: its routing is in `apply_with_aux`);
    "attn_weights": (L, B, H, T, T) each layer's attention probabilities, for model.attention="naive" only
        (blocked and banded attention never build the T x T array; that is their point; fused attention's
        jax.nn.dot_product_attention does not return it)."""
    logits, state = Transformer(cfg).apply(
        {"params": params}, tokens_BT, prefix_len_B, mutable=["intermediates"]
    )
    inter = state["intermediates"]
    blocks = [inter[f"block_{i}"] for i in range(cfg.n_layers)]
    f32 = lambda xs: jnp.stack([x.astype(jnp.float32) for x in xs])
    out = {"residual": f32([inter["embedded"][0]] + [b["residual"][0] for b in blocks])}
    if all("hidden" in b.get("mlp", {}) for b in blocks):
        out["mlp_hidden"] = f32([b["mlp"]["hidden"][0] for b in blocks])
    if all("attn_weights" in b.get("attn", {}) for b in blocks):
        out["attn_weights"] = f32([b["attn"]["attn_weights"][0] for b in blocks])
    return logits, out


def cache_layout(cfg: ModelConfig, size: int, window: int | None = None) -> tuple[int, bool]:
    """(slots, ring) of a KV cache for sequences of up to `size` positions, with an optional sliding window,
    after refusing what cannot work (before anything is traced or allocated): a non-causal model, and with
    learned positions a length past model.max_len (a traced position past the table would be clamped
    silently)."""
    if cfg.mask != "causal":
        raise ValueError(f"a KV cache needs a causal model, got model.mask={cfg.mask!r}")
    if size < 1 or (window is not None and window < 1):
        raise ValueError(f"cache size and window must be >= 1, got size={size}, window={window}")
    if cfg.position == "learned" and size > cfg.max_len:
        raise ValueError(
            f"a cache of {size} positions exceeds model.max_len={cfg.max_len} (learned positions exist only "
            "for 0..max_len-1)"
        )
    if window is None or window >= size:
        return size, False
    return window, True


def init_cache(
    cfg: ModelConfig,
    batch: int,
    size: int,
    *,
    window: int | None = None,
    sinks: int | None = None,
    dtype=None,
):
    """An empty KV cache for `cfg`: `size` positions (a full cache), or a sliding window of `window`
    positions that evicts the oldest (a ring buffer; then `size` is the longest sequence to be decoded),
    optionally keeping the first `sinks` positions beside the window (StreamingLLM: sinks + window slots,
    positions renumbered inside the cache; lab.ops.kv_cache). K/V are stored in the compute dtype unless
    `dtype` is given. Checks as `cache_layout`, and 0 <= sinks <= window. A model with its own window
    (model.window, model.sinks) gets a cache with that window and those sinks unless others are given."""
    window = cfg.window if window is None else window
    sinks = (cfg.sinks if window == cfg.window else 0) if sinks is None else sinks
    slots, ring = cache_layout(cfg, size, window)
    if sinks and (window is None or not 0 < sinks <= window):
        raise ValueError(f"sinks must be in 0..window and need a window, got sinks={sinks}, window={window}")
    if sinks and ring:
        slots = min(sinks + window, size)
        ring = slots < size  # sinks + window covering every position: a full cache
    dt = jnp.dtype(cfg.dtype if dtype is None else dtype)
    return kv_cache.init(
        cfg.n_layers, batch, slots, cfg.kv_heads, cfg.head_dim, dt, ring=ring, sinks=sinks if ring else 0
    )


def apply_cached(cfg: ModelConfig, params: dict, tokens_BT: jax.Array, cache):
    """(logits (B, T, V), cache): the model on T tokens at positions cache.length.., attending to the
    cached positions too, and the cache with their keys and values added. The caller keeps
    cache.length + T within the cache (a full cache) and within model.max_len (learned positions)."""
    return Transformer(cfg).apply({"params": params}, tokens_BT, None, cache)


def param_count(params: dict) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def stacked_attention(cfg: ModelConfig, params: dict, tokens_BT) -> jax.Array:
    """(S, L, B, H, T, T) attention probabilities of S stacked parameter sets (a sweep's members on a
    leading axis) on the same tokens (B, T). Only naive attention has them (`capture`)."""
    if cfg.attention != "naive":
        raise ValueError(
            f"model.attention={cfg.attention!r} never builds the attention probabilities; "
            'set model.attention="naive" (the same function, materialized) to look at them'
        )
    return jax.jit(jax.vmap(lambda p: capture(cfg, p, tokens_BT)[1]["attn_weights"]))(params)


def input_dependency(cfg: ModelConfig, params: dict, tokens_1T, n_draws: int, seed: int = 0) -> np.ndarray:
    """D[i, j] (T, T), float64: the mean |Δ log p(· | position i)| (L1 over the vocabulary) when input token j
    of one sequence is replaced by a random different token, over `n_draws` replacements per position.

    A causal model has D[i, j] == 0 exactly for j > i. The unperturbed sequence is row 0 of the same batch,
    so every row goes through the same compiled program and an exact zero above the diagonal is a
    statement about the model, not about roundoff.
    """
    t, vocab = tokens_1T.shape[1], cfg.vocab_size
    rng = np.random.default_rng(seed)
    batch = np.repeat(np.asarray(tokens_1T), 1 + t * n_draws, axis=0)  # (1 + t * n, T)
    for j in range(t):
        for d in range(n_draws):
            batch[1 + j * n_draws + d, j] = (tokens_1T[0, j] + rng.integers(1, vocab)) % vocab
    f = jax.jit(lambda b: jax.nn.log_softmax(apply(cfg, params, b).astype(jnp.float32), -1))
    lp = np.asarray(f(jnp.asarray(batch)), np.float64)  # (1 + t * n, T, V)
    delta = np.abs(lp[1:] - lp[:1]).sum(-1)  # (t * n, T)
    return delta.reshape(t, n_draws, t).mean(1).T  # (i, j)


def cache_memory(cfg: ModelConfig, batch: int, size: int) -> dict:
    """Bytes of a full KV cache of `size` positions for `cfg`: the K/V arrays as allocated
    ("measured_bytes"), the `pos`/`length` bookkeeping beside them, and what the formula
    (lab.ops.kv_cache.cache_bytes) predicts from the config ("formula_bytes")."""
    cache = init_cache(cfg, batch, size)
    itemsize = jnp.dtype(cfg.dtype).itemsize
    return {
        "measured_bytes": kv_cache.nbytes(cache),
        "bookkeeping_bytes": kv_cache.bookkeeping_bytes(cache),
        "formula_bytes": kv_cache.cache_bytes(
            cfg.n_layers, batch, cfg.kv_heads, cfg.head_dim, size, itemsize
        ),
    }


def stacked_capture(cfg: ModelConfig, params: dict, tokens_BT) -> dict:
    """`capture`'s intermediates for S stacked parameter sets (a sweep's members on a leading axis) on the
    same tokens (B, T), in one compiled call: each array gains a leading S axis."""
    return jax.jit(jax.vmap(lambda p: capture(cfg, p, tokens_BT)[1]))(params)
