"""Attention for long sequences: sliding windows, attention sinks, and exact attention in linear memory.

Three computations of the same function, softmax(Q K^T * scale + bias, masked) V, chosen by how much of the
(T, S) score matrix they hold at once:

- `reference_attention`: the whole (B, H, T, S) matrix (what `lab.ops.attention` does), with the visibility
  rule below built from positions. The baseline, and the test oracle's twin.
- `blocked_attention`: keys in blocks of `block`, folded in with an online softmax under `lax.scan`
  (Rabe & Staats 2021, "Self-attention Does Not Need O(n^2) Memory"; Dao 2023, FlashAttention-2): a running
  row maximum m, normalizer l and weighted sum of values, rescaled by exp(m_old - m_new) as each block
  arrives. Only a (B, H, T, block) slice of scores exists at a time. A `jax.custom_vjp` keeps the
  per-row log-sum-exp (lse) from the forward pass and the backward pass recomputes each block's
  probabilities p = exp(s - lse) from it (FlashAttention-2's recipe, section 3.1.2): with
  delta_t = sum_d dO_td O_td,  dV_j = P_j^T dO,  dP_j = dO V_j^T,  dS_j = P_j * (dP_j - delta),
  dQ += dS_j K_j * scale,  dK_j = dS_j^T Q * scale, so the backward pass is linear in memory too
  (plain autodiff of the scan would store every block's probabilities: quadratic again). Exact: it
  computes full attention (any window or sink mask is applied per block, but every block is visited).
- `banded_attention`: sliding-window self-attention (Beltagy et al. 2020, Longformer) as a banded
  computation: queries in blocks of `block`, each against the slab of `block + window - 1` keys that can
  reach it (plus the sinks), so it holds T * (block + window - 1 + sinks) scores, never T x T, and costs
  O(T * window) rather than O(T^2). Ordinary autodiff (its stored slabs are linear in T already).
- `fused_attention`: causal self-attention (T == S) by `jax.nn.dot_product_attention`, JAX's library
  kernel: with bfloat16 inputs its score and value matmuls take bfloat16 operands with float32 scores
  (softmax in float32), instead of casting q, k, v to float32 first. Its `implementation=None` is XLA's
  composition on every platform today (the JAX docs: it "currently falls back to xla"), so on a GPU
  `fused_implementation` asks for cuDNN's flash attention by name where cuDNN takes the inputs (bfloat16 or
  float16, head size a multiple of 8 up to 128, no score bias), and XLA's otherwise; the environment
  variable LAB_FUSED_ATTENTION=xla|cudnn overrides that choice (auto, the default, is the rule above).
  Causal masking, a sliding window (its `local_window_size`, left window - 1), grouped-query heads and
  ALiBi (as a bias) are exact; sinks (renumbered positions) and key padding are not offered.

The visibility rule, from integer positions (so that a decoding query at position p, whose keys come from
a cache, is masked correctly: `jax.nn.dot_product_attention(is_causal=True)` aligns the triangle top-left,
which is wrong for T queries over S > T keys):

    key s visible from query t  <=>  k_pos[s] >= 0  (a real key; -1 marks padding or an empty cache slot)
                                     and k_pos[s] <= q_pos[t]                          (causal)
                                     and (q_pos[t] - k_pos[s] < window or k_pos[s] < sinks)

Attention sinks (Xiao et al. 2023, StreamingLLM): the first `sinks` positions stay visible to every later
query beside the window of the last `window` positions. A model trained with full attention puts much of
its attention mass on the first tokens whatever they are; dropping them with the window breaks it, keeping
them repairs it. The paper also renumbers positions inside the cache (the sinks keep 0..k-1 and the window
follows them), so that a relative position scheme never sees a distance it was not trained on: for a query
at p and a sink key s, the distance becomes min(p, sinks + window - 1) - s instead of p - s (for window
keys, renumbering shifts query and key alike, so nothing changes). `renumbered_sink_positions` gives that
query position; ALiBi slopes passed here apply it themselves, and RoPE callers pass `q_sinks`, the queries
rotated at those positions, used for the sink keys only.

A query with no visible key (all its keys padded) gets output 0 and gradient 0 here (no NaN), unlike
`lab.ops.attention`, whose masked scores are finite and give such a row the uniform average of all values.
Scores, softmax and accumulators are float32 whatever the input dtype; outputs come back in v's dtype.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


# --- the rule ----------------------------------------------------------------------------------------------
def visible(q_pos_T, k_pos_S, *, causal: bool = True, window: int | None = None, sinks: int = 0):
    """(T, S) bool: which keys each query sees, by the rule in the module docstring."""
    qp, kp = q_pos_T[:, None], k_pos_S[None, :]
    m = kp >= 0
    if causal:
        m = m & (kp <= qp)
    if window is not None:
        near = (qp - kp < window) & (kp - qp < window)  # both sides when not causal
        m = m & (near | (kp < sinks))
    return m


def renumbered_sink_positions(q_pos_T, window: int, sinks: int):
    """(T,) the query positions StreamingLLM uses against the sink keys: min(p, sinks + window - 1)."""
    return jnp.minimum(q_pos_T, sinks + window - 1)


def check_window(window, sinks: int, block: int | None = None) -> None:
    """Refuse a window < 1, sinks < 0, sinks without a window or more sinks than the window, a block < 1."""
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if sinks < 0 or (sinks and window is None) or (window is not None and sinks > window):
        raise ValueError(
            f"sinks must be in 0..window (and need a window), got sinks={sinks}, window={window}"
        )
    if block is not None and block < 1:
        raise ValueError(f"block must be >= 1, got {block}")


def _groups(q_BTHD, k_BSKD):
    h, kv = q_BTHD.shape[2], k_BSKD.shape[2]
    if h % kv:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({kv})")
    return kv, h // kv


def _bias(slopes_KG, qp_T, kp_S):
    """(K, G, T, S) ALiBi bias -m_h |q - k| (positions already renumbered by the caller where needed)."""
    dist = jnp.abs(qp_T[:, None] - kp_S[None, :]).astype(jnp.float32)
    return -slopes_KG[:, :, None, None] * dist


def _sink_select(kp_S, qp_T, window, sinks):
    """(T, S) bool: the (query, key) pairs that are sink pairs, i.e. a sink key outside the query's window."""
    return (kp_S[None, :] < sinks) & (kp_S[None, :] >= 0) & (qp_T[:, None] - kp_S[None, :] >= window)


