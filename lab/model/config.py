"""The model's one config: a frozen, hashable dataclass (a valid static argument to `jax.jit`) and a small
table of named presets.

Every architectural variant is a typed field whose allowed values are the keys of exactly one dispatch
dict in `lab.model.layers` (POSITIONAL, NORMS, ACTIVATIONS, MASKS, QKV_VARIANTS). A test keeps the
`Literal` types and the dicts in sync; later projects add a value to both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from lab.config import check

Position = Literal["none", "learned"]
Norm = Literal["layernorm", "none"]
Activation = Literal["gelu", "gelu_tanh", "relu"]
Mask = Literal["causal", "bidirectional", "prefix"]
# Project 4's Q/K/V ablations, applied to the three projections before attention:
#   swap_qk: queries come from the key projection and keys from the query projection (and so on);
#   zero_q: all queries are zero (uniform attention over the visible keys); zero_v: attention adds nothing;
#   tie_qk: queries are the key projection, so scores q_i.k_j = k_i.k_j are symmetric.
QKV = Literal["intact", "swap_qk", "swap_qv", "swap_kv", "zero_q", "zero_k", "zero_v", "tie_qk"]
DType = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-style decoder: token (+ position) embedding, `n_layers` blocks of attention and MLP with
    residual connections and pre-norm, a final norm and an (optionally tied) unembedding."""

    vocab_size: int = 256
    max_len: int = 64  # context length T; learned positions exist only for 0..max_len-1
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (multi-head); 1 = multi-query; between = grouped-query
    d_ff: int | None = None  # None = 4 * d_model
    position: Position = "learned"
    norm: Norm = "layernorm"
    activation: Activation = "gelu"
    mask: Mask = "causal"
    qkv: QKV = "intact"
    tie_embeddings: bool = True
    bias: bool = False
    init_std: float = 0.02
    dtype: DType = "float32"  # compute dtype; parameters are always float32

    def __post_init__(self):
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
        if self.qkv in ("swap_qk", "swap_qv", "tie_qk"):
            check(
                kv == self.n_heads,
                f"model.qkv={self.qkv} moves a projection between query and key/value heads, so it needs "
                f"model.n_kv_heads == model.n_heads ({self.n_heads}), got {kv}",
            )

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)


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
