"""Pure `jax.numpy` functions: arrays in, arrays out. No Flax, no config objects, nothing from `lab`.

Shapes are in the names: B batch, T query positions, S key positions, H query heads, K key/value heads,
D head (or model) dimension, V vocabulary.
"""

from lab.ops.activations import gelu, gelu_tanh, relu
from lab.ops.attention import attention_weights, dot_product_attention, multi_head_attention
from lab.ops.losses import cross_entropy, token_cross_entropy
from lab.ops.masks import bidirectional_mask, causal_mask, combine_masks, padding_mask, prefix_lm_mask
from lab.ops.norms import layer_norm

__all__ = [
    "attention_weights",
    "bidirectional_mask",
    "causal_mask",
    "combine_masks",
    "cross_entropy",
    "dot_product_attention",
    "gelu",
    "gelu_tanh",
    "layer_norm",
    "multi_head_attention",
    "padding_mask",
    "prefix_lm_mask",
    "relu",
    "token_cross_entropy",
]
