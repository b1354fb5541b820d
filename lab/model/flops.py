"""Model FLOPs per token (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B).

A training step costs about 6 FLOPs per parameter per token (2 forward, 4 backward) for the matmuls
with weights, plus the attention score and value products, 12 * n_layers * T * d_model per token
(for causal attention XLA computes the full T x T product; the masked half is not skipped).
Embedding lookups are gathers, not matmuls; a tied unembedding *is* a matmul and is counted.

A mixture-of-experts block (model.mlp="moe") counts its *active* parameters: the router (d_model x E) and
the k experts each token is routed to, not all E (Fedus et al. 2021). What a step executes can be more:
capacity dispatch computes every slot, filled or not (capacity factor x k experts' worth per token).
"""

from __future__ import annotations

from lab.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: attention and MLP weights and the unembedding (in
    a mixture-of-experts block, the router and the k experts a token goes to)."""
    d, e = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * e * 2 + d * cfg.kv_heads * e * 2  # wq, wo; wk, wv
    mlp = 2 * d * cfg.ff_dim
    n_moe = len(cfg.moe_layers)  # 0 for a dense model
    moe = cfg.moe_top_k * mlp + d * cfg.moe_experts
    return (cfg.n_layers - n_moe) * (attn + mlp) + n_moe * (attn + moe) + d * cfg.vocab_size


def train_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    t = cfg.max_len if seq_len is None else seq_len
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * t * cfg.d_model


def forward_flops_per_token(cfg: ModelConfig, context: int) -> float:
    """A forward pass's third of `train_flops_per_token`: 2 FLOPs per matmul parameter, plus the attention
    score and value products over `context` positions (4 * n_layers * context * d_model)."""
    return 2.0 * matmul_params(cfg) + 4.0 * cfg.n_layers * context * cfg.d_model


def train_flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> float:
    t = cfg.max_len if seq_len is None else seq_len
    return train_flops_per_token(cfg, t) * batch_size * t


def equal_flops_steps(
    cfg: ModelConfig, reference: ModelConfig, steps: int, batch_size: int, multiple: int = 1
) -> int:
    """Training steps that give `cfg` the FLOPs `reference` gets in `steps` steps at the same batch size
    (a model with a larger vocabulary or more layers trains fewer steps), rounded to a multiple of
    `multiple` (e.g. the logging interval), and at least one multiple."""
    ratio = train_flops_per_step(reference, batch_size) / train_flops_per_step(cfg, batch_size)
    return max(multiple, int(round(steps * ratio / multiple)) * multiple)