# --- naive: the whole score matrix --------------------------------------------------------------------------
def reference_attention(
    q_BTHD,
    k_BSKD,
    v_BSKD,
    *,
    q_pos=None,
    k_pos=None,
    causal: bool = True,
    window: int | None = None,
    sinks: int = 0,
    kv_valid_BS=None,
    q_sinks_BTHD=None,
    slopes_H=None,
    bias=None,
    scale=None,
):
    """(B, T, H, D) attention holding the whole (B, H, T, S) score matrix, masked by the rule above.

    q_pos (T,) and k_pos (S,) default to 0..T-1 and 0..S-1 (self-attention); kv_valid_BS marks real keys
    per example (padding). q_sinks_BTHD replaces q against sink keys outside the window (RoPE
    renumbering); slopes_H adds ALiBi's bias, with the sink distances renumbered when sinks > 0; `bias`
    is any additive score bias broadcasting to (B, H, T, S) (the caller's, e.g. a cache's renumbered ALiBi).
    """
    check_window(window, sinks)
    b, t, h, d = q_BTHD.shape
    s = k_BSKD.shape[1]
    kv, g = _groups(q_BTHD, k_BSKD)
    scale = d**-0.5 if scale is None else scale
    qp = jnp.arange(t) if q_pos is None else q_pos
    kp = jnp.arange(s) if k_pos is None else k_pos
    f32 = lambda x: x.astype(jnp.float32)
    grouped = lambda x: f32(x).reshape(b, t, kv, g, d) * scale
    k, v = f32(k_BSKD), f32(v_BSKD)
    s_BKGTS = jnp.einsum("btkgd,bskd->bkgts", grouped(q_BTHD), k)
    sink_pair = None if not sinks else _sink_select(kp, qp, window, sinks)
    if q_sinks_BTHD is not None and sinks:
        s_sink = jnp.einsum("btkgd,bskd->bkgts", grouped(q_sinks_BTHD), k)
        s_BKGTS = jnp.where(sink_pair, s_sink, s_BKGTS)
    if slopes_H is not None:
        slopes = f32(slopes_H).reshape(kv, g)
        alibi = _bias(slopes, qp, kp)
        if sinks:
            alibi = jnp.where(
                sink_pair, _bias(slopes, renumbered_sink_positions(qp, window, sinks), kp), alibi
            )
        s_BKGTS = s_BKGTS + alibi
    if bias is not None:
        s_BKGTS = s_BKGTS + jnp.broadcast_to(f32(bias), (b, h, t, s)).reshape(b, kv, g, t, s)
    mask = visible(qp, kp, causal=causal, window=window, sinks=sinks)[None, None, None]
    if kv_valid_BS is not None:
        mask = mask & kv_valid_BS[:, None, None, None, :]
    p = _safe_softmax(s_BKGTS, mask)
    out = jnp.einsum("bkgts,bskd->btkgd", p, v).reshape(b, t, h, v.shape[-1])
    return out.astype(v_BSKD.dtype)


