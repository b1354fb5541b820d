"""MLP nonlinearities: elementwise (GELU, ReLU, SiLU) and gated (SwiGLU, GeGLU).

GELU (Hendrycks & Gimpel 2016) is x * Phi(x) with Phi the standard normal CDF; `gelu` is the exact erf
form (PyTorch's default), `gelu_tanh` the tanh approximation GPT-2 used.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import erf


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    return x * 0.5 * (1.0 + erf(x / jnp.sqrt(2.0).astype(x.dtype)))


def gelu_tanh(x: jnp.ndarray) -> jnp.ndarray:
    """Tanh-approximate GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    c = jnp.sqrt(2.0 / jnp.pi).astype(x.dtype)
    return 0.5 * x * (1.0 + jnp.tanh(c * (x + 0.044715 * x**3)))


def relu(x: jnp.ndarray) -> jnp.ndarray:
    """max(x, 0)."""
    return jnp.maximum(x, 0)


def silu(x: jnp.ndarray) -> jnp.ndarray:
    """SiLU / swish (Ramachandran et al. 2017): x * sigmoid(x)."""
    return x * jax.nn.sigmoid(x)


# Gated linear units (Shazeer 2020, "GLU Variants Improve Transformer"): the MLP's hidden layer is the
# elementwise product of an activated "gate" projection and a linear "up" projection of the same input.
def swiglu(gate: jnp.ndarray, up: jnp.ndarray) -> jnp.ndarray:
    """SwiGLU: silu(gate) * up."""
    return silu(gate) * up


def geglu(gate: jnp.ndarray, up: jnp.ndarray) -> jnp.ndarray:
    """GeGLU: gelu(gate) * up (exact, erf GELU)."""
    return gelu(gate) * up
