"""Attention masks as boolean arrays: True means "query t may attend to key s".

Every mask broadcasts against attention scores of shape (B, H, T, S): a (T, S) mask applies to every
example and head, a (B, 1, T, S) mask differs per example. Combine masks with `combine_masks` (logical and).
"""

import jax.numpy as jnp


def causal_mask(t: int, s: int | None = None) -> jnp.ndarray:
    """(T, S) lower-triangular mask: position t sees keys 0..t. With S > T the queries are the last T
    positions of the S keys (the usual layout when earlier keys come from a cache)."""
    s = t if s is None else s
    q_pos = jnp.arange(t)[:, None] + (s - t)
    return jnp.arange(s)[None, :] <= q_pos


def bidirectional_mask(t: int, s: int | None = None) -> jnp.ndarray:
    """(T, S) all-True mask: every position sees every position (encoder / masked-LM attention)."""
    return jnp.ones((t, t if s is None else s), dtype=bool)


def padding_mask(valid_BS: jnp.ndarray) -> jnp.ndarray:
    """(B, 1, 1, S) mask from a (B, S) boolean array marking real (non-padding) keys."""
    return valid_BS[:, None, None, :].astype(bool)


def prefix_lm_mask(prefix_len_B: jnp.ndarray, t: int) -> jnp.ndarray:
    """(B, 1, T, T) prefix-LM mask (Raffel et al. 2020): the first `prefix_len` positions attend to each
    other bidirectionally, later positions attend causally (to the whole prefix and to themselves)."""
    q = jnp.arange(t)[:, None]
    k = jnp.arange(t)[None, :]
    in_prefix = k[None] < jnp.asarray(prefix_len_B)[:, None, None]
    return ((k <= q)[None] | in_prefix)[:, None]


def combine_masks(*masks: jnp.ndarray | None) -> jnp.ndarray | None:
    """Logical and of the masks that are not None (None if all are None)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else jnp.logical_and(out, m)
    return out


def sliding_window_mask(t: int, window: int, s: int | None = None, sinks: int = 0) -> jnp.ndarray:
    """(T, S) causal sliding-window mask (Beltagy et al. 2020): query t sees keys t-window+1..t, plus the
    first `sinks` keys (attention sinks, Xiao et al. 2023). With S > T the queries are the last T of S
    positions, as in `causal_mask`. window >= S gives exactly `causal_mask(t, s)`."""
    s = t if s is None else s
    q_pos = jnp.arange(t)[:, None] + (s - t)
    k_pos = jnp.arange(s)[None, :]
    return (k_pos <= q_pos) & ((q_pos - k_pos < window) | (k_pos < sinks))
