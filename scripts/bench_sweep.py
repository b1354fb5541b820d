"""Benchmark: is a sweep faster as one vmapped program than as its members one after another?

    python scripts/bench_sweep.py [--shape tiny|nanogpt|both] [--members 8] [--steps 50] [--devices N]

Runs, in one process (so the machine's load is shared fairly), the same sweep of N seeds with each
strategy of lab.train.sweep: "loop" (members one after another, each its own compiled call), "vmap"
(one program on one device) and "shard" (the vmapped program with its sweep axis over the host's CPU
devices), and prints steady-state throughput of each as a ratio to "loop". It also prints which strategy
"auto" picks. Compilation is excluded; each timing is the median of --repeats runs.

Bad input (an unknown option or strategy, a count below 1) is refused in one line on stderr with exit status
2, before JAX starts.
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

SHAPES = {
    # the tiny shape and nanoGPT's shakespeare_char CPU recipe
    "tiny": dict(n_layers=2, d_model=64, n_heads=4, max_len=32, batch=8),
    "nanogpt": dict(n_layers=4, d_model=128, n_heads=4, max_len=64, batch=12),
    # the e04 cpu preset's text model
    "e04": dict(n_layers=2, d_model=64, n_heads=4, max_len=64, batch=16),
}


SMOKE_HELP = "tiny sizes, to check the script runs end to end (tests/test_readme.py); figures mean nothing; writes nothing"


def main(argv=None) -> int:
    from _script_args import Parser, at_least

    from lab.cli import STRATEGIES  # lab.train.sweep's, without importing JAX

    p = Parser(prog="bench_sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="both", choices=[*SHAPES, "both"])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--devices", type=int, default=None, help="host CPU devices (default: cores, max 8)")
    p.add_argument(
        "--strategies",
        default="loop,vmap,shard,auto",
        help=f"comma-separated, of: {', '.join(STRATEGIES)}; loop first: ratios are vs loop",
    )
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = p.parse_args(argv)
    at_least(p, args, members=1, steps=1, repeats=1, devices=1)
    unknown = [x for x in args.strategies.split(",") if x not in STRATEGIES]
    if unknown:
        p.error(f"--strategies: unknown {unknown[0]!r}; allowed: {', '.join(STRATEGIES)}")
    if args.smoke:
        args.shape, args.members, args.steps, args.repeats, args.write = "tiny", 2, 2, 1, False
        args.strategies = "loop,auto"  # the script's whole path with two compilations, not four

    from lab.runtime import default_cpu_devices, init_jax

    init_jax(args.devices or default_cpu_devices())
    import jax
    import numpy as np

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.model.flops import train_flops_per_step
    from lab.train import TrainConfig, init_sweep, members_grid
    from lab.train.sweep import SweepRunner

    lines = []

    def say(line=""):
        print(line, flush=True)
        lines.append(line)

    say(
        f"JAX {jax.__version__}, {len(jax.devices())} {jax.devices()[0].platform} devices on {os.cpu_count()} cores; "
        f"{args.members} members (seeds) per sweep; median of {args.repeats} calls of {args.steps} steps each."
    )
    say()
    say(
        "| shape | GFLOP per member-step | strategy | devices | padded | compile (s) | ms/step (sweep) | tokens/s | vs loop |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    rng = np.random.default_rng(0)
    data = {
        "train": rng.integers(0, 65, 200_000).astype(np.uint8),
        "val": rng.integers(0, 65, 20_000).astype(np.uint8),
    }
    strategies = args.strategies.split(",")
    for shape in shapes:
        s = SHAPES[shape]
        cfg = ModelConfig(
            vocab_size=65,
            max_len=s["max_len"],
            n_layers=s["n_layers"],
            d_model=s["d_model"],
            n_heads=s["n_heads"],
        )
        tcfg = TrainConfig(steps=10_000, batch_size=s["batch"], warmup_steps=10)
        task = TextWindows(cfg.max_len, cfg.vocab_size)
        members = members_grid(range(args.members), [1e-3])
        tokens = args.members * s["batch"] * cfg.max_len * args.steps
        work = train_flops_per_step(cfg, s["batch"], cfg.max_len)
        base = None
        for strategy in strategies:
            runner = SweepRunner(cfg, tcfg, task, len(members), strategy)
            state = runner.place(init_sweep(cfg, tcfg, members))
            d = runner.place_data(data)
            state, m = runner.train(state, d, args.steps)  # compile + warm up
            jax.block_until_ready(m)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                state, m = runner.train(state, d, args.steps)
                jax.block_until_ready((state, m))
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            base = t if strategy == "loop" else base
            name = f"auto -> {runner.strategy}" if strategy == "auto" else strategy
            ratio = f"{base / t:.2f}x" if base else "n/a"
            say(
                f"| {shape} | {work / 1e9:.2f} | {name} | {len(runner.devices)} | {runner.n_padded} | "
                f"{runner.compile_seconds:.1f} | {1000 * t / args.steps:.1f} | {tokens / t:,.0f} | {ratio} |"
            )
    if args.write:
        from lab.report import record_benchmark

        record_benchmark("sweep", "Sweep strategies", "bench_sweep.py", argv, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
