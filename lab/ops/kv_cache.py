"""A preallocated, fixed-shape key/value cache for autoregressive decoding, and attention over it.

Decoding one token at a time, the keys and values of earlier positions never change (causal attention),
so each layer keeps them instead of recomputing the whole prefix every step (Pope et al. 2022,
"Efficiently Scaling Transformer Inference"). The cache is an explicit pytree passed in and out of pure
functions (never a Flax mutable collection):

    KVCache.k[l], KVCache.v[l]   (B, S, K, D) per layer: batch, slots, key/value heads, head size
    KVCache.pos                  (S,) int32: the absolute position whose K/V row each slot holds, -1 = empty
    KVCache.length               () int32: positions written so far = the position of the next token
    KVCache.ring                 static bool: a sliding-window cache that evicts (see below)

Every array has a fixed shape, so one compiled program serves every decode step: `write` puts new rows in
place with `lax.dynamic_update_slice`, and `attend` attends over all S slots with a mask built from `pos`
(empty slots and future positions are masked), so the cost of a step does not depend on how full the
cache is.

Full cache (ring=False): S is the longest sequence it can hold; slot s holds position s. Writing past S is
the caller's error (dynamic_update_slice would clamp the start index silently), so the model-level
functions check lengths before anything is traced.

Sliding-window cache (ring=True, S = window W): a ring buffer. Position p lives in slot p mod W, evicting
position p - W, and a query at position p attends to positions p-W+1..p (sliding-window attention, as in
Mistral 7B; Jiang et al. 2023). Memory stays W rows however long the generation; the model sees only the
last W tokens, so it equals the full model only while the sequence is at most W long.

Sliding window with attention sinks (ring=True, sinks=k > 0, S = k + W slots; Xiao et al. 2023,
StreamingLLM): positions 0..k-1 keep slots 0..k-1 for good, and position p >= k lives in slot
k + (p - k) mod W; a query at p attends to the sinks and to positions p-W+1..p (lab.ops.long_attention's
rule). Inside the cache, positions are renumbered as the paper does: against a sink key the query stands
at min(p, k + W - 1), so a relative scheme never sees a distance past k + W - 1: `attend` calls `bias_fn`
with those positions for sink keys (ALiBi), and uses `q_sinks` (the queries rotated at those positions,
RoPE) against them.

Memory: the K and V arrays hold

    2 * layers * batch * kv_heads * head_dim * length * bytes_per_element

bytes (`cache_bytes`); grouped-query attention shrinks it by n_heads / kv_heads. `nbytes` measures the
arrays themselves (plus the small `pos` and `length` bookkeeping, reported separately).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lab.ops import long_attention
from lab.ops.attention import dot_product_attention, project_out, project_qkv


@dataclass(frozen=True)
class KVCache:
    k: tuple  # per layer: (B, S, K, D)
    v: tuple  # per layer: (B, S, K, D)
    pos: jax.Array  # (S,) int32 absolute position per slot, -1 = empty
    length: jax.Array  # () int32 positions written so far
    ring: bool = False  # static: sliding-window ring buffer (evicts) vs full cache
    sinks: int = 0  # static: slots 0..sinks-1 hold positions 0..sinks-1 for good (a ring with sinks)

    @property
    def n_layers(self) -> int:
        return len(self.k)

    @property
    def size(self) -> int:
        """S: the number of slots (the longest sequence a full cache holds; sinks + window of a ring)."""
        return self.k[0].shape[1]

    @property
    def window(self) -> int:
        """W: the window of a ring (its slots after the sinks)."""
        return self.size - self.sinks

    def replace(self, **kw) -> KVCache:
        return dataclasses.replace(self, **kw)


jax.tree_util.register_dataclass(
    KVCache, data_fields=["k", "v", "pos", "length"], meta_fields=["ring", "sinks"]
)


def init(
    n_layers, batch, size, kv_heads, head_dim, dtype=jnp.float32, *, ring: bool = False, sinks: int = 0
) -> KVCache:
    """An empty cache of `size` slots per layer (zeros; every slot marked empty); a ring with `sinks` keeps
    its first `sinks` slots for positions 0..sinks-1 and rotates the other size - sinks (the window)."""
    if min(n_layers, batch, size, kv_heads, head_dim) < 1:
        raise ValueError(
            f"cache dimensions must be >= 1, got layers={n_layers} batch={batch} size={size} "
            f"kv_heads={kv_heads} head_dim={head_dim}"
        )
    if sinks and (not ring or not 0 < sinks < size):
        raise ValueError(f"sinks need a ring cache with more slots than sinks, got sinks={sinks} size={size}")
    zeros = lambda: jnp.zeros((batch, size, kv_heads, head_dim), dtype)
    return KVCache(
        k=tuple(zeros() for _ in range(n_layers)),
        v=tuple(zeros() for _ in range(n_layers)),
        pos=jnp.full((size,), -1, jnp.int32),
        length=jnp.zeros((), jnp.int32),
        ring=ring,
        sinks=sinks,
    )


def cache_bytes(n_layers, batch, kv_heads, head_dim, length, bytes_per_element) -> int:
    """The formula: 2 (K and V) * layers * batch * kv_heads * head_dim * length * bytes per element."""
    return 2 * n_layers * batch * kv_heads * head_dim * length * bytes_per_element


def nbytes(cache: KVCache) -> int:
    """Bytes actually held by the K and V arrays (what `cache_bytes` predicts)."""
    return sum(int(x.nbytes) for x in (*cache.k, *cache.v))


def bookkeeping_bytes(cache: KVCache) -> int:
    """Bytes of the `pos` and `length` arrays (not in the formula: O(S), independent of layers and batch)."""
    return int(cache.pos.nbytes) + int(cache.length.nbytes)


def _slots(cache: KVCache, t: int) -> jnp.ndarray:
    """(t,) slots that positions length..length+t-1 go to."""
    p = cache.length + jnp.arange(t, dtype=jnp.int32)
    if cache.sinks:
        return _sink_slots(p, cache.sinks, cache.window)
    return p % cache.size if cache.ring else p


def _sink_slots(p, sinks, window):
    """Slots of positions p in a ring with sinks: p < sinks keeps slot p; later ones rotate after them."""
    return jnp.where(p < sinks, p, sinks + (p - sinks) % window)


def _kept(p_T, sinks, window):
    """(T,) which of T new positions (consecutive) a ring with sinks keeps: the sinks and the last W."""
    return (p_T < sinks) | (p_T > p_T[-1] - window)


def write(cache_BSKD, new_BTKD, start) -> jnp.ndarray:
    """`new` written into `cache` at slots start..start+T-1 (start may be traced; a full-cache write)."""
    return jax.lax.dynamic_update_slice(cache_BSKD, new_BTKD.astype(cache_BSKD.dtype), (0, start, 0, 0))


def _ring_write(cache_BSKD, new_BTKD, slots_T):
    return cache_BSKD.at[:, slots_T].set(new_BTKD.astype(cache_BSKD.dtype))


def visible(key_pos_S, q_pos_T, window: int | None) -> jnp.ndarray:
    """(T, S) mask: a query at position p sees keys at positions 0 <= s <= p (and s > p - window)."""
    kp, qp = key_pos_S[None, :], q_pos_T[:, None]
    m = (kp >= 0) & (kp <= qp)
    return m if window is None else m & (kp > qp - window)


CACHE_IMPLS = ("naive", "blocked")


def attend(
    cache: KVCache,
    layer: int,
    q_BTHD,
    k_BTKD,
    v_BTKD,
    *,
    scale=None,
    bias_fn=None,
    q_sinks_BTHD=None,
    impl: str = "naive",
    slopes_H=None,
    block: int = 64,
):
    """Attention of T new queries over the cache plus their own T new keys; returns (out_BTHD, new k, new v).

    The new keys/values (positions length..length+T-1) are written into layer `layer`'s slots and the
    written (k, v) arrays are returned; the caller collects them for all layers and then calls `advance`.
    `bias_fn(q_pos_T, key_pos_S) -> (H, T, S)` adds a score bias from absolute positions (ALiBi); slots
    that are empty (position -1) are masked whatever their bias. With sinks, `q_sinks_BTHD` (default q)
    scores the sink keys, and `bias_fn` sees the renumbered query positions for them (module docstring).

    `impl`: "naive" scores all T x S pairs at once (dot_product_attention, mask from positions); "blocked"
    runs a chunk of T > 1 queries through lab.ops.long_attention.blocked_attention over the same keys and
    positions, `block` keys at a time with an online softmax, so a long prefill chunk never holds a T x S
    array (ALiBi given as `slopes_H` as well as `bias_fn`); a single new token (T = 1) has only S scores and
    is scored at once either way. A ring with sinks always scores naively (its renumbered sink positions
    need the full score matrix's bias).
    """
    if impl not in CACHE_IMPLS:
        raise ValueError(f"impl must be one of {CACHE_IMPLS}, got {impl!r}")
    if cache.sinks:
        return _attend_sinks(cache, layer, q_BTHD, k_BTKD, v_BTKD, scale, bias_fn, q_sinks_BTHD)
    if impl == "blocked" and bias_fn is not None and slopes_H is None:
        raise ValueError("impl='blocked' needs the ALiBi bias as slopes_H too (its blocks compute the bias)")

    def over(k_all, v_all, key_pos, q_pos, window):
        if impl == "blocked" and q_BTHD.shape[1] > 1:
            return long_attention.blocked_attention(
                q_BTHD, k_all, v_all, q_pos=q_pos, k_pos=key_pos, window=window, slopes_H=slopes_H,
                block=block, scale=scale,
            )  # fmt: skip
        bias = None if bias_fn is None else bias_fn(q_pos, key_pos)
        return dot_product_attention(
            q_BTHD, k_all, v_all, visible(key_pos, q_pos, window), scale=scale, bias=bias
        )

    t = q_BTHD.shape[1]
    q_pos = cache.length + jnp.arange(t, dtype=jnp.int32)
    k_old, v_old = cache.k[layer], cache.v[layer]
    if not cache.ring:
        k_all = write(k_old, k_BTKD, cache.length)
        v_all = write(v_old, v_BTKD, cache.length)
        key_pos = jnp.where(jnp.arange(cache.size) < cache.length + t, jnp.arange(cache.size), -1)
        return over(k_all, v_all, key_pos, q_pos, None), k_all, v_all
    w = cache.size
    if t == 1:
        # One new token evicts position length - W, which is outside its own window: write first, attend
        # to the W slots in place.
        slots = _slots(cache, 1)
        k_all, v_all = _ring_write(k_old, k_BTKD, slots), _ring_write(v_old, v_BTKD, slots)
        key_pos = cache.pos.at[slots].set(q_pos)
        return over(k_all, v_all, key_pos, q_pos, w), k_all, v_all
    # A chunk (prefill): its early queries still need rows its later keys evict, so attend over the old
    # slots and the new rows together, then keep the newest min(T, W) rows.
    key_pos = jnp.concatenate([cache.pos, q_pos])
    out = over(
        jnp.concatenate([k_old, k_BTKD.astype(k_old.dtype)], axis=1),
        jnp.concatenate([v_old, v_BTKD.astype(v_old.dtype)], axis=1),
        key_pos,
        q_pos,
        w,
    )
    keep = min(t, w)
    slots = _slots(cache, t)[t - keep :]
    return (
        out,
        _ring_write(k_old, k_BTKD[:, t - keep :], slots),
        _ring_write(v_old, v_BTKD[:, t - keep :], slots),
    )


def _attend_sinks(cache, layer, q_BTHD, k_BTKD, v_BTKD, scale, bias_fn, q_sinks_BTHD):
    """`attend` for a ring with sinks: over the old slots and the new rows together (a chunk's early
    queries may need rows its later keys evict), then the new rows written where they are kept."""
    t, k, w = q_BTHD.shape[1], cache.sinks, cache.window
    q_pos = cache.length + jnp.arange(t, dtype=jnp.int32)
    k_old, v_old = cache.k[layer], cache.v[layer]
    key_pos = jnp.concatenate([cache.pos, q_pos])
    bias = None
    if bias_fn is not None:
        sink_pair = long_attention._sink_select(key_pos, q_pos, w, k)  # (T, S)
        renum = long_attention.renumbered_sink_positions(q_pos, w, k)
        bias = jnp.where(sink_pair, bias_fn(renum, key_pos), bias_fn(q_pos, key_pos))[None]
    out = long_attention.reference_attention(
        q_BTHD,
        jnp.concatenate([k_old, k_BTKD.astype(k_old.dtype)], axis=1),
        jnp.concatenate([v_old, v_BTKD.astype(v_old.dtype)], axis=1),
        q_pos=q_pos,
        k_pos=key_pos,
        window=w,
        sinks=k,
        q_sinks_BTHD=q_sinks_BTHD,
        bias=bias,
        scale=scale,
    )
    slots = jnp.where(_kept(q_pos, k, w), _slots(cache, t), cache.size)  # out of range: dropped
    put = lambda old, new: old.at[:, slots].set(new.astype(old.dtype), mode="drop")
    return out.astype(v_BTKD.dtype), put(k_old, k_BTKD), put(v_old, v_BTKD)


def advance(cache: KVCache, k: tuple, v: tuple, t: int) -> KVCache:
    """The cache after T new positions: every layer's written (k, v), `pos` and `length` updated."""
    slots = _slots(cache, t)
    new = cache.length + jnp.arange(t, dtype=jnp.int32)
    if cache.sinks:
        slots = jnp.where(_kept(new, cache.sinks, cache.window), slots, cache.size)
        pos = cache.pos.at[slots].set(new, mode="drop")
        return cache.replace(k=tuple(k), v=tuple(v), pos=pos, length=cache.length + t)
    if cache.ring and t > cache.size:
        slots, new = slots[t - cache.size :], new[t - cache.size :]
    return cache.replace(k=tuple(k), v=tuple(v), pos=cache.pos.at[slots].set(new), length=cache.length + t)


def cached_multi_head_attention(
    cache: KVCache,
    layer: int,
    x_BTD,
    wq_DHE,
    wk_DKE,
    wv_DKE,
    wo_HED,
    *,
    bq_HE=None,
    bk_KE=None,
    bv_KE=None,
    bo_D=None,
    qkv_fn=None,
    bias_fn=None,
    sink_qkv_fn=None,
    impl: str = "naive",
    slopes_H=None,
    block: int = 64,
):
    """`multi_head_attention` (lab.ops.attention) of T new tokens that also attend to the cached positions.
    `qkv_fn` rewires/rotates the new q, k, v (RoPE at their absolute positions: cached keys are stored
    rotated); `bias_fn` is as in `attend`. With sinks, `sink_qkv_fn` (if given) makes the queries used
    against the sink keys (RoPE at the renumbered positions). `impl`, `slopes_H`, `block`: as in `attend`.

    Returns (y_BTD, k_BSKD, v_BSKD): the output and layer `layer`'s cache arrays with the new rows written.
    """
    q, k, v = project_qkv(x_BTD, wq_DHE, wk_DKE, wv_DKE, bq_HE, bk_KE, bv_KE, qkv_fn)
    q_sinks = None
    if cache.sinks and sink_qkv_fn is not None:
        q_sinks = project_qkv(x_BTD, wq_DHE, wk_DKE, wv_DKE, bq_HE, bk_KE, bv_KE, sink_qkv_fn)[0]
    o, k_all, v_all = attend(
        cache,
        layer,
        q,
        k,
        v,
        bias_fn=bias_fn,
        q_sinks_BTHD=q_sinks,
        impl=impl,
        slopes_H=slopes_H,
        block=block,
    )
    return project_out(o, wo_HED, bo_D, x_BTD.dtype), k_all, v_all


def filled(cache: KVCache, t) -> KVCache:
    """A full cache marked as holding positions 0..t-1 (its K/V arrays as they are), the next token at
    position t. What a decode step costs depends on the cache's fixed shape, not on the values it holds, so
    timing a step at position t needs no prefill of t tokens."""
    s = jnp.arange(cache.size, dtype=jnp.int32)
    return cache.replace(pos=jnp.where(s < t, s, -1), length=jnp.asarray(t, jnp.int32))
