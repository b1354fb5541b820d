"""Export through `jax.export`: a function traced once to StableHLO, serialized to bytes (a flatbuffer, so the
`flatbuffers` package must be installed), reloaded and run in a fresh Python process that has never seen
the model's code, only the file.

    blob = serialize(fn, example_tokens)          # fn(tokens) -> logits, weights baked in as constants
    outs = run_in_fresh_process({"m": path}, tokens)  # deserialize + call in a child interpreter

Weights closed over by `fn` become constants of the module: an int8 model whose function holds int8 codes
and float32 scales (dequantized inside) is stored at about a quarter of the float model's size.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

CHILD = """
import sys
import numpy as np
from jax import export
tokens = np.load(sys.argv[1])
for i in range(2, len(sys.argv), 2):
    exported = export.deserialize(bytearray(open(sys.argv[i], "rb").read()))
    np.save(sys.argv[i + 1], np.asarray(exported.call(tokens)))
"""


def missing_requirement() -> str | None:
    """None if serialization can work here, else a sentence naming what to install."""
    if importlib.util.find_spec("flatbuffers") is None:
        return "jax.export serialization needs the 'flatbuffers' package (pip install flatbuffers==25.12.19)"
    return None


def serialize(fn, *example_args) -> bytes:
    """`fn` traced for arguments shaped like `example_args`, lowered to StableHLO and serialized."""
    return bytes(jax.export.export(jax.jit(fn))(*example_args).serialize())


def run_in_fresh_process(paths: dict, tokens, timeout: float = 300.0) -> dict:
    """{name: output} of each serialized function in `paths` ({name: file}) on `tokens`, all computed by one
    new Python interpreter that imports only jax and numpy."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.npy"
        np.save(inp, np.asarray(tokens))
        outs = {name: Path(tmp) / f"out{i}.npy" for i, name in enumerate(paths)}
        args = [a for name, p in paths.items() for a in (str(p), str(outs[name]))]
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(inp), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ),
        )
        if r.returncode != 0:
            raise RuntimeError(f"the exported module failed in a fresh process: {r.stderr[-2000:]}")
        return {name: np.load(o) for name, o in outs.items()}
