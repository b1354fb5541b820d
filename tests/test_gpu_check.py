"""scripts/gpu_check.sh: `--dry` walks the GPU check's whole path on CPU at smoke sizes and writes its
Markdown; bad input is refused in one line with exit status 2; bench_train's peak table.

The dry run here is `--dry --only e05`: one experiment (the cheapest to run at smoke size, and one whose
`gpu` preset computes in bfloat16, which the dry run keeps) plus both benchmarks. That is the whole path
(every experiment's overrides resolved in both modes before anything runs, `lab run` in its own process,
the verdict line, bench_train's MFU table, bench_generate's table, the Markdown) in about 85 s of CPU time;
the script's default, every experiment `lab list` shows, takes over 5 minutes on 2 cores.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _gpu_check(*args: str, timeout: float = 600, **env_vars: str) -> subprocess.CompletedProcess:
    # this interpreter's environment, as tests/test_readme.py does
    env = {**os.environ, "LAB_VENV": sys.prefix, **env_vars}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _row(md: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is `first_cell`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{md}")


def _number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


@pytest.mark.slow
def test_dry_run_writes_a_row_per_experiment_and_finite_benchmark_figures(tmp_path):
    out, scratch = tmp_path / "gpu.md", tmp_path / "scratch"
    published = ROOT / "results" / "gpu.md"
    before = published.stat().st_mtime_ns if published.exists() else None
    r = _gpu_check("--dry", "--only", "e05", "--out", str(out), "--scratch", str(scratch))
    assert r.returncode == 0, r.stderr[-3000:]
    md = out.read_text(encoding="utf-8")
    assert md.startswith("# GPU check (DRY RUN on CPU")
    assert f"- command: `scripts/gpu_check.sh --dry --only e05 --out {out} --scratch {scratch}`" in md
    assert "- status: complete, every piece ok" in md
    # the experiment: its row (wall time, status, verdict) and its verdict line, from its own lab run
    wall, status, verdict = _row(md, "e05")[1:4]
    assert _number(wall) > 0 and status == "ok"
    assert verdict in ("SUPPORTED", "QUALIFIED", "REFUTED", "INCONCLUSIVE")
    assert re.search(rf"^- e05: {verdict} — \S", md, re.M)
    assert (scratch / "e05_sampling" / "findings.json").is_file()
    # every piece's whole output is kept beside the runs (what comes back from a GPU machine is files)
    assert re.search(r"^e05: ", (scratch / "logs" / "e05.stdout.txt").read_text(encoding="utf-8"), re.M)
    assert (scratch / "logs" / "bench_train.stdout.txt").stat().st_size > 0
    assert "model.dtype=bfloat16" in _row(md, "e05")[4]  # the gpu preset's compute dtype, at smoke size
    # GPT-2 small's row (smoke-sized on CPU): finite tokens/s; MFU n/a on a CPU, saying why
    train = _row(md, "gpt2-small, smoke-sized")
    assert train[2] == "bfloat16" and math.isfinite(_number(train[5])) and _number(train[5]) > 0
    assert train[-1] == "n/a" and "MFU n/a: no peak bfloat16 FLOP/s for device kind 'cpu'" in md
    # the same step with fused attention, timed in the same rounds: its row and the ratio of step times
    fused = _row(md, "gpt2-small, smoke-sized, attention fused (xla)")
    assert math.isfinite(_number(fused[5])) and _number(fused[5]) > 0
    ratio = re.search(r"Step time, attention fused \(xla\) / naive: \*\*([0-9.]+)\*\*", md)
    assert ratio and float(ratio.group(1)) > 0
    # the KV-cache table: finite decode throughput at every batch asked for
    for batch in (1, 16, 128):
        speed = _row(md, f"with cache, batch {batch}, 8 new tokens")[1]
        assert math.isfinite(_number(speed)) and _number(speed) > 0
    # a dry run never writes the published file
    assert (published.stat().st_mtime_ns if published.exists() else None) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dry", "--bogus"], "unrecognized arguments: --bogus"),
        (["--dry", "--only", "e99"], "--only: unknown experiment(s) e99"),
        (["--dry", "--budget", "-1"], "--budget must be"),
        (["--dry", "--jobs", "0"], "--jobs must be"),
        ([], "JAX sees no GPU here"),  # the GPU sizes are never run on a CPU by accident
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(args, message, tmp_path):
    where = ["--out", str(tmp_path / "gpu.md"), "--scratch", str(tmp_path / "s")]
    # JAX_PLATFORMS=cpu: on a machine with a GPU the last case would otherwise start the real check
    r = _gpu_check(*args, *where, timeout=120, JAX_PLATFORMS="cpu")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("gpu_check: error: ") and message in lines[0]
    assert not (tmp_path / "gpu.md").exists()


def test_peak_table_by_device_kind(script):
    bench = script("bench_train")
    assert bench.peak_bf16("NVIDIA H200")[0] == 989e12
    assert bench.peak_bf16("NVIDIA H100 80GB HBM3")[0] == 989e12  # SXM
    assert bench.peak_bf16("NVIDIA H100 PCIe")[0] == 756e12
    assert bench.peak_bf16("NVIDIA A100-SXM4-80GB")[0] == 312e12
    for kind in ("NVIDIA H200 NVL", "cpu", "TPU v4"):  # not in the table: no number, a reason
        peak, why = bench.peak_bf16(kind)
        assert peak is None and repr(kind) in why


def test_gpu_figures_render(tmp_path, script):
    """What only a GPU run prints, rendered from made-up H200 figures (no GPU here): the MFU cell, the
    Markdown's status and tables, and the section of results/benchmarks.md."""
    bench, check = script("bench_train"), script("gpu_check")
    train = dict(
        shape="gpt2-small", device_kind="NVIDIA H200", dtype="bfloat16", parameters=124_475_904, batch=16,
        block=1024, ms_per_step=50.0, tokens_per_s=327_680.0, compile_s=30.0, flops_per_step=14.0e12,
        flops_per_s=280e12, peak_flops=989e12, mfu=280 / 989, mfu_note="of H200 SXM's peak, 989 TFLOP/s",
    )  # fmt: skip
    row = bench.mfu_table(train)[2]
    assert row.startswith("| gpt2-small | 124.5M | bfloat16 | 16 x 1024 | 50.0 | 327,680 |")
    assert row.endswith("| 280.0 | 989 | **28.3%** |")
    gen = {"cached_tokens_per_s": {"1": 900.0, "128": 51_000.0}, "lines": ["| with cache | 1 |"]}
    benches = [
        check.Piece(
            "bench_train", [], "python scripts/bench_train.py", 80.0, "ok", extra={**train, "lines": ["T"]}
        ),
        check.Piece("bench_generate", [], "python scripts/bench_generate.py", 60.0, "ok", extra=gen),
    ]
    runs = [
        (
            check.Piece("e04", ["--set", "train.steps=200"], "lab run e04", 70.0, "ok", "e04: REFUTED — x\n"),
            "",
        ),
        (check.Piece("e06", [], "lab run e06", 9.0, "failed (exit 2)", stderr_tail="lab: error: no"), ""),
    ]
    info = dict(
        command="scripts/gpu_check.sh", count=1, device_kind="NVIDIA H200", platform="gpu", jax="0.10.2",
        jaxlib="0.10.2", commit="abc", written="today",
    )  # fmt: skip
    args = type("Args", (), {"dry": False, "budget": 570.0, "scratch": tmp_path, "jobs": 4})
    md = check.markdown(info, benches, runs, args, 300.0)
    assert md.startswith("# GPU check\n") and "- status: NOT complete: e06 failed (exit 2)" in md
    assert "| e04 | 70.0 | ok | REFUTED | `train.steps=200` |" in md and "- e04: REFUTED — x" in md
    assert "| e06 | 9.0 | failed (exit 2): lab: error: no | — |" in md
    fused = {
        **train,
        "attention": "fused (cudnn)",
        "ms_per_step": 25.0,
        "tokens_per_s": 655_360.0,
        "mfu": 0.566,
    }
    benches[0].extra.update(compare=fused, compare_ratio=0.5)
    section = check.benchmarks_section(info, benches, "NOT complete (e06)")
    assert "327,680 tokens/s (50.0 ms/step), MFU 28.3% of H200 SXM's peak, 989 TFLOP/s" in section
    assert (
        "the same with attention fused (cudnn): 655,360 tokens/s (25.0 ms/step), MFU 56.6%; step time 0.50x"
        in section
    )
    assert "batch 1: 900, batch 128: 51,000" in section
    assert "No GPU run is recorded yet" in check.benchmarks_section()


