"""Generation with the sampler chain of `lab.ops.sampling`, recording what happened at every step.

`sample_trace` generates from a batch of prompts and returns, per step and row: the token, its
probability under the distribution it was drawn from and under the model itself (after the repetition
penalty, at temperature 1, before filters), the entropy of the distribution before and after
the filters, and the top-n tokens with their probabilities before and after filtering. The dashboard and
project 5's experiment are drawn from these records.

Shapes are static so one program serves every request: the token buffer is (B, max_len + max_new); the
prompt length and the number of new tokens are traced values. Sampling knobs may differ per row (a (B,)
array each), which is how a whole grid of settings runs as one batch. The chain is a table
(`lab.ops.sampling.SAMPLERS` unless another is given), so a new filter needs no change here.

Two ways to get each step's logits, which give the same tokens (tests/infer/test_sampler.py):
  cached=True   (the default, the dashboard's) while the sequence fits in the context, a KV cache
                (project 6, lab.infer.cached): the prompt, padded to max_len, is prefilled once and each
                new token is one decode step; past the context, the windowed recompute below.
  cached=False  every step runs the model on the last `max_len` tokens (positions 0..max_len-1).
Past the context no cache can be exact: the window's positions shift by one every step, so every key and
value of the window changes. A sliding-window (ring) cache keeps the keys and values each position got
when it was decoded with its own earlier context, which is another model (sliding-window attention) with
more than one layer; and learned positions end at max_len. So the cache serves the first max_len positions
and the windowed recompute the rest.

"before" is softmax of the logits after the repetition penalty and temperature; "after" is what the
token is drawn from, after the filters (at temperature 0: all mass on the argmax).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lab.infer.generate import window_logits
from lab.model import ModelConfig, apply_cached, init_cache
from lab.ops import sampling as S

RECORDS = {  # name: dtype, per step and row (top_* have a further top_n axis)
    "token": jnp.int32, "prob": jnp.float32, "model_prob": jnp.float32, "entropy_before": jnp.float32,
    "entropy_after": jnp.float32, "kept": jnp.int32, "top_ids": jnp.int32, "top_before": jnp.float32,
    "top_after": jnp.float32,
}  # fmt: skip


def _step(logits, buf, cur, knobs, key, table, top_n):
    """(token (B,), this step's records): sample from `logits` (B, V) after `cur` tokens of `buf`."""
    total = buf.shape[1]
    t = jnp.broadcast_to(jnp.asarray(knobs["temperature"], jnp.float32).reshape(-1), (buf.shape[0],))
    ctx_mask = jnp.broadcast_to(jnp.arange(total)[None, :] < cur, buf.shape)
    penalized, filtered = S.process_logits(logits, knobs, buf, ctx_mask, table)
    scaled = penalized / jnp.where(t > 0, t, 1.0)[:, None]
    greedy = jnp.argmax(penalized, axis=-1)
    after_logits = jnp.where(
        t[:, None] > 0, filtered, jnp.where(jax.nn.one_hot(greedy, logits.shape[-1]) > 0, 0.0, -jnp.inf)
    )
    tok = S.sample(key, logits, knobs, buf, ctx_mask, table)
    before, after = jax.nn.softmax(scaled, -1), jax.nn.softmax(after_logits, -1)
    top_before, top_ids = jax.lax.top_k(before, top_n)
    return tok, {
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


@functools.partial(jax.jit, static_argnames=("cfg", "max_new", "top_n", "table", "cached"))
def _trace(cfg: ModelConfig, params, prompt_BW, prompt_len, n_new, knobs, key, *, max_new: int, top_n: int,
           table=S.SAMPLERS, cached: bool = False):  # fmt: skip
    b, w = prompt_BW.shape  # w == cfg.max_len; the first prompt_len columns hold the prompt
    buf = jnp.zeros((b, w + max_new), jnp.int32).at[:, :w].set(prompt_BW)
    rec = {
        k: jnp.zeros((max_new, b, top_n) if k.startswith("top") else (max_new, b), d)
        for k, d in RECORDS.items()
    }

    def record(i, carry, logits):
        buf, rec, key = carry[:3]
        key, sub = jax.random.split(key)
        tok, row = _step(logits, buf, prompt_len + i, knobs, sub, table, top_n)
        rec = {k: rec[k].at[i].set(row[k]) for k in rec}
        return jax.lax.dynamic_update_slice(buf, tok[:, None], (0, prompt_len + i)), rec, key

    if not cached:
        body = lambda i, c: record(i, c, window_logits(cfg, params, c[0], prompt_len + i, w))  # noqa: E731
        buf, rec, _ = jax.lax.fori_loop(0, n_new, body, (buf, rec, key))
        return buf, rec

    # Prefill the padded window once; then the cache holds positions 0..prompt_len-1 (the rows past
    # them hold padding, masked by the cache's length until decode steps overwrite them).
    logits_BWV, cache = apply_cached(cfg, params, prompt_BW, init_cache(cfg, b, w))
    first = jax.lax.dynamic_index_in_dim(logits_BWV, prompt_len - 1, 1, keepdims=False).astype(jnp.float32)
    cache = cache.replace(length=jnp.asarray(prompt_len, jnp.int32))

    def body(i, carry):
        buf, rec, key, cache, logits = carry
        cur = prompt_len + i  # tokens so far; the next one's logits are at position cur - 1

        def decode():  # the previous token (position cur - 1 < w) through the cache
            last = jax.lax.dynamic_slice(buf, (0, cur - 1), (b, 1))
            out, new_cache = apply_cached(cfg, params, last, cache)
            return out[:, 0].astype(jnp.float32), new_cache

        def recompute():  # past the context: the windowed model, as cached=False does
            return window_logits(cfg, params, buf, cur, w).astype(jnp.float32), cache

        branch = jnp.where(i == 0, 0, jnp.where(cur <= w, 1, 2))
        logits, cache = jax.lax.switch(branch, [lambda: (logits, cache), decode, recompute])
        return (*record(i, (buf, rec, key), logits), cache, logits)

    buf, rec, *_ = jax.lax.fori_loop(0, n_new, body, (buf, rec, key, cache, first))
    return buf, rec


def sample_trace(
    cfg: ModelConfig,
    params,
    prompt_BP,
    n_new: int,
    knobs: dict | None = None,
    seed: int = 0,
    max_new: int = 256,
    top_n: int = 10,
    *,
    table=S.SAMPLERS,
    cached: bool = True,
) -> dict[str, np.ndarray]:
    """Generate `n_new` (<= max_new) tokens after each row of `prompt_BP` (B, P), recording every step.

    `knobs` ({name: scalar or (B,) values}, lab.ops.sampling.knobs) set the steps of `table`; `cached`
    chooses how logits are computed (module docstring; the same tokens either way). A prompt longer than
    cfg.max_len keeps its last max_len tokens (all the model can see). Returns numpy arrays with the
    batch first: "tokens" (B, n_new) and, per step, "prob", "model_prob", "entropy_before",
    "entropy_after", "kept" (B, n_new) and "top_ids", "top_before", "top_after" (B, n_new, top_n).
    """
    if cfg.mask != "causal":
        raise ValueError(f"generation needs a causal model, got model.mask={cfg.mask!r}")
    knobs = S.knobs(table, **(knobs or {}))
    prompt = np.asarray(prompt_BP, dtype=np.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (batch, length >= 1) token ids, got shape {prompt.shape}")
    if not 0 <= n_new <= max_new:
        raise ValueError(f"n_new must be in [0, {max_new}], got {n_new}")
    prompt = prompt[:, -cfg.max_len :]
    p = prompt.shape[1]
    padded = np.zeros((prompt.shape[0], cfg.max_len), np.int32)
    padded[:, :p] = prompt
    values = {k.name: jnp.asarray(knobs[k.name], jnp.int32 if k.integer else jnp.float32) for k in table}
    _, rec = _trace(
        cfg, params, jnp.asarray(padded), jnp.int32(p), jnp.int32(n_new), values, jax.random.PRNGKey(seed),
        max_new=max_new, top_n=min(top_n, cfg.vocab_size), table=table, cached=cached,
    )  # fmt: skip
    return {
        ("tokens" if k == "token" else k): np.swapaxes(np.asarray(v)[:n_new], 0, 1) for k, v in rec.items()
    }
