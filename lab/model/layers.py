"""Thin Linen modules: they declare parameters and call `lab.ops`; the math lives in `lab.ops`.

The variant dispatch dicts below are the single place where a config string becomes code:
POSITIONAL[cfg.position], NORMS[cfg.norm], ACTIVATIONS[cfg.activation], MASKS[cfg.mask] and
QKV_VARIANTS[cfg.qkv], PLACEMENTS[cfg.norm_placement], ATTENTION_IMPLS[cfg.attention], and (project 8)
MLPS[cfg.mlp] (per block: a mixture of experts where cfg.is_moe_block) with MOE_DISPATCH[cfg.moe_dispatch]. Parameters are
float32; computation runs in `cfg.dtype` (mixed precision with bfloat16: each weight is cast where it is
used, so gradients and optimizer state stay float32; norm statistics, attention scores and softmax are
float32 in lab.ops, and the model's logits come out float32). Modules `sow` their attention weights, MLP activations and
block outputs into "intermediates", which only `lab.model.transformer.capture` asks for.

Decoding with a KV cache (lab.ops.kv_cache) runs the same modules on the next T tokens: every position
scheme then takes the absolute position of the first token (`offset`, the cache length, traced), so the
cached model computes exactly what the full model computes at those positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from lab import ops
from lab.model.config import ModelConfig
from lab.ops import kv_cache, long_attention
from lab.ops import moe as moe_ops
from lab.ops.matmul import linear

normal = nn.initializers.normal


def _dtype(cfg: ModelConfig):
    return jnp.dtype(cfg.dtype)


# --- positions: each scheme acts at up to three places -----------------------------------------------------
# embed(mod, x_BTD, cfg, offset) -> x_BTD         adds a signal to the token embeddings (sinusoidal, learned)
# rotate(q_BTHE, k_BTKE, cfg, offset) -> (q, k)  rotates queries and keys inside attention (RoPE)
# bias(q_pos_T, k_pos_S, cfg) -> (H, T, S)        an additive attention-score bias (ALiBi)
# `offset` is the position of the first of the T tokens: 0 for a whole sequence, the cache length (traced)
# when decoding with a KV cache. Callers with an offset keep offset + T <= max_len for learned positions
# themselves (lab.model.transformer.cache_layout), since a traced offset cannot be checked here.
def _no_position(mod: nn.Module, x_BTD, cfg: ModelConfig, offset=0):
    return x_BTD


def _learned_position(mod: nn.Module, x_BTD, cfg: ModelConfig, offset=0):
    t = x_BTD.shape[1]
    if t > cfg.max_len:  # a static shape: this raises at trace time, never silently wraps around
        raise ValueError(
            f"sequence length {t} exceeds model.max_len={cfg.max_len}: learned positions exist only for "
            f"0..{cfg.max_len - 1} (use position sinusoidal, rope, alibi or none to run longer sequences)"
        )
    wpe = mod.param("wpe", normal(cfg.init_std), (cfg.max_len, cfg.d_model))
    rows = (
        wpe[:t] if isinstance(offset, int) and offset == 0 else jax.lax.dynamic_slice_in_dim(wpe, offset, t)
    )
    return x_BTD + rows.astype(x_BTD.dtype)


def _sinusoidal_position(mod: nn.Module, x_BTD, cfg: ModelConfig, offset=0):
    # Vaswani et al. 2017 (section 3.4): the unscaled table (entries in [-1, 1]) is added to token embeddings
    # multiplied by sqrt(d_model). Ours are initialized with std init_std (0.02), so without the factor the
    # table would swamp the tokens (the lab scaled the table by init_std until e02 showed it hurt).
    pe = ops.sinusoidal_positions(x_BTD.shape[1], cfg.d_model, offset=offset)
    return x_BTD * jnp.asarray(cfg.d_model**0.5, x_BTD.dtype) + pe.astype(x_BTD.dtype)


def _rope(q_BTHE, k_BTKE, cfg: ModelConfig, offset=0):
    return ops.apply_rope(q_BTHE, cfg.rope_theta, offset), ops.apply_rope(k_BTKE, cfg.rope_theta, offset)


def _alibi(q_pos_T, k_pos_S, cfg: ModelConfig):
    # -m_h * |q - k| (ops.alibi_bias for explicit positions: the cache's slots hold arbitrary positions)
    dist = jnp.abs(q_pos_T[:, None] - k_pos_S[None, :]).astype(jnp.float32)
    return -ops.alibi_slopes(cfg.n_heads)[:, None, None] * dist[None]


@dataclass(frozen=True)
class PositionScheme:
    embed: Callable = _no_position
    rotate: Callable | None = None
    bias: Callable | None = None


POSITIONAL: dict[str, PositionScheme] = {
    "none": PositionScheme(),
    "sinusoidal": PositionScheme(embed=_sinusoidal_position),
    "learned": PositionScheme(embed=_learned_position),
    "rope": PositionScheme(rotate=_rope),
    "alibi": PositionScheme(bias=_alibi),
}


# --- normalization --------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],)) if self.cfg.bias else None
        return ops.layer_norm(x, scale, bias, eps=1e-5 if self.cfg.norm_eps is None else self.cfg.norm_eps)


class RMSNorm(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return ops.rms_norm(x, scale, eps=1e-6 if self.cfg.norm_eps is None else self.cfg.norm_eps)


class NoNorm(nn.Module):
    cfg: ModelConfig

    def __call__(self, x):
        return x


NORMS: dict[str, type[nn.Module]] = {"layernorm": LayerNorm, "rmsnorm": RMSNorm, "none": NoNorm}

# name -> (function, gated). A gated function takes (gate, up); the others take one array.
ACTIVATIONS: dict[str, tuple[Callable, bool]] = {
    "gelu": (ops.gelu, False),
    "gelu_tanh": (ops.gelu_tanh, False),
    "relu": (ops.relu, False),
    "swiglu": (ops.swiglu, True),
    "geglu": (ops.geglu, True),
}


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


# --- project 7: how attention is computed, once q, k, v are made -------------------------------------------
# fn(cfg, q_BTHD, k_BTKD, v_BTKD, q_sinks_BTHD, slopes_H) -> (B, T, H, E), causal, with cfg.window and
# cfg.sinks (lab.ops.long_attention). Used when cfg.attention != "naive" or cfg.window is set; the default
# model (naive, no window) keeps lab.ops.multi_head_attention, so its numbers do not change.
ATTENTION_IMPLS: dict[str, Callable] = {
    "naive": lambda c, q, k, v, qs, sl: long_attention.reference_attention(
        q, k, v, window=c.window, sinks=c.sinks, q_sinks_BTHD=qs, slopes_H=sl
    ),
    "blocked": lambda c, q, k, v, qs, sl: long_attention.blocked_attention(
        q, k, v, window=c.window, sinks=c.sinks, slopes_H=sl, block=c.attn_block
    ),
    "banded": lambda c, q, k, v, qs, sl: long_attention.banded_attention(
        q, k, v, c.window, sinks=c.sinks, q_sinks_BTHD=qs, slopes_H=sl, block=c.attn_block
    ),
    # no sinks (ModelConfig refuses them), so q_sinks is always None here
    "fused": lambda c, q, k, v, qs, sl: long_attention.fused_attention(q, k, v, window=c.window, slopes_H=sl),
}


def _sink_rotation(pos: PositionScheme, rewire, c: ModelConfig, q_pos_T, window, sinks):
    """qkv_fn making the queries used against sink keys: RoPE at StreamingLLM's renumbered positions
    min(p, sinks + window - 1) (lab.ops.long_attention); None when the scheme does not rotate."""
    if pos.rotate is None or not sinks:
        return None
    renum = long_attention.renumbered_sink_positions(q_pos_T, window, sinks)
    # apply_rope rotates position offset + i at row i: an offset per row puts row i at renum[i]
    shift = renum - jnp.arange(q_pos_T.shape[0])

    def fn(q, k, v):
        q, k, v = rewire(q, k, v)
        return (*pos.rotate(q, k, c, shift), v)

    return fn


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
        pos = POSITIONAL[c.position]
        offset = 0 if cache is None else cache.length
        qkv_fn = rewire_only = QKV_VARIANTS[c.qkv]
        if pos.rotate is not None:
            rewire = qkv_fn

            def qkv_fn(q, k, v):
                q, k, v = rewire(q, k, v)
                return (*pos.rotate(q, k, c, offset), v)

        weights = (
            p("wq", (d, h, e)),
            p("wk", (d, k, e)),
            p("wv", (d, k, e)),
            p("wo", (h, e, d), _out_init(c)),
        )
        t = x_BTD.shape[1]
        if cache is not None:
            # blocked and banded models attend over the cache in key blocks too (linear memory in a long
            # prefill chunk); a ring with sinks, and naive and fused models, score all slots at once
            impl = "blocked" if c.attention in ("blocked", "banded") and not cache.sinks else "naive"
            slopes = ops.alibi_slopes(h) if impl == "blocked" and pos.bias is _alibi else None
            bias_fn = None if pos.bias is None else (lambda q_pos, k_pos: pos.bias(q_pos, k_pos, c))
            sink_kw = {}
            if cache.sinks:  # renumbered inside the cache (its window and sinks, not the model's)
                q_pos = cache.length + jnp.arange(t)
                rot = _sink_rotation(pos, rewire_only, c, q_pos, cache.window, cache.sinks)
                sink_kw = dict(sink_qkv_fn=rot)
            y, k_new, v_new = kv_cache.cached_multi_head_attention(
                cache, layer, x_BTD, *weights, qkv_fn=qkv_fn, bias_fn=bias_fn, impl=impl, slopes_H=slopes,
                block=c.attn_block, **sink_kw, **biases,
            )  # fmt: skip
            return y, (k_new, v_new)
        if c.attention != "naive" or c.window is not None:
            q, kk, v = ops.attention.project_qkv(x_BTD, *weights[:3], **_qkv_biases(biases), qkv_fn=qkv_fn)
            sink_fn = _sink_rotation(pos, rewire_only, c, jnp.arange(t), c.window, c.sinks)
            q_sinks = None
            if sink_fn is not None:
                q_sinks = ops.attention.project_qkv(
                    x_BTD, *weights[:3], **_qkv_biases(biases), qkv_fn=sink_fn
                )[0]
            slopes = ops.alibi_slopes(h) if pos.bias is _alibi else None
            if pos.bias is not None and slopes is None:
                raise ValueError(f"model.attention={c.attention!r} supports the ALiBi score bias only")
            o = ATTENTION_IMPLS[c.attention](c, q, kk, v, q_sinks, slopes)
            return ops.attention.project_out(o, weights[3], biases.get("bo_D"), x_BTD.dtype)
        y, w_BHTS = ops.multi_head_attention(
            x_BTD,
            *weights,
            mask,
            qkv_fn=qkv_fn,
            score_bias=None if pos.bias is None else pos.bias(jnp.arange(t), jnp.arange(t), c),
            return_weights=True,
            **biases,
        )
        self.sow("intermediates", "attn_weights", w_BHTS)  # kept only when asked for (lab.model.capture)
        return y


def _qkv_biases(biases: dict) -> dict:
    return {k: biases[k] for k in ("bq_HE", "bk_KE", "bv_KE") if k in biases}


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD):
        c, dt = self.cfg, _dtype(self.cfg)
        fn, gated = ACTIVATIONS[c.activation]
        w1 = self.param("w1", normal(c.init_std), (c.d_model, c.ff_dim)).astype(dt)
        w2 = self.param("w2", _out_init(c), (c.ff_dim, c.d_model)).astype(dt)
        hid = linear(x_BTD, w1)
        if c.bias:
            hid = hid + self.param("b1", nn.initializers.zeros, (c.ff_dim,)).astype(dt)
        if gated:  # w1 is the gate, w3 the linear "up" projection
            up = linear(x_BTD, self.param("w3", normal(c.init_std), (c.d_model, c.ff_dim)).astype(dt))
            if c.bias:
                up = up + self.param("b3", nn.initializers.zeros, (c.ff_dim,)).astype(dt)
            act = fn(hid, up)
        else:
            act = fn(hid)
        self.sow("intermediates", "hidden", act)
        y = linear(act, w2)
        if c.bias:
            y = y + self.param("b2", nn.initializers.zeros, (c.d_model,)).astype(dt)
        return y


# --- project 8: a mixture of experts in place of the MLP (lab.ops.moe) -------------------------------------
def _capacity_dispatch(c: ModelConfig, x_ND, experts_NK, gates_NK, w):
    """(y (N, D), kept (N, K)): GShard/Switch dispatch through ceil(cf * k * N / E) slots per expert."""
    fn, _ = ACTIVATIONS[c.activation]
    cap = moe_ops.capacity(x_ND.shape[0], c.moe_experts, c.moe_top_k, c.moe_capacity_factor)
    slot_NK, kept_NK = moe_ops.capacity_slots(experts_NK, c.moe_experts, cap)
    expert_fn = lambda x_ECD: moe_ops.expert_mlp(x_ECD, act=fn, **w)
    return moe_ops.capacity_combine(x_ND, slot_NK, kept_NK, gates_NK, expert_fn, c.moe_experts, cap), kept_NK


def _dropless_dispatch(c: ModelConfig, x_ND, experts_NK, gates_NK, w):
    """(y (N, D), kept (N, K), all true): every routing choice computed (grouped matmuls)."""
    fn, _ = ACTIVATIONS[c.activation]
    y = moe_ops.dropless_combine(x_ND, experts_NK, gates_NK, fn, c.moe_experts, **w)
    return y, jnp.ones(experts_NK.shape, bool)


MOE_DISPATCH: dict[str, Callable] = {"capacity": _capacity_dispatch, "dropless": _dropless_dispatch}


class MoE(nn.Module):
    """A mixture of `moe_experts` MLPs, each of the dense MLP's shape (ff_dim, gated or not, biases as the
    dense one), behind a float32 router (Fedus et al. 2021, Switch Transformer; Lepikhin et al. 2020).

    The router starts small and random (std init_std), so no two experts tie for a token. The layer sows,
    into the "moe" collection (kept only when asked for: lab.model.transformer.apply_with_aux), its
    auxiliary losses (Switch balance, ST-MoE z-loss) and routing statistics over the batch."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD):
        c, dt = self.cfg, _dtype(self.cfg)
        e, d, f = c.moe_experts, c.d_model, c.ff_dim
        b, t, _ = x_BTD.shape
        x_ND = x_BTD.reshape(b * t, d)
        w_router = self.param("router", normal(c.init_std), (d, e))  # float32, used in float32
        logits_NE = moe_ops.router_logits(x_ND, w_router)
        probs_NE, experts_NK, gates_NK = moe_ops.top_k_route(logits_NE, c.moe_top_k)
        p = lambda name, shape, init: self.param(name, init, shape).astype(dt)
        zeros = nn.initializers.zeros
        w = dict(w1_EDF=p("w1", (e, d, f), normal(c.init_std)), w2_EFD=p("w2", (e, f, d), _out_init(c)))
        if c.gated:
            w["w3_EDF"] = p("w3", (e, d, f), normal(c.init_std))
        if c.bias:
            w |= dict(b1_EF=p("b1", (e, f), zeros), b2_ED=p("b2", (e, d), zeros))
            if c.gated:
                w["b3_EF"] = p("b3", (e, f), zeros)
        y_ND, kept_NK = MOE_DISPATCH[c.moe_dispatch](c, x_ND, experts_NK, gates_NK.astype(dt), w)
        self.sow("moe", "balance_loss", moe_ops.balance_loss(probs_NE, experts_NK))
        self.sow("moe", "z_loss", moe_ops.z_loss(logits_NE))
        self.sow("moe", "share", moe_ops.expert_fractions(experts_NK, e))  # (E,) of all routing choices
        self.sow("moe", "dropped", 1.0 - jnp.mean(kept_NK.astype(jnp.float32)))
        self.sow("moe", "entropy", moe_ops.routing_entropy(probs_NE))
        self.sow("moe", "top1_BT", experts_NK[:, 0].reshape(b, t))
        return y_ND.reshape(b, t, d).astype(x_BTD.dtype)


