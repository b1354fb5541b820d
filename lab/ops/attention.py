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


def attention_weights(q_BTHD, k_BSKD, mask=None, *, scale=None, bias=None) -> jnp.ndarray:
    """(B, H, T, S) attention probabilities; each row sums to 1 over the visible keys.

    `mask` is boolean and broadcasts to (B, H, T, S) (see lab.ops.masks); True = may attend.
    `bias` is an additive float score bias broadcasting to (B, H, T, S) (e.g. ALiBi's (H, T, S)), added
    after scaling and before masking.
    """
    s = _scores(q_BTHD, k_BSKD, scale)
    if bias is not None:
        s = s + bias.astype(jnp.float32)
    if mask is not None:
        s = jnp.where(mask, s, _MASKED)
    return jax.nn.softmax(s, axis=-1)


def dot_product_attention(
    q_BTHD, k_BSKD, v_BSKD, mask=None, *, scale=None, bias=None, return_weights=False
) -> jnp.ndarray:
    """(B, T, H, D) attention output for H query heads over K key/value heads (K divides H).

    With return_weights=True, returns (output, (B, H, T, S) attention probabilities).
    """
    w_BHTS = attention_weights(q_BTHD, k_BSKD, mask, scale=scale, bias=bias)
    b, t, h, _ = q_BTHD.shape
    kv, dv = v_BSKD.shape[2], v_BSKD.shape[3]
    v = v_BSKD.astype(jnp.float32)
    if kv == h:
        out = jnp.einsum("bhts,bshd->bthd", w_BHTS, v)
    else:
        w = w_BHTS.reshape(b, kv, h // kv, t, -1)
        out = jnp.einsum("bkgts,bskd->btkgd", w, v).reshape(b, t, h, dv)
    out = out.astype(v_BSKD.dtype)
    return (out, w_BHTS) if return_weights else out


def attend_one_query(q_D, k_SD, v_SD, visible_S=None, *, scale=None):
    """Attention for a single query written out step by step; equals one row of dot_product_attention.

    1. scores:   s_j = q . k_j                    (S,)
    2. scale:    s_j / sqrt(D)                    (keeps the scores' variance O(1) as D grows)
    3. mask:     invisible keys get -inf-like     (they receive probability 0)
    4. softmax:  p_j = exp(s_j - max s) / sum     (subtracting the max changes nothing but overflow)
    5. output:   sum_j p_j v_j                    (D_v,)
    """
    q = q_D.astype(jnp.float32)
    k = k_SD.astype(jnp.float32)
    scores = k @ q  # 1
    scores = scores * (q.shape[-1] ** -0.5 if scale is None else scale)  # 2
    if visible_S is not None:
        scores = jnp.where(visible_S, scores, _MASKED)  # 3
    e = jnp.exp(scores - jnp.max(scores))  # 4
    p = e / jnp.sum(e)
    return p @ v_SD.astype(jnp.float32), p  # 5: (output, probabilities)


def project_qkv(x_BTD, wq_DHE, wk_DKE, wv_DKE, bq_HE=None, bk_KE=None, bv_KE=None, qkv_fn=None):
    """Queries (B, T, H, E), keys and values (B, T, K, E) of x, with optional biases, then `qkv_fn(q, k, v)`
    if given (the ablations' rewiring, RoPE's rotation)."""
    q = jnp.einsum("btd,dhe->bthe", x_BTD, wq_DHE)
    k = jnp.einsum("btd,dke->btke", x_BTD, wk_DKE)
    v = jnp.einsum("btd,dke->btke", x_BTD, wv_DKE)
    if bq_HE is not None:
        q, k, v = q + bq_HE, k + bk_KE, v + bv_KE
    return (q, k, v) if qkv_fn is None else qkv_fn(q, k, v)


def project_out(o_BTHE, wo_HED, bo_D, dtype):
    """The heads' outputs (B, T, H, E) back to (B, T, D) in `dtype`, plus the optional output bias."""
    y = jnp.einsum("bthe,hed->btd", o_BTHE.astype(dtype), wo_HED)
    return y if bo_D is None else y + bo_D


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
    score_bias=None,
    return_weights=False,
):
    """Self-attention of a (B, T, D) sequence with H query heads and K key/value heads of size E.

    Weights: wq (D, H, E), wk and wv (D, K, E), wo (H, E, D); optional biases. `qkv_fn(q, k, v)`, if given,
    transforms the three projections before attention (used to swap, zero or tie them in ablations, and to
    rotate q and k for RoPE). `score_bias` is an additive score bias (e.g. ALiBi). With
    return_weights=True, returns (output, (B, H, T, T) attention probabilities).
    """
    q, k, v = project_qkv(x_BTD, wq_DHE, wk_DKE, wv_DKE, bq_HE, bk_KE, bv_KE, qkv_fn)
    o, w_BHTS = dot_product_attention(q, k, v, mask, bias=score_bias, return_weights=True)
    y = project_out(o, wo_HED, bo_D, x_BTD.dtype)
    return (y, w_BHTS) if return_weights else y
