"""The model's one config: a frozen, hashable dataclass (a valid static argument to `jax.jit`) and a small
table of named presets.

Every architectural variant is a typed field whose allowed values are the keys of exactly one dispatch
dict in `lab.model.layers` (POSITIONAL, NORMS, PLACEMENTS, ACTIVATIONS, MASKS, QKV_VARIANTS,
MLPS, MOE_DISPATCH). A test keeps the
`Literal` types and the dicts in sync; later projects add a value to both.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Literal

from lab.config import check, check_finite

Position = Literal["none", "sinusoidal", "learned", "rope", "alibi"]
Norm = Literal["layernorm", "rmsnorm", "none"]
# pre: x + f(norm(x)) (GPT-2) with a final norm; post: norm(x + f(x)) (Vaswani et al. 2017), no final norm
# (the last block already ends in a norm).
NormPlacement = Literal["pre", "post"]
# swiglu / geglu are gated (Shazeer 2020): three matrices instead of two, at a hidden size cut to 2/3
# (see ModelConfig.ff_dim) so that the MLP keeps its parameter count.
Activation = Literal["gelu", "gelu_tanh", "relu", "swiglu", "geglu"]
GATED_ACTIVATIONS = ("swiglu", "geglu")
Mask = Literal["causal", "bidirectional", "prefix"]
# Project 4's Q/K/V ablations, applied to the three projections before attention:
#   swap_qk: queries come from the key projection and keys from the query projection (and so on);
#   zero_q: all queries are zero (uniform attention over the visible keys); zero_v: attention adds nothing;
#   tie_qk: queries are the key projection, so scores q_i.k_j = k_i.k_j are symmetric.
QKV = Literal["intact", "swap_qk", "swap_qv", "swap_kv", "zero_q", "zero_k", "zero_v", "tie_qk"]
# Project 7: how attention is computed (lab.ops.long_attention); all four compute the same function.
#   naive: the whole (T, T) score matrix; blocked: key blocks with an online softmax, linear memory forward
#   and backward (FlashAttention-2's recipe); banded: sliding-window attention in O(T * window);
#   fused: jax.nn.dot_product_attention (XLA's, or cuDNN's flash attention on a GPU in bfloat16), without sinks.
AttentionImpl = Literal["naive", "blocked", "banded", "fused"]
DType = Literal["float32", "bfloat16"]
# Project 8: a block's MLP is one dense MLP or a mixture of experts (lab.ops.moe); an MoE layer's tokens go to
# their experts through fixed-capacity slots (dropped past them) or all of them (dropless, grouped matmuls).
MLPKind = Literal["dense", "moe"]
MoEDispatch = Literal["capacity", "dropless"]


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-style decoder: token (+ position) embedding, `n_layers` blocks of attention and MLP with
    residual connections and pre-norm (or post-norm), a final norm (pre-norm only) and an (optionally
    tied) unembedding."""

    vocab_size: int = 256
    max_len: int = 64  # context length T; learned positions exist only for 0..max_len-1
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (multi-head); 1 = multi-query; between = grouped-query
    d_ff: int | None = None  # None = 4 * d_model
    position: Position = "learned"
    norm: Norm = "layernorm"
    norm_placement: NormPlacement = "pre"
    norm_eps: float | None = (
        None  # added to the variance; None = the norm's usual value (LayerNorm 1e-5, RMSNorm 1e-6)
    )
    activation: Activation = "gelu"
    mask: Mask = "causal"
    qkv: QKV = "intact"
    # Project 7 (long context): the default (naive, no window, no sinks) is the plain causal model.
    attention: AttentionImpl = "naive"
    window: int | None = None  # sliding window: a query sees its last `window` positions (none = all)
    sinks: int = (
        0  # attention sinks (StreamingLLM): the first `sinks` positions stay visible beside the window
    )
    attn_block: int = 64  # keys per step (blocked) or queries per block (banded)
    tie_embeddings: bool = True
    bias: bool = False
    init_std: float = 0.02
    rope_theta: float = 10000.0  # RoPE base: pair i of a head rotates by position * theta^(-2i/head_dim)
    dtype: DType = "float32"  # compute dtype; parameters, optimizer state, logits and loss stay float32
    # Mixture of experts (project 8). mlp="moe" makes the MLP of every `moe_every`-th block (blocks
    # moe_every-1, 2*moe_every-1, ...; 1 = all) a router over `moe_experts` expert MLPs of ff_dim each, each
    # token going to its `moe_top_k` best. Capacity dispatch gives each expert
    # ceil(moe_capacity_factor * k * tokens / E) slots per batch. The router's auxiliary losses join the
    # training loss (lab.train.step.loss_fn) scaled by moe_balance_coef (Switch) and moe_z_coef (ST-MoE).
    mlp: MLPKind = "dense"
    moe_experts: int = 4
    moe_top_k: int = 1
    moe_capacity_factor: float = 1.25
    moe_dispatch: MoEDispatch = "capacity"
    moe_every: int = 1
    moe_balance_coef: float = 1e-2
    moe_z_coef: float = 1e-3

    def __post_init__(self):
        check_finite(self, "model.")
        for name, allowed in _literal_fields().items():  # before any compilation, with the allowed values
            value = getattr(self, name)
            check(
                value in allowed,
                f"model.{name}={value!r} is not a known variant; allowed: {', '.join(map(repr, allowed))}",
            )
        for name in ("vocab_size", "max_len", "n_layers", "d_model", "n_heads"):
            check(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        check(
            self.d_model % self.n_heads == 0,
            f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})",
        )
        kv = self.kv_heads
        check(
            1 <= kv <= self.n_heads and self.n_heads % kv == 0,
            f"model.n_kv_heads ({kv}) must divide model.n_heads ({self.n_heads})",
        )
        check(self.d_ff is None or self.d_ff >= 1, f"model.d_ff must be >= 1, got {self.d_ff}")
        check(self.init_std > 0, f"model.init_std must be > 0, got {self.init_std}")
        check(
            self.norm_eps is None or 0 < self.norm_eps < 1,
            f"model.norm_eps must be in (0, 1) (or none for the norm's default), got {self.norm_eps}",
        )
        check(self.rope_theta > 1, f"model.rope_theta must be > 1, got {self.rope_theta}")
        check(
            not (self.norm_placement == "post" and self.norm == "none"),
            "model.norm_placement='post' needs a norm to place; with model.norm='none' use "
            "model.norm_placement='pre' (allowed norms for post: layernorm, rmsnorm)",
        )
        check(
            self.position != "rope" or self.head_dim % 2 == 0,
            f"model.position='rope' rotates pairs of head dimensions, so model.d_model / model.n_heads "
            f"must be even, got {self.d_model} / {self.n_heads} = {self.head_dim}",
        )
        self._check_long_context()
        self._check_moe()
        if self.qkv in ("swap_qk", "swap_qv", "tie_qk"):
            check(
                kv == self.n_heads,
                f"model.qkv={self.qkv} moves a projection between query and key/value heads, so it needs "
                f"model.n_kv_heads == model.n_heads ({self.n_heads}), got {kv}",
            )

    def _check_long_context(self) -> None:
        w, k = self.window, self.sinks
        check(w is None or w >= 1, f"model.window must be >= 1 (or none for full attention), got {w}")
        check(self.attn_block >= 1, f"model.attn_block must be >= 1, got {self.attn_block}")
        check(k >= 0, f"model.sinks must be >= 0, got {k}")
        check(k == 0 or w is not None, f"model.sinks={k} needs a model.window (sinks are kept beside it)")
        check(w is None or k <= w, f"model.sinks ({k}) must be <= model.window ({w})")
        check(
            self.attention != "banded" or w is not None,
            "model.attention='banded' computes a sliding window: set model.window",
        )
        special = self.attention != "naive" or w is not None
        check(
            not special or self.mask == "causal",
            f"model.attention={self.attention!r} / model.window are causal: model.mask must be 'causal', "
            f"got {self.mask!r}",
        )
        check(
            not (self.attention == "blocked" and k and self.position in ("rope", "alibi")),
            "model.attention='blocked' does not renumber sink positions; with sinks and rope/alibi use "
            "model.attention='naive' or 'banded'",
        )
        check(
            not (self.attention == "fused" and k),
            f"model.attention='fused' (jax.nn.dot_product_attention) has no attention sinks; with "
            f"model.sinks={k} use model.attention='naive', 'blocked' or 'banded'",
        )

    def _check_moe(self):
        e, k = self.moe_experts, self.moe_top_k
        check(e >= 1, f"model.moe_experts must be >= 1, got {e}")
        check(1 <= k <= e, f"model.moe_top_k must be in [1, model.moe_experts={e}], got {k}")
        cf = self.moe_capacity_factor
        check(cf > 0, f"model.moe_capacity_factor must be > 0, got {cf}")
        check(self.moe_every >= 1, f"model.moe_every must be >= 1, got {self.moe_every}")
        for name in ("moe_balance_coef", "moe_z_coef"):
            check(getattr(self, name) >= 0, f"model.{name} must be >= 0, got {getattr(self, name)}")
        check(
            self.mlp != "moe" or self.moe_every <= self.n_layers,
            f"model.mlp='moe' with model.moe_every={self.moe_every} makes no block of model.n_layers="
            f"{self.n_layers} a mixture of experts; use moe_every <= n_layers (1 = every block)",
        )

    def is_moe_block(self, layer: int) -> bool:
        """Whether block `layer` (0-based) has a mixture-of-experts MLP."""
        return self.mlp == "moe" and layer % self.moe_every == self.moe_every - 1

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_layers) if self.is_moe_block(i))

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def gated(self) -> bool:
        return self.activation in GATED_ACTIVATIONS

    @property
    def ff_dim(self) -> int:
        """The MLP hidden size. `d_ff` (default 4 * d_model) is the size of a plain two-matrix MLP; a gated
        MLP has three d_model x hidden matrices, so it gets round(2 * d_ff / 3) to keep the parameter count:
        |3 d round(2f/3) - 2 d f| = 3 d |round(2f/3) - 2f/3| <= d_model per block (exact when 3 divides f)."""
        f = 4 * self.d_model if self.d_ff is None else self.d_ff
        return max(1, round(2 * f / 3)) if self.gated else f

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)


@functools.cache
def _literal_fields() -> dict[str, tuple]:
    hints = typing.get_type_hints(ModelConfig)
    return {n: typing.get_args(t) for n, t in hints.items() if typing.get_origin(t) is Literal}


# Named sizes. A preset changes sizes only, never code paths.
PRESETS: dict[str, ModelConfig] = {
    # seconds on CPU: what the tests train
    "smoke": ModelConfig(max_len=16, n_layers=1, d_model=32, n_heads=2),
    # minutes on a 2-core CPU
    "cpu": ModelConfig(max_len=64, n_layers=2, d_model=64, n_heads=4),
    # nanoGPT's shakespeare_char CPU recipe (0.8M parameters at vocabulary 65)
    "nanogpt-cpu": ModelConfig(max_len=64, n_layers=4, d_model=128, n_heads=4),
    # one accelerator
    "gpu": ModelConfig(max_len=256, n_layers=6, d_model=384, n_heads=6, dtype="bfloat16"),
}
