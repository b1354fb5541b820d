"""Quantization-aware training (Jacob et al. 2018; Krishnamoorthy 2018): the model trains on fake-quantized
weights, so the loss it minimizes is the loss of its own quantized version, and the straight-through
estimator passes the gradient to the float weights it keeps underneath.

`qat_forward` is a `forward` hook for the one training driver (lab.train.SweepSpec): each member's bit width is
its first extra hyperparameter (0 = float, an untouched control trained the same way), so several bit widths
and seeds train as one vmapped, jitted program. The scheme is symmetric per-channel (QAT_SCHEME).
"""

from __future__ import annotations

from lab.model import apply
from lab.quant.tree import Scheme, fake_quant_tree

QAT_SCHEME = Scheme(bits=8, symmetric=True, granularity="channel")  # bits come from the member


def qat_forward(cfg, params, batch, extra):
    """The logits of the model whose weights are fake-quantized at `extra[0]` bits (0: float)."""
    q = fake_quant_tree(params, extra[0], QAT_SCHEME)
    return apply(cfg, q, batch["inputs"], batch.get("prefix_len"))
