"""Generation for models trained with other objectives than causal LM (lab.data.objectives):

    generate_prefix(cfg, params, prompt_BP, n_new, key=..., temperature=...)       # prefix LM
    unmask(cfg, params, prompt_BP, n_new, mask_id, key=..., temperature=...)       # masked LM

A prefix LM reads the prompt as its bidirectional prefix (prefix_len = P) and continues causally: the same
recompute-everything loop as lab.infer.generate with the prefix length passed to the model. A masked LM
generates by iterative unmasking (Ghazvininejad et al. 2019, Mask-Predict, one position per step): the
continuation starts as `n_new` mask tokens; each step the model predicts every masked position, samples a
token at each, and commits the one it is most confident of (highest probability of its sampled token).

Both sample from the first `n_text` ids only (default: every id but a mask token, the last id when given),
so a model never emits the mask token. temperature == 0 is greedy. The buffer P + n_new must fit in
model.max_len (no sliding window: a bidirectional model has no "last window").
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lab.model import ModelConfig, apply


def _sample(logits_BV, key, temperature):
    """(tokens (B,), probability of each under the temperature's distribution (B,))."""
    greedy = temperature <= 0
    t = jnp.where(greedy, 1.0, temperature)
    logp = jax.nn.log_softmax(logits_BV / t, axis=-1)
    drawn = jax.random.categorical(key, logp, axis=-1)
    tok = jnp.where(greedy, jnp.argmax(logits_BV, -1), drawn).astype(jnp.int32)
    return tok, jnp.exp(jnp.take_along_axis(logp, tok[:, None], -1)[:, 0])


def _check(cfg: ModelConfig, prompt_BP, n_new: int, temperature: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if prompt_BP.ndim != 2 or prompt_BP.shape[1] < 1 or n_new < 1:
        raise ValueError(
            f"prompt must be (batch, length >= 1) token ids and n_new >= 1, got {prompt_BP.shape}"
        )
    if prompt_BP.shape[1] + n_new > cfg.max_len:
        raise ValueError(
            f"prompt ({prompt_BP.shape[1]}) + n_new ({n_new}) exceed model.max_len={cfg.max_len}"
        )


@functools.partial(jax.jit, static_argnames=("cfg", "n_new", "n_text"))
def _prefix(cfg, params, prompt_BP, n_new, n_text, temperature, key):
    b, p = prompt_BP.shape
    buf = jnp.zeros((b, p + n_new), jnp.int32).at[:, :p].set(prompt_BP.astype(jnp.int32))
    prefix = jnp.full((b,), p, jnp.int32)

    def body(i, carry):
        buf, key = carry
        logits = apply(cfg, params, buf, prefix if cfg.mask == "prefix" else None)[:, :, :n_text]
        key, sub = jax.random.split(key)
        tok, _ = _sample(jax.lax.dynamic_index_in_dim(logits, p + i - 1, 1, keepdims=False), sub, temperature)
        return jax.lax.dynamic_update_slice(buf, tok[:, None], (0, p + i)), key

    return jax.lax.fori_loop(0, n_new, body, (buf, key))[0]


def generate_prefix(cfg: ModelConfig, params, prompt_BP, n_new: int, *, key, temperature=0.0, n_text=None):
    """(B, P + n_new): the prompt and `n_new` tokens from a prefix LM (model.mask "prefix") that reads the
    prompt as its prefix, or from a causal LM (the same loop without a prefix)."""
    if cfg.mask not in ("prefix", "causal"):
        raise ValueError(f"generate_prefix needs a prefix or causal model, got model.mask={cfg.mask!r}")
    prompt_BP = jnp.asarray(prompt_BP)
    _check(cfg, prompt_BP, n_new, temperature)
    n_text = cfg.vocab_size if n_text is None else n_text
    return _prefix(cfg, params, prompt_BP, n_new, n_text, jnp.float32(temperature), key)


@functools.partial(jax.jit, static_argnames=("cfg", "n_new", "mask_id", "n_text"))
def _unmask(cfg, params, prompt_BP, n_new, mask_id, n_text, temperature, key):
    b, p = prompt_BP.shape
    buf = jnp.full((b, p + n_new), mask_id, jnp.int32).at[:, :p].set(prompt_BP.astype(jnp.int32))

    def body(i, carry):
        buf, key = carry
        logits = apply(cfg, params, buf)[:, :, :n_text]  # (B, N, n_text)
        key, sub = jax.random.split(key)
        n = buf.shape[1]
        tok, prob = _sample(logits.reshape(b * n, n_text), sub, temperature)
        tok, prob = tok.reshape(b, n), prob.reshape(b, n)
        prob = jnp.where(buf == mask_id, prob, -1.0)  # only still-masked positions compete
        pos = jnp.argmax(prob, axis=1)  # (B,)
        chosen = jnp.take_along_axis(tok, pos[:, None], 1)
        return buf.at[jnp.arange(b)[:, None], pos[:, None]].set(chosen), key

    return jax.lax.fori_loop(0, n_new, body, (buf, key))[0]


def unmask(
    cfg: ModelConfig, params, prompt_BP, n_new: int, mask_id: int, *, key, temperature=0.0, n_text=None
):
    """(B, P + n_new): the prompt and `n_new` tokens a masked LM fills in by iterative unmasking, one position
    per step, most confident first. The model must be bidirectional (model.mask "bidirectional")."""
    if cfg.mask != "bidirectional":
        raise ValueError(f"unmasking needs a bidirectional model, got model.mask={cfg.mask!r}")
    prompt_BP = jnp.asarray(prompt_BP)
    _check(cfg, prompt_BP, n_new, temperature)
    n_text = mask_id if n_text is None else n_text
    return _unmask(cfg, params, prompt_BP, n_new, mask_id, n_text, jnp.float32(temperature), key)