def test_pieces_run_side_by_side_and_the_budget_stops_them(tmp_path, script):
    """run_pieces with 2 jobs: two pieces that each wait for the other's file can only both finish if they
    run at the same time; a piece still running at the deadline is killed, and one not yet started is
    skipped."""
    check = script("gpu_check")

    def piece(name, code):
        return check.Piece(name, ["-c", code], name)

    def handshake(mine, theirs):  # write my file, then wait (up to 60 s) for the other's
        return (
            f"import pathlib, time; d = pathlib.Path({str(tmp_path)!r}); (d / {mine!r}).touch()\n"
            f"for _ in range(600):\n    time.sleep(0.1)\n    if (d / {theirs!r}).exists(): break\n"
            "else: raise SystemExit(3)"
        )

    pair = [piece("a", handshake("a", "b")), piece("b", handshake("b", "a"))]
    ended = []
    check.run_pieces(pair, dict(os.environ), None, jobs=2, done=ended.append)
    assert [p.status for p in pair] == ["ok", "ok"] and sorted(p.name for p in ended) == ["a", "b"]

    slow, never = piece("slow", "import time; time.sleep(60)"), piece("never", "print('ran')")
    check.run_pieces([slow, never], dict(os.environ), time.monotonic() + 2.0, jobs=1)
    assert slow.status.startswith("timed out") and slow.seconds < 30
    assert never.status == "skipped: the time budget was spent" and never.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--compare-attention", "fused"], "--compare-attention goes with --shape gpt2-small"),
        (["--shape", "gpt2-small", "--compare-attention", "naive"], "is --attention already"),
        (["--attention", "flash"], "argument --attention: invalid choice: 'flash'"),
        (["--smoke", "--data", "file:/nonexistent/corpus.txt"], "does not exist"),
        (["--smoke", "--data", "EMPTY"], "is empty or only whitespace"),
        (["--smoke", "--cores", "0"], "--cores must be between 1 and"),
        (["--smoke", "--cores", "4096"], "(the cores it may use), got 4096"),
    ],
)
def test_bench_train_refuses_bad_options_and_corpora_in_one_line(args, message, capsys, tmp_path, script):
    if "EMPTY" in args:
        (tmp_path / "empty.txt").write_text("  \n")
        args = [f"file:{tmp_path / 'empty.txt'}" if a == "EMPTY" else a for a in args]
    with pytest.raises(SystemExit) as e:
        script("bench_train").main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--smoke", "--data", "file:/nonexistent/corpus.txt"], "does not exist"),
        (["--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--rewrite", "remat"], "argument --rewrite: invalid choice: 'remat'"),
    ],
)
def test_bench_rewrites_refuses_bad_options_and_corpora_in_one_line(args, message, capsys, script):
    with pytest.raises(SystemExit) as e:
        script("bench_rewrites").main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
