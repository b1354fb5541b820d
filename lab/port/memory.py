"""Peak memory of one call, each stack by its own allocator's accounting (not process RSS, which allocator
caching and page reuse blur). Every figure counts the bytes a call allocates above what was live before it:
parameters already loaded are not counted.

    numpy_peak(fn)          NumPy: tracemalloc's peak of the Python allocations during fn() (NumPy reports its
                            array buffers to tracemalloc)
    xla_peak(compiled)      JAX jit / exported StableHLO: XLA's compiled memory analysis, temporaries plus
                            outputs (deterministic; on a GPU these are device bytes)
    torch_peak(fn)          PyTorch eager / torch.compile: the CPU allocator's allocations and frees recorded
                            by torch.profiler(profile_memory=True), the running sum's maximum

JAX without jit (one dispatch per op) and ONNX Runtime (its arena) expose no per-call allocator statistics;
`PEAK_METHOD` says so for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import tracemalloc

PEAK_METHOD = {
    "numpy_f64": "tracemalloc peak",
    "jax_jit": "XLA temp + output",
    "stablehlo": "XLA temp + output",
    "torch_eager": "torch.profiler allocator peak",
    "torch_compile": "torch.profiler allocator peak",
    "jax_nojit": None,  # op by op: no whole-program analysis, and the CPU client keeps no allocator statistics
    "onnxruntime": None,  # its arena allocator has no statistics in the Python API
}


def numpy_peak(fn) -> int:
    """Peak bytes traced by tracemalloc while fn() runs (tracing only for the call)."""
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def xla_peak(compiled) -> int:
    """Temporaries plus outputs of a compiled XLA executable (`jax.jit(f).lower(...).compile()`)."""
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def allocation_peak(deltas) -> int:
    """The maximum of the running sum of signed allocation sizes (in the order they happened), at least 0."""
    peak = run = 0
    for d in deltas:
        run += d
        peak = max(peak, run)
    return int(peak)


def torch_peak(fn) -> int:
    """Peak bytes the PyTorch CPU allocator holds for fn() above what it held before: the profiler's memory
    events (one per allocation and free, signed bytes), in time order, through `allocation_peak`."""
    from torch.profiler import ProfilerActivity, profile

    with _without_usdt_lines():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.remove(path)
    mem = sorted(  # by time only (a stable sort keeps the recorded order of events at the same time)
        ((e["ts"], e["args"]["Bytes"]) for e in events
         if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0),  # 0: the CPU
        key=lambda ev: ev[0],
    )  # fmt: skip
    return allocation_peak(b for _, b in mem)


@contextlib.contextmanager
def _without_usdt_lines():
    """The profiler's C++ side (kineto) prints a "USDT: ... profiler_start/stop" line to the process's stderr
    at every start and stop, which no setting turns off; file descriptor 2 goes to a scratch file for the
    call, and every other line is written back."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            kept = [
                ln for ln in scratch.read().splitlines(keepends=True) if b"SyncActivityProfiler" not in ln
            ]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()
