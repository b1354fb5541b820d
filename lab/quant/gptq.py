"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): quantize a weight matrix one input row at a time and push each row's rounding error onto the
rows not yet quantized, weighted by the inverse Hessian of the layer's reconstruction error.

For a linear layer y = x W with W (K, N) and calibration inputs X (M, K), the error ||X W - X Q||^2 has
Hessian H = 2 X^T X (the same for every output column). Optimal Brain Quantization: after quantizing row i,
the remaining rows j > i move by -err_i * [H^-1]_ij / [H^-1]_ii; GPTQ does it in a fixed row order with the
upper Cholesky factor U of H^-1 (H^-1 = U^T U), whose row i holds exactly those ratios for the rows after i:
    for i in 0..K-1:  q_i = Q(w_i);  e_i = (w_i - q_i) / U_ii;  w_j -= U_ij e_i  (j > i)
A damping of `damp` times the mean diagonal keeps H invertible; inputs that are never non-zero (H_ii = 0)
make their rows irrelevant: they are set to 0. Scales (per channel, or per group of inputs and channel) are
fixed from the original matrix before the loop ("static groups", as AutoGPTQ's option; the paper's default
takes each group's scales from the updated weights when the loop reaches it). This is the unblocked form:
the paper's lazy batch updates give the same numbers faster.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lab.quant import uniform as qz


def hessian(x_NK) -> jax.Array:
    """X^T X (K, K) of calibration inputs (rows N); add several batches' and divide by their total rows."""
    x = jnp.asarray(x_NK, jnp.float32)
    return x.T @ x


def inverse_factor(h_KK, damp: float = 0.01):
    """(U (K, K), dead (K,)): the upper Cholesky factor of the damped inverse Hessian (H^-1 = U^T U) and the
    inputs that are never non-zero. One matrix per compiled program is the safe use on CPU: with jaxlib
    0.10.2, a program holding a dozen LAPACK inverses and factorizations at once deadlocked (every thread
    waiting), so `gptq_tree`-style callers factor each layer in its own call."""
    h = jnp.asarray(h_KK, jnp.float32)
    k = h.shape[0]
    dead = jnp.diag(h) <= 0
    h = h + jnp.diag(jnp.where(dead, 1.0, 0.0))
    h = h + damp * jnp.mean(jnp.diag(h)) * jnp.eye(k)
    return jnp.linalg.cholesky(jnp.linalg.inv(h)).T, dead


def gptq(
    w_KN,
    h_KK,
    bits,
    *,
    symmetric: bool = True,
    granularity: str = "channel",
    group: int = 0,
    damp: float = 0.01,
):
    """The dequantized GPTQ weights (K, N) of `w_KN` for inputs with second moment `h_KK` (any positive
    multiple of X^T X)."""
    u, dead = inverse_factor(h_KK, damp)
    return gptq_factored(w_KN, u, dead, bits, symmetric=symmetric, granularity=granularity, group=group)


def gptq_factored(
    w_KN, u_KK, dead_K, bits, *, symmetric: bool = True, granularity: str = "channel", group: int = 0
):
    """`gptq` from the inverse Hessian's factor and dead inputs (`inverse_factor`)."""
    w = jnp.asarray(w_KN, jnp.float32)
    k, n = w.shape
    qz.check_layout(k, granularity, group)
    u = u_KK
    w = jnp.where(dead_K[:, None], 0.0, w)
    # Scales from the original weights, per block of g inputs (per channel: g = K; the paper's "static
    # groups" variant for groups), so each row's grid is known before the loop.
    scale, zero = qz.calibrate(w, bits, symmetric=symmetric, granularity=granularity, group=group)
    g_rows = jnp.repeat(jnp.arange(scale.shape[0]), k // scale.shape[0])  # each row's block
    s_rows = jnp.broadcast_to(scale[:, 0, :], (scale.shape[0], n))[g_rows]  # (K, N)
    z_rows = jnp.broadcast_to(zero[:, 0, :], (scale.shape[0], n))[g_rows]
    qmin, qmax = qz.int_range(bits, symmetric)
    rows = jnp.arange(k)

    def body(i, carry):
        w, q_out = carry
        s, z = s_rows[i], z_rows[i]
        wi = w[i]
        qi = (jnp.clip(jnp.round(wi / s) + z, qmin, qmax) - z) * s
        err = (wi - qi) / u[i, i]
        w = w - jnp.where(rows[:, None] > i, u[i][:, None] * err[None, :], 0.0)
        return w, q_out.at[i].set(qi)

    _, q = jax.lax.fori_loop(0, k, body, (w, jnp.zeros_like(w)))
    return q


def layer_error(x_NK, w_KN, q_KN) -> jax.Array:
    """||X W - X Q||^2 / N: the mean squared error of the layer's outputs that GPTQ minimizes."""
    d = jnp.asarray(x_NK, jnp.float32) @ (jnp.asarray(w_KN) - jnp.asarray(q_KN))
    return jnp.sum(d * d) / x_NK.shape[0]
