"""Statistics of attention probabilities (NumPy, float64): how spread out each query's row is, and how
much weight it puts on the key a fixed distance back. Computed by `run` from captured weights
(lab.model.transformer.capture), so the numbers written are those of these definitions."""

from __future__ import annotations

import numpy as np


def row_entropy(w) -> np.ndarray:
    """Entropy (nats) of each row of probabilities along the last axis, with 0 log 0 = 0: (..., T, S) ->
    (..., T). A uniform row over n keys has entropy ln n; a one-hot row has 0."""
    w = np.asarray(w, np.float64)
    return -np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1.0)), 0.0), axis=-1)


def weight_at_offset(w, k: int) -> np.ndarray:
    """The weight query t puts on key t - k, for t = k..T-1: (..., T, T) -> (..., T - k). With k = 1, a
    previous-token head's score."""
    w = np.asarray(w)
    t = np.arange(k, w.shape[-1])
    return w[..., t, t - k]


def head_scores(w, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per head, the mean over sequences and queries of the row entropy and of the weight on key t - k,
    from stacked attention weights (S, L, B, H, T, T) (seeds, layers, batch, heads, queries, keys), e.g.
    lab.model.transformer.stacked_attention's: two (S, L, H) arrays, (entropy, weight at offset k)."""
    return row_entropy(w).mean(axis=(2, 4)), weight_at_offset(w, k).mean(axis=(2, 4))
