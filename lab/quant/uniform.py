"""Uniform integer quantizers and dequantizers as pure jax.numpy functions (Jacob et al. 2018; Nagel et al.
2021, "A White Paper on Neural Network Quantization").

Every weight is handled as a matrix w_KN: K input features (the axes a matmul contracts) by N output
channels. A *granularity* says which entries share one scale:
  "tensor"   one scale for the whole matrix;
  "channel"  one scale per output channel (column n, over all K inputs);
  "group"    one scale per output channel and per block of `group` consecutive inputs (group-wise, as
             GPTQ and AWQ store 4-bit weights), so K must be a multiple of `group`.
A *symmetric* quantizer maps [-absmax, absmax] to the signed integers [-2^(b-1), 2^(b-1) - 1] with zero
exactly at 0: scale = absmax / (2^(b-1) - 1/2) (the half step lets the largest magnitude use the top
bucket, as qwix does), q = clip(round(w / scale)), w ~ q * scale. An *asymmetric* one maps [min, max]
(widened to contain 0, so 0 stays exact) to [0, 2^b - 1]: scale = (max - min) / (2^b - 1),
zero = round(-min / scale), q = clip(round(w / scale) + zero), w ~ (q - zero) * scale.

`bits` may be a traced scalar (QAT trains several bit widths as one vmapped program); granularity,
symmetry and group size are static. `fake_quant` is quantize-then-dequantize with a straight-through
estimator (Bengio et al. 2013): its value is the dequantized weight, its gradient the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

GRANULARITIES = ("tensor", "channel", "group")
MIN_BITS, MAX_BITS = 2, 8
TINY = 1e-12  # a scale below this (an all-zero block) is replaced by 1, so zeros stay zeros


def int_range(bits, symmetric: bool):
    """(qmin, qmax) of the integer grid: signed [-2^(b-1), 2^(b-1)-1] or unsigned [0, 2^b - 1]."""
    bits = jnp.asarray(bits, jnp.float32)
    if symmetric:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return jnp.zeros_like(bits), 2.0**bits - 1


def symmetric_steps(bits):
    """The symmetric absmax scale's divisor: scale = absmax / (2^(b-1) - 0.5), so the largest |x| rounds to
    the edge of the grid rather than past it."""
    return 2.0 ** (bits - 1) - 0.5


def check_layout(k: int, granularity: str, group: int = 0) -> int:
    """The block length along K that shares a scale (K for "channel"), after refusing a bad layout."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    if granularity == "group":
        if group < 1 or k % group:
            raise ValueError(f"group size {group} does not divide the input dimension {k}")
        return group
    return k


def _blocks(w_KN, granularity: str, group: int):
    """w as (G, g, N): G blocks of g inputs (tensor and channel: one block of all K)."""
    k, n = w_KN.shape
    g = check_layout(k, granularity, group)
    return w_KN.reshape(k // g, g, n)


def calibrate(w_KN, bits, *, symmetric: bool = True, granularity: str = "channel", group: int = 0):
    """(scale, zero), each broadcastable to the blocks (G, 1, N) of `w_KN` ((1, 1, 1) per tensor).

    The zero point is 0 for a symmetric quantizer."""
    b = _blocks(jnp.asarray(w_KN, jnp.float32), granularity, group)
    axes = (0, 1, 2) if granularity == "tensor" else (1,)
    bits = jnp.asarray(bits, jnp.float32)
    if symmetric:
        absmax = jnp.max(jnp.abs(b), axis=axes, keepdims=True)
        scale = absmax / symmetric_steps(bits)
        scale = jnp.where(scale < TINY, 1.0, scale)
        return scale, jnp.zeros_like(scale)
    lo = jnp.minimum(jnp.min(b, axis=axes, keepdims=True), 0.0)
    hi = jnp.maximum(jnp.max(b, axis=axes, keepdims=True), 0.0)
    scale = (hi - lo) / (2.0**bits - 1)
    scale = jnp.where(scale < TINY, 1.0, scale)
    return scale, jnp.round(-lo / scale)


def quantize(w_KN, scale, zero, bits, *, symmetric: bool = True):
    """Integer codes (K, N), as float32 values on the grid of `int_range` (see `to_storage`)."""
    k, n = w_KN.shape
    blocks = jnp.asarray(w_KN, jnp.float32).reshape(scale.shape[0], k // scale.shape[0], n)
    qmin, qmax = int_range(bits, symmetric)
    q = jnp.clip(jnp.round(blocks / scale) + zero, qmin, qmax)
    return q.reshape(k, n)


def dequantize(q_KN, scale, zero):
    """Float weights (K, N) from integer codes and their (G, 1, N) scales and zero points."""
    k, n = q_KN.shape
    blocks = jnp.asarray(q_KN, jnp.float32).reshape(scale.shape[0], -1, n)
    return ((blocks - zero) * scale).reshape(k, n)


def quant_dequant(w_KN, bits, *, symmetric: bool = True, granularity: str = "channel", group: int = 0):
    """Round-to-nearest quantization of `w_KN` and back: the float weights the quantized model computes with."""
    scale, zero = calibrate(w_KN, bits, symmetric=symmetric, granularity=granularity, group=group)
    return dequantize(quantize(w_KN, scale, zero, bits, symmetric=symmetric), scale, zero)


def fake_quant(w_KN, bits, *, symmetric: bool = True, granularity: str = "channel", group: int = 0):
    """`quant_dequant` in the forward pass, the identity in the backward pass (straight-through estimator)."""
    wq = quant_dequant(w_KN, bits, symmetric=symmetric, granularity=granularity, group=group)
    return w_KN + jax.lax.stop_gradient(wq - w_KN)


def to_storage(q_KN, symmetric: bool):
    """The codes in the integer type they are stored in: int8 (signed, symmetric) or uint8 (asymmetric)."""
    return q_KN.astype(jnp.int8 if symmetric else jnp.uint8)


def quant_activations(x_NK, bits: int = 8, *, per: str = "token", keep=None):
    """Dynamic symmetric quantization of activations (N rows, K features) and back.

    per="tensor": one absmax scale for the whole array; per="token": one per row (vector-wise, as
    LLM.int8()). `keep` (K,) bool marks feature columns left in float (LLM.int8()'s mixed-precision
    decomposition of outlier features): they neither set a scale nor get rounded."""
    x = jnp.asarray(x_NK, jnp.float32)
    inside = x if keep is None else jnp.where(keep[None, :], 0.0, x)
    axes = None if per == "tensor" else -1
    if per not in ("tensor", "token"):
        raise ValueError(f"activation granularity {per!r} is not one of tensor, token")
    absmax = jnp.max(jnp.abs(inside), axis=axes, keepdims=True)
    scale = absmax / symmetric_steps(bits)
    scale = jnp.where(scale < TINY, 1.0, scale)
    q = jnp.clip(jnp.round(inside / scale), -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) * scale
    return q if keep is None else jnp.where(keep[None, :], x, q)
