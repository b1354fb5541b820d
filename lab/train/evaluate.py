"""Exact evaluation of trained parameters on whole datasets (not the random batches of `eval_step`).

`token_scores` runs a model over every row of an (N, T) array of inputs, in fixed-size chunks so one
compiled program serves any N, and returns each position's loss and whether its argmax was right.
`stream_windows` cuts a token stream into non-overlapping windows (nanoGPT's way of measuring a whole
validation split). Used by analyses that need a number over *all* of the validation data, e.g. bits per
byte across tokenizers, or exact-match accuracy on a held-out set.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lab import ops
from lab.model import ModelConfig, apply


@functools.partial(jax.jit, static_argnames=("cfg",))
def _scores(params, inputs, targets, *, cfg: ModelConfig):
    logits = apply(cfg, params, inputs).astype(jnp.float32)
    return ops.token_cross_entropy(logits, targets), jnp.argmax(logits, axis=-1) == targets


def token_scores(cfg: ModelConfig, params, inputs, targets, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(loss (N, T) float32 in nats, correct (N, T) bool) of `params` on every row of `inputs`/`targets`.

    Rows are processed `chunk` at a time; the last chunk is padded with copies of row 0 (and the padding
    dropped), so exactly one program is compiled per (cfg, T).
    """
    inputs, targets = np.asarray(inputs, np.int32), np.asarray(targets, np.int32)
    n = inputs.shape[0]
    losses, correct = [], []
    for i in range(0, n, chunk):
        x, y = inputs[i : i + chunk], targets[i : i + chunk]
        pad = chunk - x.shape[0]
        if pad:
            x = np.concatenate([x, np.repeat(inputs[:1], pad, 0)])
            y = np.concatenate([y, np.repeat(targets[:1], pad, 0)])
        loss, ok = _scores(params, jnp.asarray(x), jnp.asarray(y), cfg=cfg)
        losses.append(np.asarray(loss)[: chunk - pad])
        correct.append(np.asarray(ok)[: chunk - pad])
    return np.concatenate(losses), np.concatenate(correct)


def stream_windows(tokens, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (W, seq_len): the W = (len - 1) // seq_len non-overlapping windows."""
    tokens = np.asarray(tokens)
    w = (tokens.shape[0] - 1) // seq_len
    if w < 1:
        raise ValueError(f"a stream of {tokens.shape[0]} tokens is shorter than one window of {seq_len + 1}")
    idx = np.arange(w)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    windows = tokens[idx].astype(np.int32)
    return windows[:, :-1], windows[:, 1:]


def bits_per_byte(cfg: ModelConfig, params, tokens, n_bytes) -> float:
    """Bits per UTF-8 byte of `params` on a whole token stream (its `stream_windows` of cfg.max_len): the
    summed next-token loss in bits over the bytes the targets stand for, `n_bytes(ids)` (a tokenizer's
    n_bytes). The one measure that compares language models with different tokenizers."""
    inputs, targets = stream_windows(tokens, cfg.max_len)
    loss, _ = token_scores(cfg, params, inputs, targets)
    return float(loss.astype(np.float64).sum()) / n_bytes(targets.ravel()) / math.log(2)


def answer_accuracy(cfg: ModelConfig, params, examples, mask) -> tuple[float, float]:
    """(exact match, per-answer-token accuracy) on prompt/answer examples (`lab.data.tasks.PromptAnswer`'s
    (N, T + 1) ids and (N, T) answer-target mask). An example is exact when the argmax is right at every
    answer position under teacher forcing, i.e. when greedy decoding writes the whole answer."""
    _, correct = token_scores(cfg, params, examples[:, :-1], examples[:, 1:])
    return float(np.mean(np.all(correct | ~mask, axis=1))), float(correct[mask].mean())
