"""Benchmark: is a sweep faster as one vmapped program than as its members one after another?

    python scripts/bench_sweep.py [--shape tiny|nanogpt|both] [--members 8] [--steps 50] [--devices N]

Runs, in one process (so the machine's load is shared fairly), the same sweep of N seeds with each
strategy of lab.train.sweep: "loop" (members one after another, each its own compiled call), "vmap"
(one program on one device) and "shard" (the vmapped program with its sweep axis over the host's CPU
devices), and prints steady-state throughput of each as a ratio to "loop". It also prints which strategy
"auto" picks. Compilation is excluded; each timing is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

SHAPES = {
    # the tiny shape and nanoGPT's shakespeare_char CPU recipe
    "tiny": dict(n_layers=2, d_model=64, n_heads=4, max_len=32, batch=8),
    "nanogpt": dict(n_layers=4, d_model=128, n_heads=4, max_len=64, batch=12),
    # the e04 cpu preset's text model
    "e04": dict(n_layers=2, d_model=64, n_heads=4, max_len=64, batch=16),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="both", choices=[*SHAPES, "both"])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=50, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--devices", type=int, default=None, help="host CPU devices (default: cores, max 8)")
    p.add_argument("--strategies", default="loop,vmap,shard,auto")
    args = p.parse_args(argv)

    from lab.runtime import default_cpu_devices, init_jax

    init_jax(args.devices or default_cpu_devices())
    import jax
    import numpy as np

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.model.flops import train_flops_per_step
    from lab.train import TrainConfig, init_sweep, members_grid
    from lab.train.sweep import SweepRunner, resolve

    print(
        f"# jax {jax.__version__}, {len(jax.devices())} {jax.devices()[0].platform} devices, "
        f"{os.cpu_count()} cores; {args.members} members, {args.steps} steps per call"
    )
    shapes = list(SHAPES) if args.shape == "both" else [args.shape]
    rng = np.random.default_rng(0)
    data = {
        "train": rng.integers(0, 65, 200_000).astype(np.uint8),
        "val": rng.integers(0, 65, 20_000).astype(np.uint8),
    }
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
        results = {}
        for strategy in args.strategies.split(","):
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
            results[strategy] = t
            print(
                f"{shape:8s} {strategy:6s} devices={len(runner.devices)} padded={runner.n_padded:2d} "
                f"compile={runner.compile_seconds:5.1f}s  {1000 * t / args.steps:7.2f} ms/step  "
                f"{tokens / t:10.0f} tok/s",
                flush=True,
            )
        base = results.get("loop")
        if base:
            ratios = "  ".join(f"{k}={base / v:.2f}x" for k, v in results.items())
            work = train_flops_per_step(cfg, s["batch"], cfg.max_len)
            print(
                f"{shape:8s} throughput vs loop: {ratios}; {work / 1e9:.2f} GFLOP per member-step, auto picks "
                f"{resolve('auto', len(members), None, work)[0]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
