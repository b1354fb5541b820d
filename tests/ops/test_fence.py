"""lab.ops.cotangent_fence: the identity in value and gradient, and what it is for: XLA stores the residual
stream's gradient at each fence instead of recomputing the chain of every later block in each consumer, so the
largest fused kernel of a model's backward pass no longer grows with depth."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from lab.model import ModelConfig, init
from lab.ops import cotangent_fence
from lab.train.step import loss_fn


def test_the_fence_changes_no_value_and_no_gradient():
    x = jax.random.normal(jax.random.key(0), (3, 5, 7)) * 30.0
    w = jax.random.normal(jax.random.key(1), (7,))
    f = lambda x: jnp.sum(jnp.sin(x) * w + x**2)
    fenced = lambda x: f(cotangent_fence(x) * 1.5) + jnp.sum(cotangent_fence(x))
    plain = lambda x: f(x * 1.5) + jnp.sum(x)
    np.testing.assert_array_equal(cotangent_fence(x), x)
    np.testing.assert_array_equal(jax.jit(jax.grad(fenced))(x), jax.jit(jax.grad(plain))(x))
    # what the module docstring says of a non-finite cotangent: it comes back NaN (the step diverges anyway)
    g = jax.vjp(cotangent_fence, x)[1](jnp.full_like(x, jnp.inf))[0]
    assert bool(jnp.all(jnp.isnan(g)))


def _largest_fusion_inputs(n_layers: int) -> int:
    """The most operands any fused kernel reads in the compiled gradient of a tiny model's loss."""
    cfg = ModelConfig(vocab_size=32, max_len=16, n_layers=n_layers, d_model=32, n_heads=2)
    params = init(cfg, jax.random.key(0))
    tokens = jnp.zeros((4, 16), jnp.int32)
    batch = {"inputs": tokens, "targets": tokens, "mask": jnp.ones((4, 16), bool)}
    grad = jax.jit(jax.grad(lambda p: loss_fn(p, cfg, batch)[0]))
    hlo = grad.lower(params).compile().as_text()
    operands = [m.count("%") for m in re.findall(r"= \S+ fusion\((.*?)\), kind=", hlo)]
    return max(operands)


def test_the_backward_passs_largest_fusion_does_not_grow_with_depth():
    # Without the fences XLA:CPU fused the whole residual-gradient chain above each block into that block's
    # weight-gradient transposes: at 2 / 4 / 6 layers the largest fusion read 55 / 100 / 144 operands; with them,
    # 14 at every depth.
    shallow, deep = _largest_fusion_inputs(2), _largest_fusion_inputs(6)
    assert deep <= shallow + 4, (shallow, deep)
