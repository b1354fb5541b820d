"""Pure `jax.numpy` functions: arrays in, arrays out. No Flax, no config objects, nothing from `lab`.

Shapes are in the names: B batch, T query positions, S key positions, H query heads, K key/value heads,
D head (or model) dimension, V vocabulary.
"""

from lab.ops.activations import geglu, gelu, gelu_tanh, relu, silu, swiglu
from lab.ops.attention import (
    attend_one_query,
    attention_weights,
    dot_product_attention,
    multi_head_attention,
)
from lab.ops.fence import cotangent_fence
from lab.ops.losses import cross_entropy, token_cross_entropy
from lab.ops.masks import bidirectional_mask, causal_mask, combine_masks, padding_mask, prefix_lm_mask
from lab.ops.matmul import linear
from lab.ops.norms import layer_norm, rms_norm
from lab.ops.positional import alibi_bias, alibi_slopes, apply_rope, rope_angles, sinusoidal_positions

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "attend_one_query",
    "attention_weights",
    "bidirectional_mask",
    "causal_mask",
    "combine_masks",
    "cotangent_fence",
    "cross_entropy",
    "dot_product_attention",
    "geglu",
    "gelu",
    "gelu_tanh",
    "layer_norm",
    "linear",
    "multi_head_attention",
    "padding_mask",
    "prefix_lm_mask",
    "relu",
    "rms_norm",
    "rope_angles",
    "silu",
    "sinusoidal_positions",
    "swiglu",
    "token_cross_entropy",
]
