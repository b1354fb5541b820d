"""Benchmark: one model over a device mesh (lab.train.mesh) — data-parallel overhead and FSDP memory per device.

    python scripts/bench_mesh.py [--devices 8] [--steps 20] [--repeats 5] [--write]

In one process with --devices host CPU devices (so the machine's load is shared fairly), at nanoGPT's
shakespeare_char shape (4 layers, d_model 128, block 64; batch 16, the nearest that 8 devices divide):
  * throughput of one model trained data-parallel over all devices (mesh.data = devices) against the same
    model on one device, as a ratio. CPU host devices share the machine's cores, so this measures the
    overhead of splitting the batch and reducing gradients, not a speedup (the goal is >= 0.8);
  * per-device bytes at fsdp = 1, 2, 4, 8: the parameters and AdamW state read from the arrays' shardings,
    and the compiled train step's arguments + temporaries from XLA's memory analysis (deterministic), beside
    the 1/n line (fsdp=1's bytes / n).

Bad input (an unknown option, --devices not a power of two >= 2, --steps or --repeats below 1) is refused in
one line on stderr with exit status 2, before JAX starts.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # this checkout's lab, and _script_args beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SHAPE = dict(n_layers=4, d_model=128, n_heads=4, max_len=64)
BATCH = 16
SMOKE_HELP = "tiny sizes, to check the script runs end to end (tests/test_readme.py); figures mean nothing; writes nothing"


def main(argv=None) -> int:
    from _script_args import Parser, at_least

    p = Parser(prog="bench_mesh.py", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8, help="host CPU devices (a power of two, at least 2)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = p.parse_args(argv)
    if args.devices < 2 or args.devices & (args.devices - 1):
        p.error(f"--devices must be a power of two >= 2, got {args.devices}")
    at_least(p, args, steps=1, repeats=1)
    shape, batch = dict(SHAPE), BATCH
    if args.smoke:
        shape, batch = dict(n_layers=1, d_model=32, n_heads=2, max_len=16), 8
        args.devices, args.steps, args.repeats, args.write = 2, 2, 1, False

    from lab.runtime import init_jax

    init_jax(args.devices)
    import jax
    import numpy as np

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.train import TrainConfig, init_sweep, members_grid
    from lab.train.mesh import MeshConfig, device_bytes
    from lab.train.sweep import SweepRunner

    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    cfg = ModelConfig(vocab_size=65, **shape)
    tcfg = TrainConfig(steps=10_000, batch_size=batch, warmup_steps=10)
    task = TextWindows(cfg.max_len, cfg.vocab_size)
    members = members_grid([0], [1e-3])
    rng = np.random.default_rng(0)
    data = {
        "train": rng.integers(0, 65, 200_000).astype(np.uint8),
        "val": rng.integers(0, 65, 20_000).astype(np.uint8),
    }
    n = args.devices

    def runner_for(mesh):
        r = SweepRunner(cfg, tcfg, task, 1, "vmap" if mesh is None else "auto", mesh=mesh)
        state = r.place(init_sweep(cfg, tcfg, members))
        return r, state, r.place_data(data)

    say(
        f"JAX {jax.__version__}, {len(jax.devices())} {jax.devices()[0].platform} devices on {os.cpu_count()} cores; "
        f"shape {shape}, batch {batch}; median of {args.repeats} calls of {args.steps} steps, interleaved."
    )
    say()
    # --- data parallel: interleave the two layouts' timed calls so that load drifts hit both alike ---------
    runs = {"1 device": runner_for(None), f"data={n}": runner_for(MeshConfig(data=n))}
    times = {k: [] for k in runs}
    for k, (r, state, d) in runs.items():
        state, m = r.train(state, d, args.steps)  # compile + warm up
        jax.block_until_ready(m)
        runs[k] = (r, state, d)
    for _ in range(args.repeats):
        for k, (r, state, d) in runs.items():
            t0 = time.perf_counter()
            state, m = r.train(state, d, args.steps)
            jax.block_until_ready((state, m))
            times[k].append(time.perf_counter() - t0)
            runs[k] = (r, state, d)
    tokens = batch * cfg.max_len * args.steps
    base = statistics.median(times["1 device"])
    say("| layout | devices | compile (s) | ms/step | tokens/s | throughput vs 1 device |")
    say("|---|---|---|---|---|---|")
    for k, (r, _, _) in runs.items():
        t = statistics.median(times[k])
        say(
            f"| {k} | {len(r.devices) if r.mesh else 1} | {r.compile_seconds:.1f} | {1000 * t / args.steps:.1f} | "
            f"{tokens / t:,.0f} | {base / t:.2f}x |"
        )
    say()
    # --- FSDP memory per device ----------------------------------------------------------------------------
    say(
        "| fsdp | params + AdamW per device (KiB) | 1/n line (KiB) | compiled step: arguments + temporaries per device (KiB) | 1/n line (KiB) |"
    )
    say("|---|---|---|---|---|")
    first = None
    f = 1
    while f <= n:
        mesh = MeshConfig(sweep=n // f, fsdp=f) if f > 1 else None
        r, state, d = runner_for(mesh)
        held = device_bytes((state.params, state.opt_state))["per_device"]
        mem = r.compile_train(args.steps, state, d).memory_analysis()
        step = mem.argument_size_in_bytes + mem.temp_size_in_bytes
        first = first or (held, step)
        say(
            f"| {f} | {held / 1024:,.1f} | {first[0] / f / 1024:,.1f} | {step / 1024:,.1f} | {first[1] / f / 1024:,.1f} |"
        )
        f *= 2
    say()
    say(
        "Per-device state follows 1/n up to the replicated vectors (norm gains, step counts). The compiled "
        "step's arguments include the whole (replicated) training data; its temporaries hold the gathered "
        "weights and this device's activations."
    )
    if args.write:
        from lab.report import record_benchmark

        record_benchmark("mesh", "One model over a device mesh", "bench_mesh.py", argv, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
