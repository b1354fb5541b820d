"""Normalization layers as pure functions: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019)."""

import jax.numpy as jnp


def layer_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray | None = None, eps: float = 1e-5):
    """Normalize over the last axis to zero mean and unit variance, then scale (and shift).

    Statistics are computed in float32 even for bfloat16 inputs; the output has the input's dtype.
    The variance is the biased (population) one, as in PyTorch's LayerNorm.
    """
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * (1.0 / jnp.sqrt(var + eps)) * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def rms_norm(x: jnp.ndarray, scale: jnp.ndarray, eps: float = 1e-6):
    """Root-mean-square normalization (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * scale.

    Unlike layer_norm it does not subtract the mean (and has no bias), so it is cheaper and keeps the
    mean direction of the residual stream. Statistics in float32; the output has the input's dtype.
    """
    x32 = x.astype(jnp.float32)
    ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * (1.0 / jnp.sqrt(ms + eps)) * scale.astype(jnp.float32)
    return y.astype(x.dtype)
