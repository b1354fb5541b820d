"""Benchmark: what the gradient fences (lab.ops.cotangent_fence) buy, in one process.

    python scripts/bench_fence.py                        # synthetic char data
    python scripts/bench_fence.py --data file:PATH --write

Compiles bench_train.py's nanoGPT CPU training step twice in the same process: as the lab builds it (a fence
after each residual sub-layer) and with the fences replaced by the plain identity, times them in alternating
rounds (these machines are shared and noisy, so only the ratio means something) and checks that both give
the same losses bit for bit over the timed steps' first chunk. It also counts the operands of the largest fused
kernel in each compiled program: without the fences XLA:CPU fuses the residual stream's whole gradient chain
into each weight-gradient transpose, and that count grows with depth.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", default=None, help="corpus (e.g. tinyshakespeare or file:PATH); default synthetic"
    )
    p.add_argument("--rounds", type=int, default=8, help="alternating timing rounds")
    p.add_argument(
        "--calls", type=int, default=5, help="compiled calls of --chunk steps per round and program"
    )
    p.add_argument("--chunk", type=int, default=10, help="train steps per compiled call (lax.scan)")
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    args = p.parse_args(argv)
    for name in ("rounds", "calls", "chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    from lab.runtime import init_jax

    init_jax(1)
    import bench_train as bt
    import jax

    import lab.ops

    train, val, vocab = bt.load_tokens(args.data)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    def build():
        """(a chunk function, its compiled program's text, the first chunk's losses from a fresh state)."""
        _, _, chunk, runner = bt.bench_jax(train, val, vocab, args)
        hlo = runner._train_cache[args.chunk].as_text()  # compiled by bench_jax
        return chunk, hlo, _first_losses(runner, train, val, args.chunk)

    fenced, fenced_hlo, fenced_loss = build()
    real = lab.ops.cotangent_fence
    lab.ops.cotangent_fence = lambda x: x  # lab.model.layers looks it up on lab.ops at trace time
    try:
        plain, plain_hlo, plain_loss = build()
    finally:
        lab.ops.cotangent_fence = real
    t = bt.interleaved_timing(
        {"fenced": fenced, "plain": plain},
        {"fenced": args.chunk, "plain": args.chunk},
        {"fenced": args.calls, "plain": args.calls},
        args.rounds,
    )
    say(
        f"JAX {jax.__version__} on 1 x {jax.devices()[0].device_kind}; nanoGPT CPU shape {bt.SHAPE}, batch {bt.BATCH}"
    )
    say(
        f"- with the fences {1000 * t['fenced']:.1f} ms/step, without {1000 * t['plain']:.1f} ms/step: "
        f"fenced / plain = {t['fenced'] / t['plain']:.2f} (medians of {args.rounds} alternating rounds)"
    )
    say(
        f"- largest fused kernel: {_largest_fusion(fenced_hlo)} operands with the fences, "
        f"{_largest_fusion(plain_hlo)} without"
    )
    same = np.array_equal(fenced_loss, plain_loss)
    say(
        f"- losses of the first {args.chunk} steps from the same start: {'identical' if same else 'DIFFERENT'}"
    )
    if args.write:
        from lab.report import record_benchmark

        record_benchmark("fence", "Gradient fences (lab.ops.cotangent_fence)", "bench_fence.py", argv, lines)
    return 0 if same else 1


def _first_losses(runner, train, val, n_steps: int) -> np.ndarray:
    """The losses of `n_steps` steps from a fresh state of the bench's one member."""
    from lab.train import Member, init_sweep

    state = runner.place(init_sweep(runner.cfg, runner.tcfg, [Member(1337, 1e-3)]))
    data = runner.place_data({"train": train, "val": val})
    _, metrics = runner.train(state, data, n_steps)
    return np.asarray(metrics["loss"])


def _largest_fusion(hlo: str) -> int:
    return max(m.count("%") for m in re.findall(r"= \S+ fusion\((.*?)\), kind=", hlo))


if __name__ == "__main__":
    sys.exit(main())
