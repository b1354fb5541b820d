"""The JAX model exported with `jax.export` (lab.quant.export): StableHLO serialized to bytes with the
weights as constants, then reloaded from the bytes alone and called.

    blob = export(cfg, params, example_tokens)     # fixed (B, T) shape
    fn = load(blob)                                # fn(tokens (B, T)) -> logits, no model code involved
    outs = qexport.run_in_fresh_process({"m": file}, tokens)   # the same in a new interpreter
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lab.model import apply
from lab.quant import export as qexport


def export(cfg, params, example_tokens_BT) -> bytes:
    """The float32 model with `params` baked in, traced for tokens shaped like the example, serialized."""
    params = jax.tree_util.tree_map(jnp.asarray, params)  # device arrays: a traced index into NumPy fails
    return qexport.serialize(lambda t: apply(cfg, params, t), np.asarray(example_tokens_BT, np.int32))


def load(blob: bytes):
    """A callable tokens -> logits (NumPy in, NumPy out) from serialized bytes."""
    exported = jax.export.deserialize(bytearray(blob))
    return lambda tokens: np.asarray(exported.call(np.asarray(tokens, np.int32)))


def compile_for(blob: bytes, tokens):
    """The reloaded module compiled by XLA for `tokens`' shape (what `load`'s callable runs), for its
    memory analysis."""
    exported = jax.export.deserialize(bytearray(blob))
    return jax.jit(exported.call).lower(np.asarray(tokens, np.int32)).compile()
