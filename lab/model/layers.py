"""Thin Linen modules: they declare parameters and call `lab.ops`; the math lives in `lab.ops`.

The variant dispatch dicts below are the single place where a config string becomes code:
POSITIONAL[cfg.position], NORMS[cfg.norm], ACTIVATIONS[cfg.activation], MASKS[cfg.mask] and
QKV_VARIANTS[cfg.qkv]. Parameters are float32; computation runs in `cfg.dtype`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lab import ops
from lab.model.config import ModelConfig
from lab.ops import kv_cache

normal = nn.initializers.normal


def _dtype(cfg: ModelConfig):
    return jnp.dtype(cfg.dtype)


# --- positions: add (or not) a position signal to the token embeddings -----------------------------------
# `offset` is the position of the first token (0 for a whole sequence; the cache length when decoding with
# a KV cache, possibly traced). Callers with an offset check offset + T <= max_len themselves
# (lab.model.transformer.init_cache), since a traced offset cannot be checked here.
def _no_position(mod: nn.Module, x_BTD, cfg: ModelConfig, offset=0):
    return x_BTD


def _learned_position(mod: nn.Module, x_BTD, cfg: ModelConfig, offset=0):
    t = x_BTD.shape[1]
    if t > cfg.max_len:  # a static shape: this raises at trace time, never silently wraps around
        raise ValueError(f"sequence length {t} exceeds model.max_len={cfg.max_len} (learned positions)")
    wpe = mod.param("wpe", normal(cfg.init_std), (cfg.max_len, cfg.d_model))
    rows = (
        wpe[:t] if isinstance(offset, int) and offset == 0 else jax.lax.dynamic_slice_in_dim(wpe, offset, t)
    )
    return x_BTD + rows.astype(x_BTD.dtype)


POSITIONAL: dict[str, Callable] = {"none": _no_position, "learned": _learned_position}


# --- normalization --------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],)) if self.cfg.bias else None
        return ops.layer_norm(x, scale, bias)


class NoNorm(nn.Module):
    cfg: ModelConfig

    def __call__(self, x):
        return x


NORMS: dict[str, type[nn.Module]] = {"layernorm": LayerNorm, "none": NoNorm}

ACTIVATIONS: dict[str, Callable] = {"gelu": ops.gelu, "gelu_tanh": ops.gelu_tanh, "relu": ops.relu}


# --- attention masks: (T, prefix_len_B) -> boolean mask broadcastable to (B, H, T, T) -------------------
def _prefix(t, prefix_len_B):
    if prefix_len_B is None:
        raise ValueError("model.mask='prefix' needs prefix_len (one prefix length per example)")
    return ops.prefix_lm_mask(prefix_len_B, t)


MASKS: dict[str, Callable] = {
    "causal": lambda t, prefix_len_B: ops.causal_mask(t),
    "bidirectional": lambda t, prefix_len_B: ops.bidirectional_mask(t),
    "prefix": _prefix,
}

# --- project 4: rewire the three attention projections (q, k, v) -> (q', k', v') ------------------------
# Each variant says where q', k' and v' come from ("q", "k", "v") or None for zeros. lab.model.surgery
# applies the same table to trained weights.
QKV_ROUTES: dict[str, tuple[str | None, str | None, str | None]] = {
    "intact": ("q", "k", "v"),
    "swap_qk": ("k", "q", "v"),
    "swap_qv": ("v", "k", "q"),
    "swap_kv": ("q", "v", "k"),
    "zero_q": (None, "k", "v"),
    "zero_k": ("q", None, "v"),
    "zero_v": ("q", "k", None),
    "tie_qk": ("k", "k", "v"),
}


def _rewire_fn(route):
    def fn(q, k, v):
        src = {"q": q, "k": k, "v": v}
        return tuple(jnp.zeros_like(x) if r is None else src[r] for x, r in zip((q, k, v), route))

    return fn


QKV_VARIANTS: dict[str, Callable] = {name: _rewire_fn(route) for name, route in QKV_ROUTES.items()}


def _out_init(cfg: ModelConfig):
    # GPT-2: residual-branch output projections start at std / sqrt(2 * n_layers), so the residual
    # stream's variance does not grow with depth at initialization.
    return normal(cfg.init_std / (2 * cfg.n_layers) ** 0.5)


class Attention(nn.Module):
    """Self-attention. With `cache` (a lab.ops.kv_cache.KVCache) the tokens are the next positions after
    the cached ones: returns (y, (k, v)) with this layer's cache arrays updated (`layer` = this block)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, mask, cache=None, layer: int = 0):
        c, dt = self.cfg, _dtype(self.cfg)
        h, k, e, d = c.n_heads, c.kv_heads, c.head_dim, c.d_model
        w_init = normal(c.init_std)
        p = lambda name, shape, init=w_init: self.param(name, init, shape).astype(dt)
        biases = {}
        if c.bias:
            zeros = nn.initializers.zeros
            biases = dict(
                bq_HE=p("bq", (h, e), zeros),
                bk_KE=p("bk", (k, e), zeros),
                bv_KE=p("bv", (k, e), zeros),
                bo_D=p("bo", (d,), zeros),
            )
        weights = (
            p("wq", (d, h, e)),
            p("wk", (d, k, e)),
            p("wv", (d, k, e)),
            p("wo", (h, e, d), _out_init(c)),
        )
        if cache is not None:
            y, k_new, v_new = kv_cache.cached_multi_head_attention(
                cache, layer, x_BTD, *weights, qkv_fn=QKV_VARIANTS[c.qkv], **biases
            )
            return y, (k_new, v_new)
        return ops.multi_head_attention(x_BTD, *weights, mask, qkv_fn=QKV_VARIANTS[c.qkv], **biases)


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD):
        c, dt = self.cfg, _dtype(self.cfg)
        w1 = self.param("w1", normal(c.init_std), (c.d_model, c.ff_dim)).astype(dt)
        w2 = self.param("w2", _out_init(c), (c.ff_dim, c.d_model)).astype(dt)
        hid = x_BTD @ w1
        if c.bias:
            hid = hid + self.param("b1", nn.initializers.zeros, (c.ff_dim,)).astype(dt)
        y = ACTIVATIONS[c.activation](hid) @ w2
        if c.bias:
            y = y + self.param("b2", nn.initializers.zeros, (c.d_model,)).astype(dt)
        return y


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x))."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, mask, cache=None, layer: int = 0):
        """x -> x'; with a KV cache, x -> (x', (k, v)) (see Attention)."""
        norm = NORMS[self.cfg.norm]
        a = Attention(self.cfg, name="attn")(norm(self.cfg, name="norm1")(x_BTD), mask, cache, layer)
        a, kv = a if cache is not None else (a, None)
        x_BTD = x_BTD + a
        x_BTD = x_BTD + MLP(self.cfg, name="mlp")(norm(self.cfg, name="norm2")(x_BTD))
        return x_BTD if cache is None else (x_BTD, kv)
