"""A gradient fence: the identity whose backward pass makes XLA store the cotangent instead of recomputing it.

    x = cotangent_fence(x)   # same value, same gradient

Why it exists (measured on XLA:CPU, JAX 0.10): XLA's fusion pass counts elementwise adds and multiplies as
free to duplicate. In a residual network the gradient of the residual stream is a long elementwise chain (each
later block's norm backward adds its term), and XLA never stores it: every consumer fusion recomputes the chain
from the matmul outputs up, and at each depth the transposed copy that feeds a weight-gradient matmul reads the
chain of every block above it, so the recomputation grows with depth squared. In the nanoGPT CPU benchmark
(4 layers, d_model 128) those copies took 16 of 54 ms per training step.

The fence's backward multiplies the cotangent by exp(0 * g), which is exactly 1 for every finite g. exp is an
op XLA's fusion pass will not duplicate, so the chain is computed once and stored at the fence; values are
unchanged (a finite g comes back bit for bit; an infinite or NaN one comes back NaN, and the step is diverged
either way). Forward-mode differentiation (jax.jvp) does not pass through it (a jax.custom_vjp).
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def cotangent_fence(x: jnp.ndarray) -> jnp.ndarray:
    """x itself; in the backward pass, the cotangent is computed once and stored here (module docstring)."""
    return x


def _fence_fwd(x):
    return x, None


def _fence_bwd(_, g):
    return (g * jnp.exp(g * 0),)


cotangent_fence.defvjp(_fence_fwd, _fence_bwd)
