"""Scaled dot-product attention and multi-head attention (Vaswani et al. 2017).

    attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V

Grouped-query attention (Ainslie et al. 2023) is the same code: the H query heads are split into K groups
of H/K heads, and each group shares one key/value head. K == H is multi-head attention, K == 1 is
multi-query attention (Shazeer 2019). Scores and softmax are computed in float32 whatever the input dtype.

A masked position gets the most negative float32 score rather than -inf, so a query row with no visible
key (e.g. a padding query under a padding mask) gives a uniform average instead of NaN; such rows are
expected to be excluded from the loss by the caller.
"""

import jax
import jax.numpy as jnp

_MASKED = float(jnp.finfo(jnp.float32).min)


def _scores(q_BTHD, k_BSKD, scale):
    """(B, H, T, S) float32 scores; query head h uses key head h // (H/K)."""
    b, t, h, d = q_BTHD.shape
    kv = k_BSKD.shape[2]
    if h % kv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({kv})")
    scale = d**-0.5 if scale is None else scale
    q = q_BTHD.astype(jnp.float32) * scale
    k = k_BSKD.astype(jnp.float32)
    if kv == h:
        return jnp.einsum("bthd,bshd->bhts", q, k)
    g = h // kv
    s_BKGTS = jnp.einsum("btkgd,bskd->bkgts", q.reshape(b, t, kv, g, d), k)
    return s_BKGTS.reshape(b, h, t, k.shape[1])


def attention_weights(q_BTHD, k_BSKD, mask=None, *, scale=None) -> jnp.ndarray:
    """(B, H, T, S) attention probabilities; each row sums to 1 over the visible keys.

    `mask` is boolean and broadcasts to (B, H, T, S) (see lab.ops.masks); True = may attend.
    """
    s = _scores(q_BTHD, k_BSKD, scale)
    if mask is not None:
        s = jnp.where(mask, s, _MASKED)
    return jax.nn.softmax(s, axis=-1)


def dot_product_attention(q_BTHD, k_BSKD, v_BSKD, mask=None, *, scale=None) -> jnp.ndarray:
    """(B, T, H, D) attention output for H query heads over K key/value heads (K divides H)."""
    w_BHTS = attention_weights(q_BTHD, k_BSKD, mask, scale=scale)
    b, t, h, _ = q_BTHD.shape
    kv, dv = v_BSKD.shape[2], v_BSKD.shape[3]
    v = v_BSKD.astype(jnp.float32)
    if kv == h:
        out = jnp.einsum("bhts,bshd->bthd", w_BHTS, v)
    else:
        w = w_BHTS.reshape(b, kv, h // kv, t, -1)
        out = jnp.einsum("bkgts,bskd->btkgd", w, v).reshape(b, t, h, dv)
    return out.astype(v_BSKD.dtype)


def multi_head_attention(
    x_BTD,
    wq_DHE,
    wk_DKE,
    wv_DKE,
    wo_HED,
    mask=None,
    *,
    bq_HE=None,
    bk_KE=None,
    bv_KE=None,
    bo_D=None,
    qkv_fn=None,
):
    """Self-attention of a (B, T, D) sequence with H query heads and K key/value heads of size E.

    Weights: wq (D, H, E), wk and wv (D, K, E), wo (H, E, D); optional biases. `qkv_fn(q, k, v)`, if given,
    rewires the three projections before attention (used to swap, zero or tie them in ablations).
    """
    q = jnp.einsum("btd,dhe->bthe", x_BTD, wq_DHE)
    k = jnp.einsum("btd,dke->btke", x_BTD, wk_DKE)
    v = jnp.einsum("btd,dke->btke", x_BTD, wv_DKE)
    if bq_HE is not None:
        q, k, v = q + bq_HE, k + bk_KE, v + bv_KE
    if qkv_fn is not None:
        q, k, v = qkv_fn(q, k, v)
    o = dot_product_attention(q, k, v, mask).astype(x_BTD.dtype)
    y = jnp.einsum("bthe,hed->btd", o, wo_HED)
    return y if bo_D is None else y + bo_D
