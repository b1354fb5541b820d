"""The transformer of `lab.model` written as a PyTorch `nn.Module` from our `ModelConfig` (not a copy of any
other implementation): the same parameter names and shapes as the JAX tree, loaded from it by
`from_params`, so a port is a pure function of the (Orbax-restored) parameters.

    module = from_params(cfg, params)                    # eval mode, float32, no gradients
    module = from_params(cfg, params, codes)             # weights held as int8 codes times a scale
    logits = module(tokens_BT)                           # (B, T, V)
    cache = module.new_cache(batch, size)                # a simple preallocated KV cache
    logits, cache = module(prompt_BP, cache)             # prefill, then one token at a time
    tokens = greedy(module, prompt_BP, n)                # argmax continuation through the cache

The arithmetic follows `lab.model` operation for operation (einsum projections with the (D, H, E) weight
layout, float32 statistics in the norms, scores scaled by 1/sqrt(E), masked with -inf before the softmax);
PyTorch chooses its own kernels and summation orders, which is what the ports measure. Supported variants:
those of `lab.port.numpy_ref.check_supported` with causal masking (positions none / sinusoidal / learned /
RoPE / ALiBi, all norms and placements, all activations, grouped-query heads, biases, tied or untied
unembedding). torch is the optional `[stacks]` extra and is imported by this module only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lab.port import numpy_ref


def _p(*shape):
    return nn.Parameter(torch.zeros(*shape), requires_grad=False)


class _Norm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.kind, self.d = cfg.norm, cfg.d_model
        d = self.d
        self.eps = numpy_ref.NORM_EPS[cfg.norm] if cfg.norm_eps is None else cfg.norm_eps
        if self.kind != "none":
            self.scale = _p(d)
        self.bias = _p(d) if self.kind == "layernorm" and cfg.bias else None

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, (self.d,), self.scale, self.bias, self.eps)
        if self.kind == "rmsnorm":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale
        return x


class _Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = cfg
        d, h, k, e = c.d_model, c.n_heads, c.kv_heads, c.head_dim
        self.wq, self.wk, self.wv, self.wo = _p(d, h, e), _p(d, k, e), _p(d, k, e), _p(h, e, d)
        if c.bias:
            self.bq, self.bk, self.bv, self.bo = _p(h, e), _p(k, e), _p(k, e), _p(d)
        if c.position == "alibi":
            self.register_buffer("slopes", torch.tensor(numpy_ref.alibi_slopes(h), dtype=torch.float32))

    def forward(self, x_BTD, rot, cache_kv=None, start: int = 0):
        c = self.cfg
        t = x_BTD.shape[1]
        q = torch.einsum("btd,dhe->bthe", x_BTD, self.wq)
        k = torch.einsum("btd,dke->btke", x_BTD, self.wk)
        v = torch.einsum("btd,dke->btke", x_BTD, self.wv)
        if c.bias:
            q, k, v = q + self.bq, k + self.bk, v + self.bv
        if rot is not None:  # RoPE: interleaved pairs rotated by (cos, sin) of positions start..start+t-1
            q, k = _rotate(q, *rot), _rotate(k, *rot)
        if cache_kv is not None:  # write this step's keys/values, attend to every cached position
            ck, cv = cache_kv
            ck[:, start : start + t] = k
            cv[:, start : start + t] = v
            k, v = ck[:, : start + t], cv[:, : start + t]
        s_len = k.shape[1]
        rep = c.n_heads // c.kv_heads
        if rep > 1:  # query head i reads key/value head i // rep
            k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bthe,bshe->bhts", q, k) / math.sqrt(c.head_dim)
        q_pos = torch.arange(start, start + t)[:, None]
        k_pos = torch.arange(s_len)[None, :]
        if c.position == "alibi":
            s = s - self.slopes[:, None, None] * (q_pos - k_pos).abs().to(s.dtype)
        s = s.masked_fill(k_pos > q_pos, float("-inf"))  # causal
        o = torch.einsum("bhts,bshe->bthe", torch.softmax(s, dim=-1), v)
        y = torch.einsum("bthe,hed->btd", o, self.wo)
        return y + self.bo if c.bias else y


def _rotate(x_BTHE, cos_T1P, sin_T1P):
    x0, x1 = x_BTHE[..., 0::2], x_BTHE[..., 1::2]
    return torch.stack([x0 * cos_T1P - x1 * sin_T1P, x0 * sin_T1P + x1 * cos_T1P], dim=-1).flatten(-2)


class _MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = cfg
        d, f = c.d_model, c.ff_dim
        self.w1, self.w2 = _p(d, f), _p(f, d)
        if c.gated:
            self.w3 = _p(d, f)
        if c.bias:
            self.b1, self.b2 = _p(f), _p(d)
            if c.gated:
                self.b3 = _p(f)

    def forward(self, x):
        c = self.cfg
        hid = x @ self.w1 + self.b1 if c.bias else x @ self.w1
        if c.gated:
            up = x @ self.w3 + self.b3 if c.bias else x @ self.w3
            act = (F.silu(hid) if c.activation == "swiglu" else F.gelu(hid)) * up
        elif c.activation == "relu":
            act = F.relu(hid)
        else:
            act = F.gelu(hid, approximate="tanh" if c.activation == "gelu_tanh" else "none")
        y = act @ self.w2
        return y + self.b2 if c.bias else y


class _Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.post = cfg.norm_placement == "post"
        self.norm1, self.attn, self.norm2, self.mlp = _Norm(cfg), _Attention(cfg), _Norm(cfg), _MLP(cfg)

    def forward(self, x, rot, cache_kv=None, start: int = 0):
        if self.post:
            x = self.norm1(x + self.attn(x, rot, cache_kv, start))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x), rot, cache_kv, start)
        return x + self.mlp(self.norm2(x))


class TorchTransformer(nn.Module):
    """GPT-style decoder with `lab.model`'s parameters; `forward(tokens)` -> logits, or with a cache
    (`new_cache`) `forward(tokens, cache)` -> (logits, cache) for the positions after the cached ones."""

    def __init__(self, cfg):
        super().__init__()
        numpy_ref.check_supported(cfg)
        if cfg.mask != "causal":
            raise ValueError(f"the PyTorch port is causal only, got model.mask={cfg.mask!r}")
        self.cfg = cfg
        self.wte = _p(cfg.vocab_size, cfg.d_model)
        if cfg.position == "learned":
            self.wpe = _p(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        if cfg.norm_placement == "pre":
            self.norm_f = _Norm(cfg)
        if not cfg.tie_embeddings:
            self.lm_head = _p(cfg.d_model, cfg.vocab_size)
        # position tables for 0..max_len-1, computed in float64 and stored float32
        if cfg.position == "sinusoidal":
            self.register_buffer("pe", torch.tensor(numpy_ref.sinusoidal(cfg.max_len, cfg.d_model)).float())
        if cfg.position == "rope":
            e = cfg.head_dim
            ang = np.arange(cfg.max_len)[:, None] * cfg.rope_theta ** (-np.arange(0, e, 2) / e)
            self.register_buffer("rope_cos", torch.tensor(np.cos(ang)).float())
            self.register_buffer("rope_sin", torch.tensor(np.sin(ang)).float())

    def new_cache(self, batch: int, size: int) -> dict:
        """An empty KV cache of `size` positions: per layer (k, v) of shape (B, size, K, E), and its length."""
        c = self.cfg
        if size > c.max_len:
            raise ValueError(f"a cache of {size} positions exceeds model.max_len={c.max_len}")
        shape = (batch, size, c.kv_heads, c.head_dim)
        kv = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(c.n_layers)]
        return {"kv": kv, "length": 0}

    def forward(self, tokens_BT, cache: dict | None = None):
        c = self.cfg
        t = tokens_BT.shape[1]
        start = 0 if cache is None else cache["length"]
        if start + t > c.max_len:
            raise ValueError(f"positions up to {start + t} exceed model.max_len={c.max_len}")
        x = self.wte[tokens_BT]
        if c.position == "learned":
            x = x + self.wpe[start : start + t]
        elif c.position == "sinusoidal":
            x = x * math.sqrt(c.d_model) + self.pe[start : start + t]
        rot = None
        if c.position == "rope":
            rot = (self.rope_cos[start : start + t, None, :], self.rope_sin[start : start + t, None, :])
        for i, blk in enumerate(self.blocks):
            x = blk(x, rot, None if cache is None else cache["kv"][i], start)
        if c.norm_placement == "pre":
            x = self.norm_f(x)
        logits = x @ (self.wte.T if c.tie_embeddings else self.lm_head)
        if cache is None:
            return logits
        return logits, {"kv": cache["kv"], "length": start + t}


def state_dict_of(params) -> dict:
    """Our parameter tree as a PyTorch state dict: block_i -> blocks.i, nested keys joined with dots."""
    out = {}

    def walk(tree, prefix):
        for k, v in tree.items():
            name = f"blocks.{k[len('block_') :]}" if k.startswith("block_") else k
            if isinstance(v, dict):
                walk(v, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = torch.from_numpy(np.array(v, np.float32))

    walk(params, "")
    return out


class _Dequant(nn.Module):
    """A weight stored as integer codes, computed as float32(codes) * scale (a parametrization)."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float32)))

    def forward(self, codes):
        return codes.to(torch.float32) * self.scale