def _safe_softmax(s, mask):
    """Softmax over the last axis of the visible entries; a row with none visible is all zeros (no NaN in
    value or gradient: masked scores become -inf before the exp, whose derivative there is 0)."""
    s = jnp.where(mask, s, NEG_INF)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(s - m)
    den = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(den > 0, den, 1.0)


# --- blocked: online softmax over key blocks, linear-memory backward ----------------------------------------
def blocked_attention(
    q_BTHD,
    k_BSKD,
    v_BSKD,
    *,
    q_pos=None,
    k_pos=None,
    causal: bool = True,
    window: int | None = None,
    sinks: int = 0,
    kv_valid_BS=None,
    slopes_H=None,
    block: int = 128,
    scale=None,
):
    """(B, T, H, D) exact attention in O(T * block) memory, forward and backward (see the module docstring).

    Same arguments as `reference_attention` (positions absolute: no sink renumbering; use
    `banded_attention` or `reference_attention` for a renumbered sink cache) plus `block`, the keys per step.
    """
    check_window(window, sinks, block)
    b, t, h, d = q_BTHD.shape
    s = k_BSKD.shape[1]
    kv, g = _groups(q_BTHD, k_BSKD)
    qp = (jnp.arange(t) if q_pos is None else q_pos).astype(jnp.int32)
    kp = (jnp.arange(s) if k_pos is None else k_pos).astype(jnp.int32)
    valid = jnp.ones((b, s), bool) if kv_valid_BS is None else kv_valid_BS.astype(bool)
    slopes = jnp.zeros((h,), jnp.float32) if slopes_H is None else slopes_H.astype(jnp.float32)
    blk = min(block, s)
    pad = -s % blk  # padded keys get position -1: invisible
    kp = jnp.pad(kp, (0, pad), constant_values=-1)
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
    kpad = jnp.pad(k_BSKD, ((0, 0), (0, pad), (0, 0), (0, 0)))
    vpad = jnp.pad(v_BSKD, ((0, 0), (0, pad), (0, 0), (0, 0)))
    static = (causal, window, sinks, blk, d**-0.5 if scale is None else float(scale), slopes_H is not None)
    out = _flash(static, q_BTHD, kpad, vpad, qp, kp, valid, slopes)
    return out.astype(v_BSKD.dtype)


def _key_blocks(x, blk):
    """(B, S, ...) -> (S/blk, B, blk, ...): the scan's leading axis."""
    b, s = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, s // blk, blk, *x.shape[2:]), 1, 0)


def _block_scores(static, q_BTKGD, k_blk, qp, kp_blk, valid_blk, slopes_KG):
    """Scores (B, K, G, T, blk) of one key block and its visibility mask."""
    causal, window, sinks, _, scale, has_bias = static
    s = jnp.einsum("btkgd,bskd->bkgts", q_BTKGD * scale, k_blk.astype(jnp.float32))
    if has_bias:
        s = s + _bias(slopes_KG, qp, kp_blk)
    mask = visible(qp, kp_blk, causal=causal, window=window, sinks=sinks)[None, None, None]
    return s, mask & valid_blk[:, None, None, None, :]


