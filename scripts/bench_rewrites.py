"""Benchmark: what each of the lab's rewrites for XLA:CPU buys, in one process.

    python scripts/bench_rewrites.py                        # synthetic char data, both rewrites
    python scripts/bench_rewrites.py --data file:PATH --write
    python scripts/bench_rewrites.py --smoke                # the same code path, figures mean nothing

Two places in the model are written for the compiler, not for the reader, and each costs a line of
explanation; this script measures whether each still earns it. For each rewrite it compiles bench_train.py's
nanoGPT CPU training step twice in the same process, as the lab builds it and with the rewrite undone, and
times the two in alternating rounds (these machines are shared and noisy, so only the ratio means something):

- `fence` (lab.ops.cotangent_fence after each residual sub-layer, undone: the plain identity). Without the
  fences XLA:CPU fuses the residual stream's whole gradient chain into each weight-gradient transpose, so the
  largest fused kernel's operand count grows with depth; the script counts it in both programs. The fence
  changes no value: the first chunk's losses must be identical, bit for bit.
- `linear` (lab.ops.linear in the MLP, undone: `x @ w` on 3-D activations). Without it each MLP weight
  gradient is a dot fed by a transposed copy; the script counts the copy and transpose instructions in both
  programs. The weight gradients are the same sums in another order, so the first chunk's losses must agree
  to float32 rounding (within 1e-5), not bit for bit.

The exit code is 1 if a check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOSS_TOLERANCE = 1e-5  # |loss difference| allowed over the first chunk where the rewrite reorders sums


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"bench_rewrites.py: error: {message} (see --help)\n")


def main(argv=None) -> int:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", default=None, help="corpus (e.g. tinyshakespeare or file:PATH); default synthetic"
    )
    p.add_argument(
        "--rewrite", choices=("fence", "linear", "all"), default="all", help="which rewrite (default all)"
    )
    p.add_argument("--rounds", type=int, default=8, help="alternating timing rounds")
    p.add_argument(
        "--calls", type=int, default=5, help="compiled calls of --chunk steps per round and program"
    )
    p.add_argument("--chunk", type=int, default=10, help="train steps per compiled call (lax.scan)")
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    p.add_argument(
        "--smoke", action="store_true", help="one short round, to check the script runs; writes nothing"
    )
    args = p.parse_args(argv)
    for name in ("rounds", "calls", "chunk"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    args.attention = "naive"  # bench_jax's model: bench_train's published one
    if args.smoke:
        args.rounds, args.calls, args.chunk, args.write = 1, 1, 2, False

    from lab.runtime import init_jax

    init_jax(1)
    import bench_train as bt

    from lab.errors import LabError

    try:
        train, val, vocab = bt.load_tokens(args.data)
    except LabError as e:  # a missing, empty or corrupted corpus: one line, exit 2 (exit 1 is a failed check)
        p.exit(2, f"bench_rewrites.py: error: --data {args.data}: {e}\n")
    names = ("fence", "linear") if args.rewrite == "all" else (args.rewrite,)
    ok = [_bench(name, REWRITES[name], train, val, vocab, args, argv) for name in names]
    return 0 if all(ok) else 1


def _undo_fence():
    import lab.ops

    return lab.ops, "cotangent_fence", lambda x: x  # lab.model.layers looks it up on lab.ops at trace time


def _undo_linear():
    import lab.model.layers

    return lab.model.layers, "linear", lambda x, w: x @ w


FUSION = re.compile(r"= \S+ fusion\((.*?)\), kind=")  # a fused kernel's operand list
# an instruction that moves data (an instruction, not an op name in the metadata)
MOVE = re.compile(r"= \S+ (?:copy|transpose)\(")


def _largest_fusion(hlo: str) -> str:
    return f"largest fused kernel {max(m.count('%') for m in FUSION.findall(hlo))} operands"


def _moves(hlo: str) -> str:
    return f"{len(MOVE.findall(hlo))} copy/transpose instructions"


# name: (section title, (module, attribute, replacement) that undoes it, what to count in each compiled
#        program, must losses be identical)
REWRITES = {
    "fence": ("Gradient fences (lab.ops.cotangent_fence)", _undo_fence, _largest_fusion, True),
    "linear": ("Merged-row matmuls in the MLP (lab.ops.linear)", _undo_linear, _moves, False),
}


def _bench(name, rewrite, train, val, vocab, args, argv) -> bool:
    """Time the lab's step against the step with `rewrite` undone; print (and with --write record) the section."""
    import bench_train as bt
    import jax

    from lab.runtime import available_cores

    title, undo, count, exact = rewrite
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    def build():
        """(a chunk function, its compiled program's text, the first chunk's losses from a fresh state)."""
        _, _, chunk, runner = bt.bench_jax(train, val, vocab, args)
        hlo = runner._train_cache[args.chunk].as_text()  # compiled by bench_jax
        return chunk, hlo, _first_losses(runner, train, val, args.chunk)

    lab_chunk, lab_hlo, lab_loss = build()
    with mock.patch.object(*undo()):  # traced while undone; the compiled program keeps it
        undone_chunk, undone_hlo, undone_loss = build()
    t = bt.interleaved_timing(
        {"lab": lab_chunk, "undone": undone_chunk},
        {"lab": args.chunk, "undone": args.chunk},
        {"lab": args.calls, "undone": args.calls},
        args.rounds,
    )
    say(
        f"JAX {jax.__version__} on 1 x {jax.devices()[0].device_kind}, {available_cores()} CPU core(s); "
        f"nanoGPT CPU shape {bt.SHAPE}, batch {bt.BATCH}"
    )
    say(
        f"- with the rewrite {1000 * t['lab']:.1f} ms/step, without {1000 * t['undone']:.1f} ms/step: "
        f"with / without = {t['lab'] / t['undone']:.2f} (medians of {args.rounds} alternating rounds)"
    )
    say(f"- compiled training step: {count(lab_hlo)} with the rewrite, {count(undone_hlo)} without")
    diff = float(np.max(np.abs(lab_loss - undone_loss)))
    ok = diff == 0 if exact else diff <= LOSS_TOLERANCE
    want = "identical" if exact else f"within {LOSS_TOLERANCE:g}"
    say(
        f"- losses of the first {args.chunk} steps from the same start: max difference {diff:.1e} "
        f"(must be {want}: {'yes' if ok else 'NO'})"
    )
    if args.write:
        from lab.report import record_benchmark

        record_benchmark(name, title, "bench_rewrites.py", argv, lines)
    return ok


def _first_losses(runner, train, val, n_steps: int) -> np.ndarray:
    """The losses of `n_steps` steps from a fresh state of the bench's one member."""
    from lab.train import Member, init_sweep

    state = runner.place(init_sweep(runner.cfg, runner.tcfg, [Member(1337, 1e-3)]))
    data = runner.place_data({"train": train, "val": val})
    _, metrics = runner.train(state, data, n_steps)
    return np.asarray(metrics["loss"])


if __name__ == "__main__":
    sys.exit(main())
