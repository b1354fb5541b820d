"""One model in other stacks: each port is a pure function of the parameter tree (as Orbax restores it) and
the `ModelConfig`, so the same trained checkpoint runs everywhere and the differences are the stacks'.

    numpy_ref.py   forward / greedy in NumPy float64: the reference (no JAX)
    torch_port.py  a PyTorch nn.Module written from our config, loaded from the tree; a simple KV cache
    onnx_port.py   that module through torch.onnx.export, run by ONNX Runtime
    stablehlo.py   jax.export (lab.quant.export): serialized StableHLO, reloaded and called
    memory.py      peak bytes of one call by each stack's own allocator accounting
    parity.py      NumPy measures: max |Δ logits|, KL to the reference, top-1 agreement, first divergence

PyTorch, ONNX and ONNX Runtime are the optional `[stacks]` extra (`pip install -e .[stacks]`);
`missing(stack)` says what a stack lacks here, before anything runs.
"""

from __future__ import annotations

import importlib.util

# every stack the lab runs a model in; the value: the packages it needs beyond the lab's own
STACKS: dict[str, tuple[str, ...]] = {
    "jax_jit": (),
    "jax_nojit": (),
    "numpy_f64": (),
    "torch_eager": ("torch",),
    "torch_compile": ("torch",),
    "onnxruntime": ("torch", "onnx", "onnxruntime"),
    "stablehlo": ("flatbuffers",),
}
EXTRA_HINT = "needs the [stacks] extra: pip install -e .[stacks]"


def missing(stack: str) -> str | None:
    """None if `stack` can run here, else one sentence naming what is missing and how to install it."""
    if stack not in STACKS:
        raise ValueError(f"unknown stack {stack!r}; known: {', '.join(STACKS)}")
    absent = [m for m in STACKS[stack] if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    if absent == ["flatbuffers"]:  # a base dependency, not the extra: lab.quant.export says what to install
        from lab.quant.export import missing_requirement

        return f"stack {stack}: {missing_requirement()}"
    return f"stack {stack} needs {', '.join(absent)}, not installed here: {EXTRA_HINT}"
