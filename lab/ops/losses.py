"""Language-modelling losses."""

import jax
import jax.numpy as jnp


def token_cross_entropy(logits_BTV: jnp.ndarray, targets_BT: jnp.ndarray) -> jnp.ndarray:
    """(B, T) per-token negative log-likelihood in nats, computed in float32 with log-softmax."""
    logp = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets_BT[..., None].astype(jnp.int32), axis=-1)[..., 0]


def cross_entropy(logits_BTV, targets_BT, mask_BT=None):
    """Mean next-token cross-entropy over the positions where `mask_BT` is true (all if None).

    Returns (mean loss in nats, number of counted tokens). A mask selects, for example, only the answer
    part of a toy task or only the non-padding tokens; with an all-false mask the mean is 0, not NaN.
    """
    nll = token_cross_entropy(logits_BTV, targets_BT)
    if mask_BT is None:
        return jnp.mean(nll), jnp.asarray(nll.size, jnp.float32)
    m = mask_BT.astype(jnp.float32)
    n = jnp.sum(m)
    return jnp.sum(nll * m) / jnp.maximum(n, 1.0), n