def _flash_forward(static, q, k, v, qp, kp, valid, slopes):
    b, t, h, d = q.shape
    kv, blk = k.shape[2], static[3]
    g = h // kv
    q5 = q.astype(jnp.float32).reshape(b, t, kv, g, d)
    slopes_KG = slopes.reshape(kv, g)
    xs = (_key_blocks(k, blk), _key_blocks(v, blk), kp.reshape(-1, blk), _key_blocks(valid, blk))

    def step(carry, x):
        m, l, acc = carry  # (B, K, G, T), (B, K, G, T), (B, T, K, G, Dv)
        kb, vb, kpb, validb = x
        s, mask = _block_scores(static, q5, kb, qp, kpb, validb, slopes_KG)
        s = jnp.where(mask, s, NEG_INF)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with nothing visible yet
        p = jnp.exp(s - m_safe[..., None])  # masked: exp(-inf) = 0
        corr = jnp.exp(m - m_safe)  # m = -inf (nothing before): 0
        l = l * corr + jnp.sum(p, axis=-1)
        pv = jnp.einsum("bkgts,bskd->btkgd", p, vb.astype(jnp.float32))
        acc = acc * jnp.moveaxis(corr, -1, 1)[..., None] + pv
        return (m_new, l, acc), None

    init = (
        jnp.full((b, kv, g, t), NEG_INF, jnp.float32),
        jnp.zeros((b, kv, g, t), jnp.float32),
        jnp.zeros((b, t, kv, g, v.shape[-1]), jnp.float32),
    )
    (m, l, acc), _ = jax.lax.scan(step, init, xs)
    empty = l == 0  # no visible key: output 0, and lse 0 (its probabilities are masked to 0 anyway)
    out = acc / jnp.moveaxis(jnp.where(empty, 1.0, l), -1, 1)[..., None]
    lse = jnp.where(empty, 0.0, m + jnp.log(jnp.where(empty, 1.0, l)))
    return out.reshape(b, t, h, -1), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(static, q, k, v, qp, kp, valid, slopes):
    return _flash_forward(static, q, k, v, qp, kp, valid, slopes)[0]


def _flash_fwd(static, q, k, v, qp, kp, valid, slopes):
    out, lse = _flash_forward(static, q, k, v, qp, kp, valid, slopes)
    return out, (q, k, v, qp, kp, valid, slopes, out, lse)


def _flash_bwd(static, res, do_BTHD):
    q, k, v, qp, kp, valid, slopes, out, lse = res
    b, t, h, d = q.shape
    kv, blk, scale = k.shape[2], static[3], static[4]
    g = h // kv
    q5 = q.astype(jnp.float32).reshape(b, t, kv, g, d)
    do = do_BTHD.astype(jnp.float32).reshape(b, t, kv, g, -1)
    delta = jnp.moveaxis(jnp.sum(do * out.astype(jnp.float32).reshape(do.shape), axis=-1), 1, -1)  # (B,K,G,T)
    slopes_KG = slopes.reshape(kv, g)
    xs = (_key_blocks(k, blk), _key_blocks(v, blk), kp.reshape(-1, blk), _key_blocks(valid, blk))

    def step(dq, x):
        kb, vb, kpb, validb = x
        s, mask = _block_scores(static, q5, kb, qp, kpb, validb, slopes_KG)
        p = jnp.where(mask, jnp.exp(jnp.where(mask, s, NEG_INF) - lse[..., None]), 0.0)
        dv = jnp.einsum("bkgts,btkgd->bskd", p, do)
        dp = jnp.einsum("btkgd,bskd->bkgts", do, vb.astype(jnp.float32))
        ds = p * (dp - delta[..., None])
        dq = dq + jnp.einsum("bkgts,bskd->btkgd", ds, kb.astype(jnp.float32)) * scale
        dk = jnp.einsum("bkgts,btkgd->bskd", ds, q5) * scale
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(step, jnp.zeros_like(q5), xs)
    unblock = lambda x: jnp.moveaxis(x, 0, 1).reshape(b, -1, *x.shape[3:])
    zero_int = lambda x: jnp.zeros(x.shape, jax.dtypes.float0)
    return (
        dq.reshape(q.shape).astype(q.dtype),
        unblock(dk).astype(k.dtype),
        unblock(dv).astype(v.dtype),
        zero_int(qp),
        zero_int(kp),
        zero_int(valid),
        jnp.zeros_like(slopes),  # ALiBi slopes are constants of the model, never trained
    )


