"""Generation with the samplers of `lab.ops.sampling`, recording what happened at every step.

`sample_trace` generates from a batch of prompts and returns, per step and row: the token, its
probability under the distribution it was drawn from and under the model itself (after the repetition
penalty, at temperature 1, before filters), the entropy of the distribution before and after
the filters, and the top-n tokens with their probabilities before and after filtering. The dashboard and
project 5's experiment are drawn from these records.

Shapes are static so one program serves every request: the token buffer is (B, max_len + max_new); the
prompt length and the number of new tokens are traced values, and each step runs the model on the
last `max_len` tokens (no KV cache here: project 6's cache makes decoding incremental). Sampling knobs
may differ per row (a (B,) array each), which is how a whole grid of settings runs as one batch.

"before" is softmax of the logits after the repetition penalty and temperature; "after" is what the
token is drawn from, after top-k, top-p and min-p (at temperature 0: all mass on the argmax).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lab.infer.generate import window_logits
from lab.model import ModelConfig
from lab.ops import sampling as S


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "top_n"))
def _trace(cfg: ModelConfig, params, prompt_BW, prompt_len, n_new, sparams, key, *, max_new: int, top_n: int):
    b, w = prompt_BW.shape  # w == cfg.max_len; the first prompt_len columns hold the prompt
    total = w + max_new
    buf = jnp.zeros((b, total), jnp.int32).at[:, :w].set(prompt_BW)
    t = jnp.broadcast_to(jnp.asarray(sparams.temperature, jnp.float32).reshape(-1), (b,))
    rec = {
        "token": jnp.zeros((max_new, b), jnp.int32),
        "prob": jnp.zeros((max_new, b), jnp.float32),
        "model_prob": jnp.zeros((max_new, b), jnp.float32),
        "entropy_before": jnp.zeros((max_new, b), jnp.float32),
        "entropy_after": jnp.zeros((max_new, b), jnp.float32),
        "kept": jnp.zeros((max_new, b), jnp.int32),
        "top_ids": jnp.zeros((max_new, b, top_n), jnp.int32),
        "top_before": jnp.zeros((max_new, b, top_n), jnp.float32),
        "top_after": jnp.zeros((max_new, b, top_n), jnp.float32),
    }

    def body(i, carry):
        buf, rec, key = carry
        cur = prompt_len + i
        logits = window_logits(cfg, params, buf, cur, w)
        ctx_mask = jnp.arange(total)[None, :] < cur
        penalized, filtered = S.process_logits(logits, sparams, buf, jnp.broadcast_to(ctx_mask, buf.shape))
        scaled = penalized / jnp.where(t > 0, t, 1.0)[:, None]
        greedy = jnp.argmax(penalized, axis=-1)
        after_logits = jnp.where(
            t[:, None] > 0, filtered, jnp.where(jax.nn.one_hot(greedy, logits.shape[-1]) > 0, 0.0, -jnp.inf)
        )
        key, sub = jax.random.split(key)
        tok = S.sample(sub, logits, sparams, buf, jnp.broadcast_to(ctx_mask, buf.shape))
        before, after = jax.nn.softmax(scaled, -1), jax.nn.softmax(after_logits, -1)
        top_before, top_ids = jax.lax.top_k(before, top_n)
        row = {
            "token": tok,
            "prob": jnp.take_along_axis(after, tok[:, None], -1)[:, 0],
            "model_prob": jnp.take_along_axis(jax.nn.softmax(penalized, -1), tok[:, None], -1)[:, 0],
            "entropy_before": S.entropy(scaled),
            "entropy_after": S.entropy(after_logits),
            "kept": jnp.sum(jnp.isfinite(after_logits), -1).astype(jnp.int32),
            "top_ids": top_ids.astype(jnp.int32),
            "top_before": top_before,
            "top_after": jnp.take_along_axis(after, top_ids, -1),
        }
        rec = {k: rec[k].at[i].set(row[k]) for k in rec}
        buf = jax.lax.dynamic_update_slice(buf, tok[:, None], (0, cur))
        return buf, rec, key

    buf, rec, _ = jax.lax.fori_loop(0, n_new, body, (buf, rec, key))
    return buf, rec


def sample_trace(
    cfg: ModelConfig,
    params,
    prompt_BP,
    n_new: int,
    sparams: S.SamplingParams | None = None,
    seed: int = 0,
    max_new: int = 256,
    top_n: int = 10,
) -> dict[str, np.ndarray]:
    """Generate `n_new` (<= max_new) tokens after each row of `prompt_BP` (B, P), recording every step.

    A prompt longer than cfg.max_len keeps its last max_len tokens (all the model can see). Returns numpy
    arrays with the batch first: "tokens" (B, n_new) and, per step, "prob", "model_prob", "entropy_before",
    "entropy_after", "kept" (B, n_new) and "top_ids", "top_before", "top_after" (B, n_new, top_n).
    """
    if cfg.mask != "causal":
        raise ValueError(f"generation needs a causal model, got model.mask={cfg.mask!r}")
    sparams = S.SamplingParams() if sparams is None else sparams
    prompt = np.asarray(prompt_BP, dtype=np.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, length >= 1) token ids, got shape {prompt.shape}")
    if not 0 <= n_new <= max_new:
        raise ValueError(f"n_new must be in [0, {max_new}], got {n_new}")
    prompt = prompt[:, -cfg.max_len :]
    p = prompt.shape[1]
    padded = np.zeros((prompt.shape[0], cfg.max_len), np.int32)
    padded[:, :p] = prompt
    sp = S.SamplingParams(
        *(jnp.asarray(x, jnp.float32 if i != 1 else jnp.int32) for i, x in enumerate(sparams))
    )
    _, rec = _trace(
        cfg, params, jnp.asarray(padded), jnp.int32(p), jnp.int32(n_new), sp, jax.random.PRNGKey(seed),
        max_new=max_new, top_n=min(top_n, cfg.vocab_size),
    )  # fmt: skip
    out = {
        ("tokens" if k == "token" else k): np.swapaxes(np.asarray(v)[:n_new], 0, 1) for k, v in rec.items()
    }
    return out
