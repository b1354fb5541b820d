"""How far one stack's logits are from the float64 reference's, in NumPy (no framework):

    max_abs_diff   max |logits - reference| over every position and vocabulary entry
    kl             mean over positions of KL(p_ref || p_stack) in nats, both softmaxes in float64
    top1           fraction of positions whose argmax equals the reference's
    first_divergence(a, b)  the first generated position where two continuations differ (None if none)
and greedy decoding through any fixed-shape forward (`greedy_fixed`), so a compiled stack needs one shape.
"""

from __future__ import annotations

import numpy as np


def log_softmax(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def max_abs_diff(a, ref) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(ref, np.float64))))


def kl(ref, a) -> float:
    """Mean over positions of KL(softmax(ref) || softmax(a)), nats."""
    lp, lq = log_softmax(ref), log_softmax(a)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), -1)))


def top1(a, ref) -> float:
    return float(np.mean(np.argmax(a, -1) == np.argmax(ref, -1)))


def first_divergence(tokens, ref_tokens, start: int) -> int | None:
    """The first generated index (0-based, after `start` prompt tokens) where any row of two (B, P + n)
    continuations differ; None if they are identical."""
    diff = np.any(np.asarray(tokens)[:, start:] != np.asarray(ref_tokens)[:, start:], axis=0)
    return int(np.argmax(diff)) if diff.any() else None


def greedy_fixed(forward, prompt_BP, n: int, pad: int = 0) -> np.ndarray:
    """(B, P + n) argmax continuation using `forward(tokens (B, P + n)) -> logits` on a fixed-shape buffer:
    the not-yet-generated positions hold `pad`, which a causal model's earlier positions never see."""
    prompt = np.asarray(prompt_BP)
    b, p = prompt.shape
    buf = np.full((b, p + n), pad, np.int64)
    buf[:, :p] = prompt
    for i in range(n):
        logits = np.asarray(forward(buf))
        buf[:, p + i] = np.argmax(logits[:, p + i - 1], -1)
    return buf