_flash.defvjp(_flash_fwd, _flash_bwd)


# --- banded: sliding-window self-attention in O(T * window) ------------------------------------------------
def banded_attention(
    q_BTHD,
    k_BTKD,
    v_BTKD,
    window: int,
    *,
    sinks: int = 0,
    kv_valid_BT=None,
    q_sinks_BTHD=None,
    slopes_H=None,
    block: int = 64,
    scale=None,
):
    """(B, T, H, D) causal sliding-window self-attention (positions 0..T-1; see the module docstring).

    Query block i (queries i*block .. i*block + block-1) scores only its slab of block + window - 1 keys
    (i*block - window + 1 .. i*block + block - 1) and the `sinks` first keys. kv_valid_BT, q_sinks_BTHD and
    slopes_H are as in `reference_attention` (sinks renumbered). Equals `reference_attention` with the same
    window and sinks; with window >= T, full causal attention.
    """
    check_window(window, sinks, block)
    b, t, h, d = q_BTHD.shape
    kv, g = _groups(q_BTHD, k_BTKD)
    scale = d**-0.5 if scale is None else scale
    blk = min(block, t)
    w = min(window, t)  # a window past T sees everything: no wider slab needed
    nq = -(-t // blk)
    tq = nq * blk
    span = blk + w - 1
    f32 = lambda x: x.astype(jnp.float32)
    valid = jnp.ones((b, t), bool) if kv_valid_BT is None else kv_valid_BT.astype(bool)

    def blocks(x):  # (B, T, ...) -> (B, nq, blk, ...), queries padded at the end
        x = jnp.pad(x, ((0, 0), (0, tq - t)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(b, nq, blk, *x.shape[2:])

    qb = f32(blocks(q_BTHD)).reshape(b, nq, blk, kv, g, d) * scale
    qp = jnp.arange(tq).reshape(nq, blk)  # (nq, blk)
    # Keys padded by w - 1 in front (position < 0: invisible) and at the end; slab i starts at i * blk.
    idx = jnp.arange(nq)[:, None] * blk + jnp.arange(span)[None, :]  # (nq, span) into the padded keys
    kp = idx - (w - 1)  # (nq, span) key positions
    padk = lambda x: jnp.pad(x, ((0, 0), (w - 1, tq - t)) + ((0, 0),) * (x.ndim - 2))
    k_slab, v_slab, valid_slab = (padk(x)[:, idx] for x in (f32(k_BTKD), f32(v_BTKD), valid))
    kp = jnp.where(kp < t, kp, -1)
    s = jnp.einsum("bnqkgd,bnskd->bnkgqs", qb, k_slab)  # (B, nq, K, G, blk, span)
    in_band = (
        (kp[:, None, :] <= qp[:, :, None]) & (qp[:, :, None] - kp[:, None, :] < w) & (kp[:, None, :] >= 0)
    )
    mask = in_band[None, :, None, None] & valid_slab[:, :, None, None, None, :]
    if slopes_H is not None:
        slopes = f32(slopes_H).reshape(kv, g)
        s = s + jax.vmap(lambda a, c: _bias(slopes, a, c), out_axes=0)(qp, kp)[None]
    # A window spanning all T positions holds every sink already (and T may be fewer than the sinks).
    if sinks and w < t:
        ks, vs = f32(k_BTKD[:, :sinks]), f32(v_BTKD[:, :sinks])
        q_for_sinks = qb if q_sinks_BTHD is None else f32(blocks(q_sinks_BTHD)).reshape(qb.shape) * scale
        ss = jnp.einsum("bnqkgd,bskd->bnkgqs", q_for_sinks, ks)  # (B, nq, K, G, blk, sinks)
        sp = jnp.arange(sinks)
        sink_pair = qp[:, :, None] - sp[None, None, :] >= w  # outside the window (inside: in the slab)
        if slopes_H is not None:
            renum = renumbered_sink_positions(qp, window, sinks)
            ss = ss + jax.vmap(lambda a: _bias(slopes, a, sp))(renum)[None]
        s = jnp.concatenate([ss, s], axis=-1)
        smask = sink_pair[None, :, None, None] & valid[:, None, None, None, None, :sinks]
        mask = jnp.concatenate(
            [jnp.broadcast_to(smask, ss.shape), jnp.broadcast_to(mask, s.shape[:-1] + (span,))], -1
        )
        v_slab = jnp.concatenate([jnp.broadcast_to(vs[:, None], (b, nq, sinks, kv, vs.shape[-1])), v_slab], 2)
    p = _safe_softmax(s, mask)
    out = jnp.einsum("bnkgqs,bnskd->bnqkgd", p, v_slab).reshape(b, tq, h, -1)[:, :t]
    return out.astype(v_BTKD.dtype)


# --- fused: jax.nn.dot_product_attention -------------------------------------------------------------------
FUSED_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def fused_choice() -> str:
    """LAB_FUSED_ATTENTION: auto (the default: `fused_implementation`'s rule), xla or cudnn; ValueError for
    anything else."""
    choice = os.environ.get("LAB_FUSED_ATTENTION", "auto")
    if choice not in FUSED_IMPLEMENTATIONS:
        raise ValueError(
            f"LAB_FUSED_ATTENTION={choice!r} is not allowed; allowed: {', '.join(FUSED_IMPLEMENTATIONS)}"
        )
    return choice


def fused_implementation(dtype, head_dim: int, has_bias: bool, platform: str | None = None) -> str:
    """The `implementation` `fused_attention` passes to `jax.nn.dot_product_attention`: "cudnn" (flash
    attention) on a GPU for bfloat16/float16 inputs with a head size that is a multiple of 8 up to 128 and no
    score bias (cuDNN would round an ALiBi bias to the input dtype), "xla" otherwise; LAB_FUSED_ATTENTION
    (auto, xla or cudnn) overrides it. `platform` defaults to JAX's default backend."""
    choice = fused_choice()
    if choice != "auto":
        return choice
    platform = jax.default_backend() if platform is None else platform
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    fits = half and head_dim % 8 == 0 and head_dim <= 128 and not has_bias
    return "cudnn" if platform == "gpu" and fits else "xla"


def fused_attention(q_BTHD, k_BTKD, v_BTKD, *, window: int | None = None, slopes_H=None, implementation=None):
    """(B, T, H, D) causal self-attention (positions 0..T-1) by `jax.nn.dot_product_attention`, with an
    optional sliding window and ALiBi slopes (module docstring). `implementation` None picks one by
    `fused_implementation`. Output in v's dtype."""
    check_window(window, 0)
    b, t, h, d = q_BTHD.shape
    _groups(q_BTHD, k_BTKD)
    if k_BTKD.shape[1] != t:  # is_causal aligns the triangle top-left: right only for self-attention
        raise ValueError(f"fused_attention is self-attention: T ({t}) keys expected, got {k_BTKD.shape[1]}")
    bias = None
    if slopes_H is not None:  # (1, H, T, T) float32: -m_h |q - k|
        pos = jnp.arange(t)
        bias = _bias(slopes_H.astype(jnp.float32)[:, None], pos, pos)[:, 0][None]
    if implementation is None:
        implementation = fused_implementation(q_BTHD.dtype, d, bias is not None)
    # Our window sees q - k < window: a left window of window - 1 (a window >= T is full causal).
    local = None if window is None or window >= t else (window - 1, 0)
    out = jax.nn.dot_product_attention(
        q_BTHD, k_BTKD, v_BTKD, bias, is_causal=True, local_window_size=local, implementation=implementation
    )
    return out.astype(v_BTKD.dtype)
