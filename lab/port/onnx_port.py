"""The PyTorch port (lab.port.torch_port) exported to ONNX and run by ONNX Runtime.

    path = export(module, "model.onnx", example_tokens)  # batch and length dynamic
    sess = session(path)                                 # an onnxruntime.InferenceSession
    logits = run(sess, tokens_BT)                        # (B, T, V) float32

The export traces the module with PyTorch's TorchScript-based exporter (`dynamo=False`, opset 17, which has
LayerNormalization): it needs no `onnxscript` and traces our plain module exactly (torch 2.13 still ships it,
with a deprecation warning that we silence here). The parameters are stored in the file as initializers, so
the file alone is the model. A module holding int8 codes (`torch_port.from_params(cfg, params, codes)`) is
exported without constant folding, which would multiply the codes out into float32 initializers: its file
holds int8 initializers, a Cast and a Mul by the scale per weight, one byte per weight. torch, onnx and onnxruntime are the optional `[stacks]` extra.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

OPSET = 17


def export(module, path, example_tokens_BT) -> Path:
    """Write `module` (no cache) as an ONNX graph to `path`, batch and time axes dynamic; returns the path."""
    import onnx
    import torch
    from torch.nn.utils import parametrize

    path = Path(path)
    tokens = torch.as_tensor(np.asarray(example_tokens_BT), dtype=torch.long)
    axes = {"tokens": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            module,
            (tokens,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["tokens"],
            output_names=["logits"],
            dynamic_axes=axes,
            do_constant_folding=not any(parametrize.is_parametrized(m) for m in module.modules()),
        )
    onnx.checker.check_model(str(path))
    return path


def session(path, threads: int | None = None):
    """An ONNX Runtime session for the file (CUDA when onnxruntime has it, else CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    return ort.InferenceSession(str(path), opts, providers=providers)


def run(sess, tokens_BT) -> np.ndarray:
    """(B, T, V) float32 logits."""
    return sess.run(["logits"], {"tokens": np.asarray(tokens_BT, np.int64)})[0]
