"""Position signals for attention: sinusoidal tables, rotary embeddings (RoPE) and ALiBi biases.

- Sinusoidal (Vaswani et al. 2017): added to the token embeddings,
      PE[t, 2i] = sin(t / 10000^(2i/D)),  PE[t, 2i+1] = cos(t / 10000^(2i/D)).
- RoPE (Su et al. 2021, RoFormer): rotates queries and keys, so the score q_t . k_s depends on the
  positions only through t - s. **Convention: interleaved pairs.** Dimensions (2i, 2i+1) form one 2-D
  pair rotated by the angle t * theta^(-2i/E) (E = head dimension), as in RoFormer and GPT-J. (GPT-NeoX
  and the Hugging Face LLaMA code pair dimension i with i + E/2 instead, "rotate_half"; the two are the
  same map up to a fixed permutation of the head dimensions, but weights are not interchangeable.)
- ALiBi (Press et al. 2022, "Train Short, Test Long"): no position in the embeddings; a per-head bias
  -m_h * (t - s) added to the score of query t and key s (s <= t). Head slopes are the geometric sequence
  m_h = 2^(-8h/n), h = 1..n, for n a power of two; otherwise the n' = 2^floor(log2 n) slopes of n' heads
  followed by every other slope of 2n' heads (the paper's code, `get_slopes`). For keys after the query
  (bidirectional attention, which the paper does not cover) we use the symmetric -m_h * |t - s|.
"""

import math

import jax.numpy as jnp


def sinusoidal_positions(t: int, d: int, base: float = 10000.0, offset: int = 0) -> jnp.ndarray:
    """(T, D) float32 sinusoidal table for positions offset .. offset+T-1 (D even or odd)."""
    pos = (offset + jnp.arange(t)).astype(jnp.float32)[:, None]  # offset may be traced (KV-cache decoding)
    i = jnp.arange(0, d, 2, dtype=jnp.float32)[None, :]  # 2i
    angle = pos / base ** (i / d)  # (T, ceil(D/2))
    pe = jnp.zeros((t, d), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(angle))
    return pe.at[:, 1::2].set(jnp.cos(angle[:, : d // 2]))


def rope_angles(t: int, e: int, theta: float = 10000.0, offset: int = 0) -> jnp.ndarray:
    """(T, E/2) float32 rotation angles: position p, pair i -> p * theta^(-2i/E)."""
    if e % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {e}")
    inv_freq = theta ** (-jnp.arange(0, e, 2, dtype=jnp.float32) / e)  # (E/2,)
    pos = (offset + jnp.arange(t)).astype(jnp.float32)  # offset may be traced (KV-cache decoding)
    return pos[:, None] * inv_freq[None, :]


def apply_rope(x_BTHE: jnp.ndarray, theta: float = 10000.0, offset: int = 0) -> jnp.ndarray:
    """Rotate each interleaved pair (x[..., 2i], x[..., 2i+1]) of every head by its position's angle.

    (B, T, H, E) in, same shape and dtype out; the rotation is computed in float32.
    """
    _, t, _, e = x_BTHE.shape
    ang = rope_angles(t, e, theta, offset)[None, :, None, :]  # (1, T, 1, E/2)
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    x = x_BTHE.astype(jnp.float32)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return jnp.stack([y0, y1], axis=-1).reshape(x.shape).astype(x_BTHE.dtype)


def alibi_slopes(n_heads: int) -> jnp.ndarray:
    """(H,) ALiBi head slopes (Press et al. 2022), including head counts that are not powers of two."""
    if n_heads < 1:
        raise ValueError(f"ALiBi needs at least one head, got {n_heads}")

    def pow2(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = pow2(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = pow2(closest) + pow2(2 * closest)[0::2][: n_heads - closest]
    return jnp.asarray(slopes, jnp.float32)


def alibi_bias(n_heads: int, t: int, s: int | None = None) -> jnp.ndarray:
    """(H, T, S) float32 additive score bias -m_h * |q_pos - k_pos|; with S > T the queries are the last T
    of the S positions (as in lab.ops.masks.causal_mask)."""
    s = t if s is None else s
    q_pos = jnp.arange(t)[:, None] + (s - t)
    dist = jnp.abs(q_pos - jnp.arange(s)[None, :]).astype(jnp.float32)
    return -alibi_slopes(n_heads)[:, None, None] * dist[None]
