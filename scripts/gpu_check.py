"""The gpu preset, proven: every experiment's `gpu` preset cut to a few hundred steps, GPT-2 small's training
step (tokens/s and MFU) and KV-cache decoding at the `gpu` shape, on one accelerator, within a time budget
(default 570 s); it writes results/gpu.md, which nothing else writes. Run through scripts/gpu_check.sh:

    scripts/gpu_check.sh                          # on a GPU machine (pip install -e '.[gpu]'): results/gpu.md
    scripts/gpu_check.sh --dry                    # the same path on CPU at smoke sizes: scratch/gpu_check/dry/gpu.md
    scripts/gpu_check.sh --dry --only e05 --out gpu-dry.md  # a subset, to another file (tests/test_gpu_check.py)
    LAB_SOURCE_COMMIT=<hash> python3 scripts/gpu_check.py   # a copy of the checkout without .git, with the
                                                            # machine's own JAX: gpu.md names the commit as given

Each piece runs in its own process, timed by the wall clock, in this order:
  1. a device probe (platform, device kind and count, JAX version); without --dry, a machine where JAX sees
     no GPU is refused before anything runs;
  2. scripts/bench_train.py --shape gpt2-small --dtype bfloat16 --compare-attention fused: GPT-2 small's
     training step, MFU against the device's peak bfloat16 FLOP/s, with the model's own (naive) attention and
     with model.attention='fused' (jax.nn.dot_product_attention; cuDNN's flash attention on a GPU), timed
     in alternating rounds in one process. The first H200 run, naive only, measured MFU 17.5%;
  3. scripts/bench_generate.py --preset gpu: decoding with and without the KV cache at the gpu preset's shape;
  4. `lab run <id> --preset gpu --seeds 2 --set ... --fresh` for every experiment `lab list` shows (the
     template e00 only when --only names it), into a scratch results root, never the published results/;
     --jobs of them at a time (default 4 on a GPU, 1 with --dry), each process taking GPU memory as it needs
     it (XLA_PYTHON_CLIENT_PREALLOCATE=false) rather than three quarters of it at start.

Why several at a time: the first run on an H200 (results/gpu.md, 2026-12-04), one after another, spent 129 s
on the two benchmarks and 230 s on e01, and e02 outlived the rest of a 470 s budget: a cut run's time is
mostly compiling and host work, which 16 cores do side by side while the GPU idles. The benchmarks still run
alone, first, so their timings are not shared.

The overrides (OVERRIDES) keep each gpu preset's model, batch and sequence sizes, which are what a GPU run
has to prove, and cut the training to a few hundred steps and lists of separately compiled variants to a
few: every variant compiles its own program, and tests/model checks each variant's code on CPU. --dry runs
the smoke preset with the same keys at smoke sizes and the gpu preset's compute dtype (model.dtype), and the
benchmarks with --smoke. Before anything runs, every experiment's overridden config is resolved in both
modes, so a renamed key fails here (and in its test) at once, in one line.

A piece that fails, or outlives what is left of --budget, is recorded as such and the rest still run;
the exit status is then 1. Bad arguments: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):  # this checkout's lab, even from a venv installed from another
    if str(_path) not in sys.path:  # checkout; and _script_args beside this file
        sys.path.insert(0, str(_path))

SEEDS = 2  # the fewest that still give each verdict a spread over seeds

# experiment id -> {key: (value for the GPU run, value for --dry)}. Steps are multiples of the gpu preset's
# log_every (50); the GPU lists keep each experiment's required entries (e02 "none", e09 model.n_heads 8,
# e10 layernorm-pre and gelu). The dry values are the smoke preset's.
OVERRIDES: dict[str, dict[str, tuple[str, str]]] = {
    "e00": {"train.steps": ("200", "20")},
    "e01": {
        "train.steps": ("200", "20"),
        "reverse.steps": ("200", "20"),
        "lm_bpe_sizes": ("1024,16384", "300"),
        "gpt2": ("none", "none"),  # GPT-2's ranks are a download; a GPU machine may be offline
    },
    "e02": {
        "train.steps": ("200", "20"),
        "positions": ("none,rope,alibi", "none,learned,alibi"),
        "masks": ("causal", "causal"),
    },
    "e03": {"train.steps": ("200", "20"), "heads": ("1,6", "1,2")},
    "e04": {
        "train.steps": ("200", "20"),
        "sort.steps": ("200", "20"),
        "lr_sweep_steps": ("100", "20"),
        "depths": ("1,6", "1,2"),
    },
    "e05": {
        "train.steps": ("200", "20"),
        "temperatures": ("0.0,0.7,1.0", "0.0,1.0"),
        "top_ks": ("0,20", "0"),
        "top_ps": ("1.0,0.9", "1.0,0.9"),
    },
    "e06": {"uncached_max_tokens": ("4096", "64"), "position_calls": ("5", "3")},
    "e07": {"train.steps": ("200", "20"), "text_train.steps": ("200", "20")},
    "e08": {"train.steps": ("200", "20"), "experts": ("2,4,8", "2")},
    "e09": {
        "train.steps": ("200", "10"),
        "uptrain_steps": ("50", "10"),
        "groups": ("1,8", "1,2"),
        "decode_batches": ("1,128", "1,4"),
        "decode_repeats": ("5", "3"),
    },
    "e10": {
        "train.steps": ("200", "20"),
        "norms": ("layernorm-pre,none-pre,rmsnorm-post", "layernorm-pre,none-pre,rmsnorm-post"),
        "activations": ("gelu,swiglu", "gelu"),
    },
    "e12": {  # every sweep cut; PPO's steps are rollout batches (log_every 10)
        "pretrain.steps": ("200", "10"),
        "finetune.steps": ("100", "10"),
        "instruct.steps": ("300", "20"),
        "reward.steps": ("100", "60"),
        "ppo.steps": ("20", "10"),
        "dpo.steps": ("100", "10"),
    },
    "e16": {"train.steps": ("200", "20"), "collapse_train.steps": ("100", "10")},  # >= 5 generations kept
    "e14": {  # the float sweep and the QAT sweep cut; GPTQ at 4 bits only
        "train.steps": ("200", "20"),
        "qat_steps": ("100", "10"),
        "gptq_bits": ("4", "4"),
    },
    "e13": {  # four sizes, 4e5 to 2.5e7 non-embedding parameters; budgets 50, 100, 200 steps of 64 x 256 tokens
        "train.warmup_steps": ("20", "2"),  # first: the gpu preset warms up for 200 steps
        "budgets": ("819200,1638400,3276800", "640,1280,2560"),
        "sizes": ("2x128,4x256,6x384,8x512", "1x8,1x16,1x24,1x32"),
    },
    "e15": {  # no torch.compile (minutes of inductor compiling); PyTorch / ONNX Runtime need the [stacks] extra
        "train.steps": ("200", "20"),
        "stacks": (
            "jax_jit,jax_nojit,numpy_f64,torch_eager,onnxruntime,stablehlo",
            "jax_jit,jax_nojit,numpy_f64,torch_eager,onnxruntime,stablehlo",
        ),
        "lengths": ("16,80", "16"),
        "batches": ("2,8", "2"),
    },
}
DEFAULT_CUT = {"train.steps": ("200", "20")}  # an experiment without an entry (when it has train.steps)

BENCH_TRAIN = [
    "scripts/bench_train.py", "--shape", "gpt2-small", "--dtype", "bfloat16", "--compare-attention", "fused"
]  # fmt: skip
BENCH_GENERATE = ["scripts/bench_generate.py", "--batches", "1,16,128"]
VERDICTS = ("SUPPORTED", "QUALIFIED", "REFUTED", "INCONCLUSIVE")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"gpu_check: error: {message} (see `scripts/gpu_check.sh --help`)\n")


def fail(message: str) -> None:
    print(f"gpu_check: error: {message}", file=sys.stderr)
    sys.exit(2)


@dataclass
class Piece:
    """One command: what it is, its argv (after the interpreter), how it went."""

    name: str
    argv: list[str]
    shown: str  # the command as a reader would type it
    seconds: float = 0.0
    status: str = "not run"  # ok | failed (exit N) | timed out | skipped: ...
    stdout: str = ""
    stderr_tail: str = ""
    extra: dict = field(default_factory=dict)


def rel(path: Path) -> str:
    """`path` relative to the checkout when inside it (committed files name no machine's directories)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _skip(piece: Piece) -> None:
    piece.status = "skipped: the time budget was spent"
    print(f"gpu_check: {piece.name}: {piece.status}", file=sys.stderr, flush=True)


class _Running:
    """One piece's process, started with this interpreter from the checkout's root in its own process group
    (so a kill takes whatever it started), its output going to temporary files."""

    def __init__(self, piece: Piece, env: dict, deadline: float | None, log_dir: Path | None = None):
        self.piece = piece
        self.left = None if deadline is None else deadline - time.monotonic()
        print(f"gpu_check: {piece.name}: {piece.shown}", file=sys.stderr, flush=True)
        self.t0 = time.monotonic()
        if log_dir is None:
            self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        else:  # kept: where a piece's time went, when only its files come back from a GPU machine
            log_dir.mkdir(parents=True, exist_ok=True)
            self.out = open(log_dir / f"{piece.name}.stdout.txt", "w+", encoding="utf-8")
            self.err = open(log_dir / f"{piece.name}.stderr.txt", "w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, *piece.argv],
            cwd=ROOT,
            env=env,
            stdout=self.out,
            stderr=self.err,
            start_new_session=True,
        )

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the piece and anything it started
        self.proc.wait()

    def finish(self, rc: int | None) -> None:
        """Record the outcome: `rc` is the exit status, None when the budget ran out (the piece is killed)."""
        piece = self.piece
        if rc is None:
            self.kill()
            piece.status = f"timed out (budget: {self.left:.0f} s left when it started)"
        else:
            piece.status = "ok" if rc == 0 else f"failed (exit {rc})"
        piece.seconds = time.monotonic() - self.t0
        for f in (self.out, self.err):
            f.seek(0)
        piece.stdout = self.out.read()
        lines = [x for x in self.err.read().splitlines() if x.strip()]
        piece.stderr_tail = lines[-1].strip() if lines else ""
        self.out.close()
        self.err.close()
        print(
            f"gpu_check: {piece.name}: {piece.status} in {piece.seconds:.1f} s", file=sys.stderr, flush=True
        )


def run_pieces(
    pieces: list[Piece],
    env: dict,
    deadline: float | None,
    jobs: int = 1,
    done=None,
    log_dir: Path | None = None,
) -> None:
    """Run `pieces`, at most `jobs` at a time, in order of the list; each within the deadline (killed when it
    runs out), none started once it has passed. `done(piece)` is called as each one ends. With `log_dir`, each
    piece's whole output is kept there as <name>.stdout.txt and <name>.stderr.txt."""
    pending, running = list(pieces), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                piece = pending.pop(0)
                if deadline is not None and deadline - time.monotonic() <= 1:
                    _skip(piece)
                    done and done(piece)
                else:
                    running.append(_Running(piece, env, deadline, log_dir))
            if not running:
                continue
            time.sleep(0.05 if jobs == 1 else 0.5)
            for r in list(running):
                rc = r.proc.poll()
                if rc is None and (deadline is None or time.monotonic() < deadline):
                    continue
                r.finish(rc)
                running.remove(r)
                done and done(r.piece)
    except KeyboardInterrupt:
        for r in running:
            r.kill()
        raise


def run_piece(piece: Piece, env: dict, deadline: float | None, log_dir: Path | None = None) -> None:
    """Run one piece alone (run_pieces with one job)."""
    run_pieces([piece], env, deadline, log_dir=log_dir)


def probe(env: dict) -> dict:
    """The device JAX gives a fresh process (never this one: on a GPU, initializing JAX here would hold
    memory the pieces need)."""
    code = (
        "import json, jax, jaxlib; d = jax.devices(); print(json.dumps({'platform': d[0].platform, "
        "'device_kind': d[0].device_kind, 'count': len(d), 'jax': jax.__version__, 'jaxlib': jaxlib.__version__}))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"JAX could not start: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def commit() -> str:
    """The checkout's commit; where the checkout is a copy without .git (as a GPU machine is often handed one),
    the commit named by LAB_SOURCE_COMMIT, marked as given rather than read."""
    from lab.provenance import git_commit

    given = os.environ.get("LAB_SOURCE_COMMIT", "").strip()
    found = git_commit(ROOT)
    if found is None and given:
        return f"{given} (given by LAB_SOURCE_COMMIT: the checkout was a copy without .git)"
    return found or "unknown (not a git checkout)"


def experiment_plan(only: list[str] | None, dry: bool):
    """[(experiment, overrides as --set arguments, note)] for the chosen experiments, after resolving every
    experiment's overridden config in both modes (a renamed or mistyped key is refused here, in one line)."""
    import experiments
    from lab import experiment as E
    from lab.errors import LabError

    reg = E.registry(experiments)
    if only:
        unknown = [x for x in only if x not in reg]
        if unknown:
            fail(f"--only: unknown experiment(s) {', '.join(unknown)}; known: {', '.join(reg)}")
    plans = {}
    for exp in reg.values():
        table = OVERRIDES.get(exp.id)
        note = "" if table is not None else "no gpu_check entry: preset sizes, train.steps cut"
        gpu_cfg = exp.presets.get("gpu")  # none: resolve_config below says so
        if table is None:
            table = DEFAULT_CUT if hasattr(gpu_cfg, "train") else {}
        sets = {}
        for mode, preset in (("gpu", "gpu"), ("dry", "smoke")):
            i = 0 if mode == "gpu" else 1
            args = [f"{k}={v[i]}" for k, v in table.items()]
            if mode == "dry" and hasattr(gpu_cfg, "model"):  # the gpu preset's compute dtype, at smoke size
                args.append(f"model.dtype={gpu_cfg.model.dtype}")
            try:
                E.resolve_config(exp, preset, args, SEEDS)
            except LabError as e:
                fail(f"{exp.id} {mode} overrides {args}: {e}")
            sets[mode] = args
        plans[exp.id] = (exp, sets["dry" if dry else "gpu"], note)
    chosen = only or [x for x, (exp, _, _) in plans.items() if not exp.is_template]
    return [plans[x] for x in chosen]


def bench_figures(piece: Piece, path: Path) -> dict | None:
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    piece.extra = figures
    return figures


def verdict_line(exp_id: str, stdout: str) -> str | None:
    """The line `lab run` prints for the experiment: "<id>: VERDICT — summary"."""
    for line in stdout.splitlines():
        head, _, rest = line.partition(": ")
        if head == exp_id and rest.split(" ", 1)[0] in VERDICTS:
            return line.strip()
    return None


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(info: dict, benches: list[Piece], runs: list[tuple[Piece, str]], args, total: float) -> str:
    bad = [p for p in [*benches, *(p for p, _ in runs)] if p.status != "ok"]
    state = (
        "complete, every piece ok"
        if not bad
        else "NOT complete: " + "; ".join(f"{p.name} {p.status}" for p in bad)
    )
    title = "GPU check" + (
        " (DRY RUN on CPU, smoke sizes: the figures are not GPU figures)" if args.dry else ""
    )
    out = [
        f"# {title}",
        "",
        "Written by `scripts/gpu_check.sh`, never by hand: each experiment's `gpu` preset cut to a few hundred "
        "steps, GPT-2 small's training step (MFU) and KV-cache decoding at the `gpu` preset's shape, each in its "
        "own process (the script's docstring says what is cut and why).",
        "",
        f"- command: `{info['command']}`",
        f"- device: {info['count']} x {info['device_kind']} ({info['platform']}); JAX {info['jax']}, jaxlib "
        f"{info['jaxlib']}; Python {platform.python_version()}",
        f"- commit: {info['commit']}",
        f"- written: {info['written']}; wall time {total:.0f} s"
        + (f" of a {args.budget:.0f} s budget" if args.budget else ""),
        f"- status: {state}",
        "",
        "## Experiments",
        "",
        f"Each ran as `lab run <id> --preset {'smoke' if args.dry else 'gpu'} --seeds {SEEDS} --set KEY=VALUE ... "
        f"--fresh --no-progress --results {rel(args.scratch)}` with the overrides listed"
        + (
            f", {args.jobs} at a time in the order listed (their wall times overlap)."
            if args.jobs > 1
            else ", one after another."
        )
        + f" Each piece's whole output: `{rel(args.scratch / 'logs')}/<name>.stdout.txt` and `.stderr.txt`.",
        "",
        "| experiment | wall (s) | status | verdict | overrides |",
        "|---|---|---|---|---|",
    ]
    lines = []
    for piece, note in runs:
        line = verdict_line(piece.name, piece.stdout)
        verdict = line.split(" ", 2)[1] if line else "—"
        sets = " ".join(a for a in piece.argv if "=" in a and not a.startswith("-"))
        status = piece.status + (f": {piece.stderr_tail}" if piece.status.startswith("failed") else "")
        out.append(
            f"| {piece.name} | {piece.seconds:.1f} | {cell(status)} | {verdict} | `{sets}`"
            + (f" ({note})" if note else "")
            + " |"
        )
        lines.append(f"- {line}" if line else f"- {piece.name}: no verdict line ({piece.status})")
    out += ["", "Verdict lines, as `lab run` printed them:", "", *lines, ""]
    for piece, heading in zip(benches, ("Training step: GPT-2 small, MFU", "Generation with the KV cache")):
        out += [f"## {heading}", "", f"`{piece.shown}` ({piece.seconds:.0f} s, {piece.status})", ""]
        if piece.extra.get("lines"):
            out += piece.extra["lines"]
        else:
            out.append(
                f"No figures: {piece.status}" + (f": {piece.stderr_tail}" if piece.stderr_tail else "")
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def benchmarks_section(info: dict | None = None, benches: list[Piece] = (), status: str = "") -> str:
    """This script's section of results/benchmarks.md: how the check is run, and the last GPU run's headline
    figures (the whole record is results/gpu.md); `info` None: no GPU run recorded yet."""
    out = [
        "## GPU check (`scripts/gpu_check.sh`)",
        "",
        "On one GPU, after `.venv/bin/pip install -e '.[gpu]'`: `scripts/gpu_check.sh` (within a 570 s budget; "
        "`--help` lists the options). It runs every experiment's `gpu` preset cut to a few hundred steps (into "
        f"`scratch/gpu_check/gpu/`), `python {shlex.join(BENCH_TRAIN)}` (GPT-2 small's training step: tokens/s "
        "and MFU against the device's peak bfloat16 FLOP/s) and "
        f"`python {shlex.join([*BENCH_GENERATE, '--preset', 'gpu'])}` (KV-cache decoding at the `gpu` preset's "
        "shape), and writes the whole record to `results/gpu.md`. `scripts/gpu_check.sh --dry` walks the same "
        "path on CPU at smoke sizes, to check that the script runs; its figures mean nothing.",
        "",
    ]
    if info is None:
        out.append("No GPU run is recorded yet: the check was written and dry-run on CPU only.")
        return "\n".join(out)
    out.append(
        f"Last run: `{info['command']}` on {info['count']} x {info['device_kind']}, JAX {info['jax']}, commit "
        f"{info['commit']}, {info['written']}: {status}."
    )
    train = benches[0].extra if benches else {}
    if train.get("tokens_per_s"):
        mfu = (
            f"MFU {train['mfu']:.1%} {train['mfu_note']}"
            if train.get("mfu")
            else f"MFU n/a: {train['mfu_note']}"
        )
        out.append(
            f"- GPT-2 small, {train['dtype']} compute, batch {train['batch']} x {train['block']}: "
            f"{train['tokens_per_s']:,.0f} tokens/s ({train['ms_per_step']:.1f} ms/step), {mfu}"
        )
    if train.get("compare"):
        c = train["compare"]
        mfu = f"MFU {c['mfu']:.1%}" if c.get("mfu") else "MFU n/a"
        out.append(
            f"- the same with attention {c['attention']}: {c['tokens_per_s']:,.0f} tokens/s "
            f"({c['ms_per_step']:.1f} ms/step), {mfu}; step time {train['compare_ratio']:.2f}x the first's"
        )
    gen = benches[1].extra if len(benches) > 1 else {}
    if gen.get("cached_tokens_per_s"):
        speeds = ", ".join(f"batch {b}: {v:,.0f}" for b, v in gen["cached_tokens_per_s"].items())
        out.append(f"- KV-cache decoding at the `gpu` preset's shape, tokens/s: {speeds}")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _Parser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    p.add_argument(
        "--dry", action="store_true", help="the same path on CPU at smoke sizes (writes no results/)"
    )
    p.add_argument("--only", default=None, help="comma-separated experiment ids (default: all but e00)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the Markdown file to write (default: results/gpu.md; with --dry scratch/gpu_check/dry/gpu.md)",
    )
    p.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="results root for the runs and the benchmarks' JSON (default scratch/gpu_check/gpu or .../dry)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all pieces together; what is left when one starts is its time limit, and pieces "
        "after it are skipped (default 570 on a GPU, none with --dry; 0: none)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="experiments run at once, after the benchmarks have run alone (default 4 on a GPU, where "
        "compiling is most of a cut run's time and one GPU has room for several; 1 with --dry)",
    )
    p.add_argument("--no-benchmarks", action="store_true", help="only the experiments")
    args = p.parse_args(argv)
    mode = "dry" if args.dry else "gpu"
    # Relative paths are the checkout's (gpu_check.sh runs from its root, as every piece does).
    args.scratch = Path(os.path.abspath(args.scratch or ROOT / "scratch" / "gpu_check" / mode))
    args.out = Path(
        os.path.abspath(args.out or (args.scratch / "gpu.md" if args.dry else ROOT / "results" / "gpu.md"))
    )
    if args.budget is None:
        args.budget = 0.0 if args.dry else 570.0
    if args.jobs is None:
        args.jobs = 1 if args.dry else 4
    if args.jobs < 1:
        p.error(f"--jobs must be a whole number >= 1, got {args.jobs}")
    if not math.isfinite(args.budget) or args.budget < 0:
        p.error(f"--budget must be a number of seconds >= 0, got {args.budget}")
    only = [x.strip() for x in args.only.split(",")] if args.only is not None else None
    if only is not None and (not all(only) or len(set(only)) != len(only)):
        p.error(f"--only must list distinct experiment ids separated by commas, got {args.only!r}")
    # Both before anything is made: a --scratch that is a file, or an --out under one, is refused here rather
    # than after the scratch directory has been created.
    from _script_args import writable

    writable(p, "--scratch", args.scratch, directory=True)
    writable(p, "--out", args.out)

    t_start = time.monotonic()
    deadline = t_start + args.budget if args.budget else None
    # The pieces import this checkout's lab, and keep XLA's settings as given (tests set XLA_FLAGS).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env.setdefault("MPLBACKEND", "Agg")
    if args.dry:  # the CPU path, even on a machine with a GPU
        env["JAX_PLATFORMS"] = "cpu"
    plan = experiment_plan(only, args.dry)
    info = probe(env)
    if not args.dry and info["platform"] != "gpu":
        fail(
            f"JAX sees no GPU here (platform {info['platform']}, device kind {info['device_kind']!r}); install "
            "the gpu extra (.venv/bin/pip install -e '.[gpu]') on a GPU machine, or check the script on CPU "
            "with --dry"
        )
    info["command"] = shlex.join(["scripts/gpu_check.sh", *argv])
    info["commit"] = commit()
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    benches = []
    if not args.no_benchmarks:
        smoke = ["--smoke"] if args.dry else []
        gen_preset = ["--preset", "smoke" if args.dry else "gpu"]
        for name, cmd in (("bench_train", BENCH_TRAIN), ("bench_generate", BENCH_GENERATE + gen_preset)):
            json_path = args.scratch / f"{name}.json"
            json_path.unlink(missing_ok=True)
            shown = shlex.join(["python", *cmd, *smoke])
            benches.append(Piece(name, [*cmd, *smoke, "--json", str(json_path)], shown))
    runs = []
    for exp, sets, note in plan:
        argv_run = ["-m", "lab.cli", "run", exp.id, "--preset", "smoke" if args.dry else "gpu"]
        argv_run += ["--seeds", str(SEEDS), *[x for s in sets for x in ("--set", s)]]
        argv_run += ["--fresh", "--no-progress", "--results", str(args.scratch)]
        shown = shlex.join(["lab", *argv_run[2:-1], rel(args.scratch)])
        runs.append((Piece(exp.id, argv_run, shown), note))

    def write(total: float) -> None:
        from lab.fileio import atomic_write_text

        info["written"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        atomic_write_text(args.out, markdown(info, benches, runs, args, total))

    for piece in benches:
        run_piece(piece, env, deadline, args.scratch / "logs")
        bench_figures(piece, Path(piece.argv[-1]))
        if piece.status == "ok" and not piece.extra:
            piece.status = "failed (no figures written)"
        write(time.monotonic() - t_start)

    def ended(piece: Piece) -> None:
        if piece.status == "ok" and verdict_line(piece.name, piece.stdout) is None:
            piece.status = "failed (no verdict line)"
        write(time.monotonic() - t_start)

    run_env = env
    if args.jobs > 1:  # several processes on one accelerator: each takes memory as it needs it
        run_env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", **env}
    run_pieces([piece for piece, _ in runs], run_env, deadline, args.jobs, ended, args.scratch / "logs")
    write(time.monotonic() - t_start)
    print(f"gpu_check: wrote {rel(args.out)}", file=sys.stderr)
    bad = [p for p in [*benches, *(p for p, _ in runs)] if p.status != "ok"]
    if not args.dry and args.out == ROOT / "results" / "gpu.md":
        from lab.report import update_benchmarks

        status = "every piece ok" if not bad else "NOT complete (" + ", ".join(p.name for p in bad) + ")"
        path = update_benchmarks(
            "gpu", benchmarks_section(info, benches, status), ROOT / "results" / "benchmarks.md"
        )
        print(f"gpu_check: wrote {rel(path)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the running piece was killed with its process group (run_piece)
        print("gpu_check: interrupted", file=sys.stderr)
        sys.exit(130)
