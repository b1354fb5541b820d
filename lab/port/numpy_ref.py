"""The transformer of `lab.model` re-implemented in plain NumPy at float64: a pure function of the parameter
tree (as `lab.model.init` makes it or Orbax restores it) and the model config, importing no JAX.

    logits = forward(cfg, params, tokens_BT)          # (B, T, V) float64
    tokens = greedy(cfg, params, prompt_BP, n)        # (B, P + n) argmax continuation, no cache

It is the reference every other stack is measured against (lab.port; tests/model): float64 keeps its own
roundoff ~1e-16 relative, nine orders below float32's, so a difference between a float32 stack and this one
is that stack's. Every dense variant of `ModelConfig` is covered: positions none / sinusoidal / learned /
RoPE / ALiBi, LayerNorm / RMSNorm / none, pre- and post-norm, GELU (erf and tanh), ReLU, SwiGLU, GeGLU,
grouped-query heads, biases, tied or untied unembedding, causal / bidirectional / prefix masks. Not covered
(refused by `check_supported`): mixture-of-experts MLPs, blocked / banded / windowed attention, Q/K/V
rewirings.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf  # float64-accurate; SciPy is a dependency of JAX, so always present

NORM_EPS = {"layernorm": 1e-5, "rmsnorm": 1e-6, "none": None}


def check_supported(cfg) -> None:
    """Raise ValueError naming the field if `cfg` uses a variant outside the dense naive-attention model."""
    bad = []
    if cfg.mlp != "dense":
        bad.append(f"model.mlp={cfg.mlp!r} (allowed: 'dense')")
    if cfg.attention != "naive" or cfg.window is not None:
        bad.append(f"model.attention={cfg.attention!r}, window={cfg.window} (allowed: 'naive', no window)")
    if cfg.qkv != "intact":
        bad.append(f"model.qkv={cfg.qkv!r} (allowed: 'intact')")
    if bad:
        raise ValueError(f"the ported model does not implement {'; '.join(bad)}")


def to_numpy(params, dtype=np.float64) -> dict:
    """The parameter tree (nested dicts of arrays of any framework) as nested dicts of NumPy `dtype` arrays."""
    if isinstance(params, dict):
        return {k: to_numpy(v, dtype) for k, v in params.items()}
    return np.asarray(params, dtype)


def layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance, as lab.ops and PyTorch
    y = (x - mean) / np.sqrt(var + eps) * p["scale"]
    return y + p["bias"] if "bias" in p else y


def rms_norm(x, p, eps):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["scale"]


def mask(kind: str, t: int, prefix_len=None) -> np.ndarray:
    """(B or 1, T, T) boolean: query i may see key j."""
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    if kind == "causal":
        return (j <= i)[None]
    if kind == "bidirectional":
        return np.ones((1, t, t), bool)
    if kind == "prefix":
        if prefix_len is None:
            raise ValueError("model.mask='prefix' needs prefix_len (one prefix length per example)")
        return np.stack([(j <= i) | (j < p) for p in np.asarray(prefix_len)])
    raise ValueError(f"unknown mask {kind!r}")


def rope(x_BTHE, theta: float, offset: int = 0):
    """Interleaved pairs (2i, 2i+1) of each head rotated by position * theta^(-2i/E)."""
    _, t, _, e = x_BTHE.shape
    pos = np.arange(offset, offset + t, dtype=np.float64)[:, None]
    ang = (pos * theta ** (-np.arange(0, e, 2) / e))[None, :, None, :]  # (1, T, 1, E/2)
    x0, x1 = x_BTHE[..., 0::2], x_BTHE[..., 1::2]
    out = np.empty_like(x_BTHE)
    out[..., 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
    out[..., 1::2] = x0 * np.sin(ang) + x1 * np.cos(ang)
    return out


def alibi_slopes(n: int) -> np.ndarray:
    """Press et al. 2022: 2^(-8h/n) for n a power of two, else the closest power's slopes + every other of 2x."""
    pow2 = lambda m: [2.0 ** (-8.0 * (i + 1) / m) for i in range(m)]
    if n & (n - 1) == 0:
        return np.array(pow2(n))
    c = 2 ** int(math.floor(math.log2(n)))
    return np.array(pow2(c) + pow2(2 * c)[0::2][: n - c])