def from_params(cfg, params, codes: dict | None = None) -> TorchTransformer:
    """The PyTorch module for `cfg` holding `params` (float32), in eval mode. Every parameter must be
    present and every one of the tree used (a strict load): nothing stays at its zero initialization.

    `codes` ({tree path: (int8 codes, scale)} in each leaf's layout, `lab.quant.tree.leaf_codes`) stores
    those weights as int8 tensors dequantized on use (`torch.nn.utils.parametrize`), so the module (and an
    ONNX file exported from it) holds one byte per weight; each must equal its leaf of `params` exactly."""
    module = TorchTransformer(cfg)
    sd = state_dict_of(params)
    buffers = {k: v for k, v in module.state_dict().items() if k not in dict(module.named_parameters())}
    module.load_state_dict(sd | buffers, strict=True)
    for path, (q, scale) in (codes or {}).items():
        name = next(iter(state_dict_of(_nest(path, 0.0))))
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        deq = _Dequant(scale)
        q = torch.from_numpy(np.array(q, copy=True))
        if q.dtype != torch.int8 or not torch.equal(deq(q), sd[name]):
            raise ValueError(f"{path}: the codes times the scale are not the parameter the tree holds")
        parametrize.register_parametrization(owner, attr, deq, unsafe=True)
        owner.parametrizations[attr].original = nn.Parameter(q, requires_grad=False)
    return module.eval()


def _nest(path: str, value) -> dict:
    """{"a": {"b": value}} for the path "a/b"."""
    out = value
    for part in reversed(path.split("/")):
        out = {part: out}
    return out


@torch.inference_mode()
def logits(module: TorchTransformer, tokens_BT) -> np.ndarray:
    """(B, T, V) float32 NumPy logits of an eager (or compiled) module."""
    return module(torch.as_tensor(np.asarray(tokens_BT), dtype=torch.long)).numpy()


@torch.inference_mode()
def greedy(module: TorchTransformer, prompt_BP, n: int) -> np.ndarray:
    """(B, P + n) int64: prompt and `n` argmax tokens, the prompt prefilled into a KV cache and each new
    token decoded from the cache (one position per call)."""
    toks = torch.as_tensor(np.asarray(prompt_BP), dtype=torch.long)
    cache = module.new_cache(toks.shape[0], toks.shape[1] + n)
    out, cache = module(toks, cache)
    new = []
    for i in range(n):
        nxt = out[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        if i + 1 < n:
            out, cache = module(nxt, cache)
    return torch.cat([toks, *new], 1).numpy()