MLPS: dict[str, type[nn.Module]] = {"dense": MLP, "moe": MoE}


# --- norm placement: one residual sub-layer f with its norm -----------------------------------------------
PLACEMENTS: dict[str, Callable] = {
    "pre": lambda x, f, norm: x + f(norm(x)),  # GPT-2: the residual stream itself is never normalized
    "post": lambda x, f, norm: norm(x + f(x)),  # Vaswani et al. 2017: normalize after each residual add
}


class Block(nn.Module):
    """One transformer block. Pre-norm (GPT-2): x + attn(norm(x)), then + mlp(norm(x)).
    Post-norm (Vaswani et al. 2017): norm(x + attn(x)), then norm(x + mlp(x))."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, mask, cache=None, layer: int = 0):
        """x -> x'; with a KV cache, x -> (x', (k, v)) (see Attention)."""
        c = self.cfg
        norm1, norm2 = NORMS[c.norm](c, name="norm1"), NORMS[c.norm](c, name="norm2")
        mlp_kind = "moe" if c.is_moe_block(layer) else "dense"  # every block is dense unless model.mlp="moe"
        attn, mlp = Attention(c, name="attn"), MLPS[mlp_kind](c, name="mlp")
        kv = []

        def attend(x):
            out = attn(x, mask, cache, layer)
            if cache is None:
                return out
            kv.append(out[1])
            return out[0]

        # Each residual sub-layer ends at a gradient fence (lab.ops.fence): the same values, but XLA stores the
        # residual stream's gradient there instead of recomputing its chain in every consumer.
        x_BTD = ops.cotangent_fence(PLACEMENTS[c.norm_placement](x_BTD, attend, norm1))
        x_BTD = ops.cotangent_fence(PLACEMENTS[c.norm_placement](x_BTD, mlp, norm2))
        self.sow("intermediates", "residual", x_BTD)
        return x_BTD if cache is None else (x_BTD, kv[0])