def sinusoidal(t: int, d: int) -> np.ndarray:
    """(T, D): sin at even dimensions 2i, cos at odd 2i+1, of position / 10000^(2i/D)."""
    pos = np.arange(t, dtype=np.float64)[:, None]
    ang = pos / 10000 ** (np.arange(0, d, 2) / d)
    pe = np.zeros((t, d))
    pe[:, 0::2] = np.sin(ang)
    pe[:, 1::2] = np.cos(ang[:, : d // 2])
    return pe


def attention(cfg, p, x_BTD, m):
    h, kv, e = cfg.n_heads, cfg.kv_heads, cfg.head_dim
    q = np.einsum("btd,dhe->bthe", x_BTD, p["wq"])
    k = np.einsum("btd,dke->btke", x_BTD, p["wk"])
    v = np.einsum("btd,dke->btke", x_BTD, p["wv"])
    if "bq" in p:
        q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
    if cfg.position == "rope":
        q, k = rope(q, cfg.rope_theta), rope(k, cfg.rope_theta)
    k, v = (
        np.repeat(k, h // kv, axis=2),
        np.repeat(v, h // kv, axis=2),
    )  # query head i reads kv head i // (h/kv)
    s = np.einsum("bthe,bshe->bhts", q, k) / math.sqrt(e)
    if cfg.position == "alibi":
        t = x_BTD.shape[1]
        s = s - alibi_slopes(h)[None, :, None, None] * np.abs(np.arange(t)[:, None] - np.arange(t)[None, :])
    s = np.where(m[:, None], s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    y = np.einsum("bthe,hed->btd", np.einsum("bhts,bshe->bthe", w, v), p["wo"])
    return y + p["bo"] if "bo" in p else y


def activation(kind: str, x):
    if kind == "gelu":
        return x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(f"unknown activation {kind!r}")


def mlp(cfg, p, x):
    hid = x @ p["w1"] + (p["b1"] if "b1" in p else 0.0)
    if cfg.activation in ("swiglu", "geglu"):  # gate = x w1, up = x w3
        up = x @ p["w3"] + (p["b3"] if "b3" in p else 0.0)
        gate = hid / (1 + np.exp(-hid)) if cfg.activation == "swiglu" else activation("gelu", hid)
        act = gate * up
    else:
        act = activation(cfg.activation, hid)
    return act @ p["w2"] + (p["b2"] if "b2" in p else 0.0)


def forward(cfg, params, tokens_BT, prefix_len=None) -> np.ndarray:
    """(B, T, V) float64 logits. GPT-2 style: token (+ learned or sinusoidal position) embedding; pre-norm
    blocks x + attn(norm(x)), x + mlp(norm(x)) and a final norm, or post-norm blocks norm(x + attn(x)),
    norm(x + mlp(x)) and no final norm; tied (wte^T) or untied (lm_head) unembedding."""
    check_supported(cfg)
    P = to_numpy(params)
    eps = NORM_EPS[cfg.norm] if cfg.norm_eps is None else cfg.norm_eps
    norm = {
        "none": lambda x, p: x,
        "layernorm": lambda x, p: layer_norm(x, p, eps),
        "rmsnorm": lambda x, p: rms_norm(x, p, eps),
    }[cfg.norm]
    tokens_BT = np.asarray(tokens_BT)
    t = tokens_BT.shape[1]
    x = P["wte"][tokens_BT]
    if cfg.position == "learned":
        if t > cfg.max_len:
            raise ValueError(f"sequence length {t} exceeds model.max_len={cfg.max_len} (learned positions)")
        x = x + P["wpe"][:t]
    if cfg.position == "sinusoidal":
        x = x * np.sqrt(cfg.d_model) + sinusoidal(t, cfg.d_model)  # Vaswani et al. 2017, section 3.4
    m = mask(cfg.mask, t, prefix_len)
    for i in range(cfg.n_layers):
        blk = P[f"block_{i}"]
        if cfg.norm_placement == "post":
            x = norm(x + attention(cfg, blk["attn"], x, m), blk.get("norm1"))
            x = norm(x + mlp(cfg, blk["mlp"], x), blk.get("norm2"))
        else:
            x = x + attention(cfg, blk["attn"], norm(x, blk.get("norm1")), m)
            x = x + mlp(cfg, blk["mlp"], norm(x, blk.get("norm2")))
    if cfg.norm_placement == "pre":
        x = norm(x, P.get("norm_f"))
    return x @ (P["wte"].T if cfg.tie_embeddings else P["lm_head"])


def greedy(cfg, params, prompt_BP, n: int) -> np.ndarray:
    """(B, P + n) int64: the prompt followed by `n` argmax tokens, each from a full forward pass (no cache)."""
    P = to_numpy(params)
    toks = np.asarray(prompt_BP, np.int64)
    for _ in range(n):
        nxt = np.argmax(forward(cfg, P, toks)[:, -1], -1)
        toks = np.concatenate([toks, nxt[:, None]], axis=1)
    return toks
