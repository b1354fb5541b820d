"""Quantization: integer quantizers (symmetric/asymmetric; per-tensor, per-channel, group-wise), PTQ of a
parameter tree, GPTQ, fake quantization for QAT, activation quantization at every linear layer (found in the
jaxpr), and export through jax.export.

    uniform.py    calibrate / quantize / dequantize / quant_dequant / fake_quant / quant_activations
    tree.py       Scheme, ptq_tree, fake_quant_tree, quantize_tree / dequantize_tree, model_bytes
    gptq.py       gptq(w, H, bits, ...), hessian, layer_error
    intercept.py  intercept(fn, hook, params, *args): every linear layer's input through a hook
    qat.py        qat_forward: the training driver's forward hook with fake-quantized weights
    export.py     serialize / run_in_fresh_process (jax.export, StableHLO)
"""

from lab.quant.tree import Scheme, dequantize_tree, fake_quant_tree, model_bytes, ptq_tree, quantize_tree
from lab.quant.uniform import (
    calibrate,
    dequantize,
    fake_quant,
    quant_activations,
    quant_dequant,
    quantize,
)

__all__ = [
    "Scheme",
    "calibrate",
    "dequantize",
    "dequantize_tree",
    "fake_quant",
    "fake_quant_tree",
    "model_bytes",
    "ptq_tree",
    "quant_activations",
    "quant_dequant",
    "quantize",
    "quantize_tree",
]
