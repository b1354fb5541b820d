"""Hostile inputs against the CLI, tokenizer files and the dashboard API, plus fault tests (issue 12).

    python scripts/fuzz.py            every case (a few minutes on 2 cores), one Markdown table
    python scripts/fuzz.py --quick    a few of each kind (seconds; what tests/test_fuzz.py runs)
    python scripts/fuzz.py --write    also write the table to results/reliability.md

Each case is judged one way:
  clean error    exit 2 with exactly one line on stderr naming the problem (dashboard: a 4xx JSON
                 {"error": ...} after which the server still serves a normal request; a 505 JSON error for an
                 HTTP version it does not speak counts too); for the few inputs that are valid (marked
                 "valid"; a 200 or a 429 under load; a fault that must recover) the right outcome
  traceback      "Traceback" in the output, an exception out of `lab.cli.main`, an exit status other than
                 0/2, or a 5xx
  hang           the case ran past its time limit
  partial files  the input left files behind in its scratch directory where nothing should be written
                 (the one-writer lock files `.<dir>.lock`, which lab.runs.lock keeps by design, excepted)
  wrong result   exit 0 / 200 where an error was expected (or a `run` that got as far as training), an
                 error that is not one line, or a fault test whose outcome is wrong

Most CLI cases run in this process (`lab.cli.main(argv)`, output captured; `lab.experiment.run` replaced
by a stub that fails the case, so nothing trains by accident); the fault tests start real `lab` processes.
Everything runs on 127.0.0.1 and in temporary directories. The exit status is 1 if any case is not clean.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "scripts"):  # this checkout's lab, and _script_args beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.setdefault("MPLBACKEND", "Agg")
# Compiling tiny programs dominates; LLVM's optimizations off makes it about 3x faster (as tests/conftest.py).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

AREAS = ("cli", "tokenizer files", "dashboard", "faults")
OUTCOMES = ("clean", "traceback", "hang", "partial", "wrong")
HEADERS = ("clean error", "traceback", "hang", "partial files", "wrong result")
# The smoke run the fault tests use: the cheapest experiment (the template), two tiny sweeps of one seed.
RUN_ARGS = ["run", "e00", "--preset", "smoke", "--set", "widths=8,16", "--set", "seeds=1", "--no-progress"]
EXP_DIR = "e00_template"


@dataclass
class Result:
    area: str
    name: str
    outcome: str
    detail: str = ""


RESULTS: list[Result] = []


def record(area, name, outcome, detail=""):
    RESULTS.append(Result(area, name, outcome, " ".join(str(detail).split())[:300]))


# ------------------------------------------------------------------------------------------ helpers


class Hang(BaseException):
    pass


class WouldTrain(BaseException):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum, frame):
        raise Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def snapshot(root: Path) -> set:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if name.startswith(".") and name.endswith(".lock"):
                continue  # the one-writer lock files stay by design (lab.runs.lock): not a partial write
            # a directory's mtime changes when a case only looks into it: directories count by name
            is_file = p.is_file() and not p.is_symlink()
            out.add(
                (str(p.relative_to(root)), st.st_size if is_file else -1, st.st_mtime_ns if is_file else 0)
            )
    return out


def changed(before: set, after: set) -> str:
    new = sorted({p for p, *_ in after - before})
    return ", ".join(new[:4]) + (" ..." if len(new) > 4 else "")


def call_cli(argv, stdin: bytes = b"", limit: float = 30.0):
    """(exit code | 'hang' | 'exception' | 'would-train', stdout, stderr) of lab.cli.main(argv) in-process."""
    from lab.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), time_limit(limit):
            try:
                code = main(list(argv))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Hang:
        code = "hang"
    except WouldTrain:
        code = "would-train"
    except BaseException:  # noqa: BLE001 - any exception out of main is the finding
        err.write(traceback.format_exc())
        code = "exception"
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def judge(code, out, err, new_files="", expect="error", fragment=None, check=None):
    """(outcome, detail) of one CLI call."""
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if code == "hang":
        return "hang", "ran past its time limit"
    if code == "would-train":
        return "wrong", "accepted: got as far as training"
    if code == "exception" or "Traceback" in out + err or code not in (0, 2):
        return "traceback", f"exit {code}: {last[:200]}"
    if new_files and expect == "error":
        return "partial", f"left {new_files} (exit {code})"
    if expect == "error":
        if code == 0:
            return "wrong", f"exit 0, expected an error; stdout {out[:80]!r}"
        if len(lines) != 1 or not lines[0].startswith("lab: error: "):
            return "wrong", f"exit 2 but stderr has {len(lines)} lines: {err[:200]!r}"
        if fragment and fragment not in lines[0]:
            return "wrong", f"error does not name {fragment!r}: {lines[0][:200]}"
        return "clean", lines[0]
    if code != 0:
        return "wrong", f"exit {code}, expected success: {last[:200]}"
    if check is not None and not check(out):
        return "wrong", f"exit 0 but wrong output {out[:120]!r}"
    return "clean", "ok"


def cli_case(
    area, name, argv, scratch: Path, stdin=b"", expect="error", fragment=None, check=None, limit=30.0
):
    before = snapshot(scratch)
    code, out, err = call_cli(argv, stdin, limit)
    outcome, detail = judge(code, out, err, changed(before, snapshot(scratch)), expect, fragment, check)
    record(area, name, outcome, detail)


# ---------------------------------------------------------------------------------------------- CLI


def cli_cases(scratch: Path, quick: bool):

    r = str(scratch / "r")
    dirs = scratch / "inputs"  # inputs made before each case's snapshot; nothing may be added beside them
    dirs.mkdir()
    a_file = dirs / "a_file"
    a_file.write_text("not a directory")
    empty = dirs / "empty.txt"
    empty.write_bytes(b"")
    binary = dirs / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    blank = dirs / "blank.txt"
    blank.write_bytes(b"  \n\t\n" * 10)
    short = dirs / "short.txt"
    short.write_text("too short")
    latin1 = dirs / "latin1.txt"
    latin1.write_bytes("café ".encode("latin-1") * 2000)
    fifo = dirs / "fifo"
    os.mkfifo(fifo)
    loop = dirs / "loop"
    os.symlink(loop, loop)
    a_dir = dirs / "a_dir"
    a_dir.mkdir()

    sets = [
        "train.stepz=5", "nokey=1", "=5", "train.steps", "train.steps=", "train.steps=1.5", "train.steps=-1",
        "train.steps=0", "train.steps=abc", "train.steps=inf", "train.steps=nan", "train.steps=1e309",
        "train.steps=99999999999999999999999999", "train.lr=-0", "train.lr=0", "train.lr=-1", "train.lr=nan",
        "train.lr=inf", "train.lr=-inf", "train.lr=1e-400", "train.lr=1e400", "train.lr=0x10", "train.lr=",
        "train.lr=1,2", "train.lr=[1e-3]", "model.d_model=0", "model.d_model=-64", "model.d_model=64.5",
        "model.n_heads=3", "model.n_heads=0", "model.position=rotary", "model.position=", "train.schedule=step",
        "train.batch_size=0", "train.warmup_steps=-1", "train.decay_fraction=1.5", "model.init_std=nan",
        "model.init_std=-0", "variants=", "variants=intact,,zero_v", "variants=[intact]",
        "variants=intact,swap_xy", "variants=intact,intact", "lr_sweep=", "lr_sweep=1e-3,abc",
        "lr_sweep=1e-3;2e-3", "lr_sweep=(1,2)", "lr_sweep=0.01,inf", "lr_sweep=1e-3,-1", "seeds=0", "seeds=-1",
        "seeds=x", "model.mask=prefix", "train.steps=1\x00",
    ]  # fmt: skip
    if quick:
        sets = ["train.stepz=5", "train.steps=abc", "train.lr=nan", "lr_sweep=1e-3,abc"]
    for s in sets:
        cli_case("cli", f"config --set {s!r}", ["config", "e04", "--preset", "smoke", "--set", s], scratch)
    run_sets = [
        "train.lr=inf",
        "model.d_model=1000000000",
        "model.n_layers=100000",
        "model.max_len=100000000",
    ]
    if quick:
        run_sets = ["model.d_model=1000000000"]
    for s in run_sets:
        cli_case("cli", f"run --set {s!r}", ["run", "e04", "--preset", "smoke", "--set", s, "--results", r],
                 scratch, limit=60)  # fmt: skip

    argvs = [
        ["run", "e99"], ["run", ""], ["run", "../e04"], ["run", "e04;rm -rf /"], ["run", "é04"],
        ["run", "e04", "--preset", "huge"], ["run", "e04", "--preset", ""], ["run", "all", "--preset", "SMOKE"],
        ["run", "e04", "--frobnicate"], ["run", "e04", "--seeds"], ["run", "e04", "--strategy", "fastest"],
        ["run"], ["frobnicate"], [], ["--version"], ["run", "e04", "--set"],
        ["run", "e04", "--seeds", "0"], ["run", "e04", "--seeds", "-1"], ["run", "e04", "--seeds", "abc"],
        ["run", "e04", "--seeds", ""], ["run", "e04", "--seeds", "1.5"], ["run", "e04", "--seeds", "10" * 20],
        ["run", "e04", "--data", "wikipedia"], ["run", "e04", "--data", ""], ["run", "e04", "--data", "file:"],
        ["run", "e04", "--data", f"file:{dirs / 'missing.txt'}"], ["run", "e04", "--data", f"file:{a_dir}"],
        ["run", "e04", "--data", "file:/dev/zero"], ["run", "e04", "--data", "file:/dev/null"],
        ["run", "e04", "--data", f"file:{empty}"], ["run", "e04", "--data", f"file:{binary}"],
        ["run", "e04", "--data", f"file:{fifo}"], ["run", "e04", "--data", f"file:{blank}"],
        ["run", "e04", "--data", f"file:{short}"], ["run", "e04", "--data", f"file:{latin1}"],
        ["run", "e04", "--data", f"file:{loop}"], ["run", "e04", "--data", "file:/proc/self/mem"],
    ]  # fmt: skip
    if quick:
        argvs = [["run", "e99"], ["run", "e04", "--seeds", "0"], ["run", "e04", "--data", f"file:{fifo}"],
                 ["run", "e04", "--data", f"file:{binary}"]]  # fmt: skip
    for argv in argvs:
        extra = (
            ["--preset", "smoke"] if "--preset" not in argv and argv[:1] == ["run"] and len(argv) > 1 else []
        )
        res = ["--results", r] if argv[:1] == ["run"] else []
        cli_case(
            "cli", " ".join(map(repr, argv)) or "(no arguments)", [*argv, *extra, *res], scratch, limit=60
        )

    results_args = [
        ("a file", str(a_file)), ("under a file", str(a_file / "sub")), ("in /proc", "/proc/lab-results"),
        ("/dev/null", "/dev/null"), ("a NUL byte", str(dirs / "a\x00b")), ("a 300-char name", str(dirs / ("x" * 300))),
        ("a FIFO", str(fifo)), ("a symlink loop", str(loop)),
    ]  # fmt: skip
    if quick:
        results_args = results_args[:2]
    for what, path in results_args:
        for cmd in (["run", "e04", "--preset", "smoke"], ["analyze", "e04"], ["report"]):
            cli_case("cli", f"{cmd[0]} --results {what}", [*cmd, "--results", path], scratch)

    # analyze / report on damaged results.
    def fake_exp(name, files: dict, exp_dir=EXP_DIR):
        root = dirs / name
        out = root / exp_dir
        for rel, data in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        return str(root)

    cfg_ok = json.dumps({"experiment": EXP_DIR, "preset": "smoke", "config": {}}).encode()
    damaged = {
        "an empty dir": fake_exp("empty_root", {}),
        "an empty experiment dir": fake_exp("empty_exp", {".keep": b""}),
        "a garbage config.json": fake_exp("garbage_cfg", {"config.json": b"\x00garbage{"}),
        "a config.json that is a list": fake_exp("list_cfg", {"config.json": b"[1, 2]"}),
        "a config.json missing fields": fake_exp("thin_cfg", {"config.json": cfg_ok}),
        "a torn metrics.jsonl": fake_exp(
            "torn",
            {
                "config.json": cfg_ok,
                "runs/D8/metrics.jsonl": b'{"step": 0, "member": 0, "val_lo',
                "runs/D8/config.json": b'{"config": {"train": {"steps": 20}}}',
            },
        ),  # fmt: skip
        # the template is left out of the report: these are e04's
        "a garbage findings.json": fake_exp("bad_findings", {"findings.json": b"{not json"}, "e04_qkv"),
        "a findings.json with NaN": fake_exp(
            "nan_findings", {"findings.json": b'{"verdict": NaN}'}, "e04_qkv"
        ),
        "a findings.json that is a list": fake_exp("list_findings", {"findings.json": b"[]"}, "e04_qkv"),
    }
    if quick:
        damaged = {
            k: damaged[k]
            for k in ("a garbage config.json", "a torn metrics.jsonl", "a garbage findings.json")
        }
    for what, root in damaged.items():
        if "findings" in what:  # report reads findings.json only
            cli_case("cli", f"report on {what}", ["report", "--results", root], scratch)
        else:
            cli_case("cli", f"analyze on {what}", ["analyze", "e00", "--results", root], scratch)
    # Valid: a report of a root where nothing has run yet says so (and writes REPORT.md, its job).
    cli_case("cli", "report on an empty root (valid)", ["report", "--results", str(dirs / "fresh")], scratch,
             expect="ok", check=lambda out: "REPORT.md" in out)  # fmt: skip
    shutil.rmtree(dirs / "fresh", ignore_errors=True)

    misc = [
        ["list", "extra"], ["list", "--foo"], ["config"], ["config", "e04", "--set"], ["config", "e99"],
        ["config", "all", "--set", "train.steps=x"], ["config", "e04", "--preset", "\udcff"],
        ["analyze"], ["analyze", "e99", "--results", str(dirs)], ["analyze", "e04", "--preset", "huge"],
        ["report", "--preset", "nope"],
        ["dashboard", "--port", "70000"], ["dashboard", "--port", "-1"], ["dashboard", "--max-tokens", "0"],
        ["dashboard", "--max-concurrent", "0"], ["dashboard", "--preset", "huge"],
        ["dashboard", "--checkpoint", str(dirs / "nope")], ["dashboard", "--checkpoint", str(a_file)],
        ["dashboard", "--checkpoint", str(a_dir)],
        ["tokenizer", "train", "--data", "pydocs", "--vocab-size", "10", "--out", str(dirs / "t1")],
        ["tokenizer", "train", "--data", "pydocs", "--vocab-size", "300", "--workers", "0", "--out", str(dirs / "t2")],
        ["tokenizer", "train", "--data", f"file:{short}", "--vocab-size", "300", "--pattern", "(", "--out", str(dirs / "t3")],
        ["tokenizer", "train", "--data", f"file:{short}", "--vocab-size", "300", "--pattern", "(a|aa)+$", "--out", str(dirs / "t4")],
        ["tokenizer", "train", "--data", f"file:{dirs / 'missing'}", "--vocab-size", "300", "--out", str(dirs / "t5")],
        ["tokenizer", "train", "--data", "pydocs", "--vocab-size", "300", "--out", str(a_file)],
        ["tokenizer", "train", "--data", f"file:{binary}", "--vocab-size", "300", "--out", str(dirs / "t6")],
        ["tokenizer", "frob"],
    ]  # fmt: skip
    if quick:
        misc = [["list", "extra"], ["dashboard", "--port", "70000"], misc[20]]
    for argv in misc:
        cli_case("cli", " ".join(map(repr, argv)), argv, scratch)
    cli_case("cli", "list (valid)", ["list"], scratch, expect="ok", check=lambda out: "e04" in out)


# ------------------------------------------------------------------------------------- tokenizer files


def tokenizer_cases(scratch: Path, quick: bool):
    import base64
    import hashlib

    from lab.tokenizer import save, train_bpe

    base = scratch / "tok"
    text = (ROOT / "lab" / "cli.py").read_text(encoding="utf-8")
    save(train_bpe(text, 300, special_tokens=["<|endoftext|>"], workers=1, name="tok"), base)
    header = json.loads((base / "tokenizer.json").read_text())
    ranks = (base / "ranks.tiktoken").read_bytes()

    def variant(name, header_obj=None, ranks_bytes=None, header_bytes=None, fix_sha=True):
        d = scratch / "bad" / name
        shutil.copytree(base, d)
        if ranks_bytes is not None:
            (d / "ranks.tiktoken").write_bytes(ranks_bytes)
            if fix_sha:  # so the line checks are reached, not only the checksum
                h = dict(header)
                h["ranks_sha256"] = hashlib.sha256(ranks_bytes).hexdigest()
                h["n_ranks"] = len([x for x in ranks_bytes.splitlines() if x.strip()])
                h["merges"] = None
                (d / "tokenizer.json").write_text(json.dumps(h))
        if header_obj is not None:
            (d / "tokenizer.json").write_text(json.dumps(header_obj))
        if header_bytes is not None:
            (d / "tokenizer.json").write_bytes(header_bytes)
        return d

    def h(**change):
        out = {**header, **change}
        return {k: v for k, v in out.items() if v is not ...}

    lines = ranks.splitlines(keepends=True)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    hb = json.dumps(header).encode()
    bad = {
        "tokenizer.json truncated": variant("trunc", header_bytes=hb[: len(hb) // 2]),
        "tokenizer.json empty": variant("empty_h", header_bytes=b""),
        "tokenizer.json a list": variant("list_h", header_bytes=b"[]"),
        "tokenizer.json null": variant("null_h", header_bytes=b"null"),
        "tokenizer.json not UTF-8": variant("nonutf8_h", header_bytes=b'{"format": "\xff\xfe"}'),
        "tokenizer.json 32k nested": variant("nest_h", header_bytes=b"[" * 32000 + b"]" * 32000),
        "tokenizer.json NaN n_ranks": variant("nan_h", header_bytes=hb.replace(b'"n_ranks": ', b'"n_ranks": NaN, "x": ')),
        "format wrong": variant("fmt", h(format="sentencepiece")),
        "version 2": variant("v2", h(version=2)),
        "version '1'": variant("vstr", h(version="1")),
        "pattern missing": variant("nopat", h(pattern=...)),
        "pattern a number": variant("numpat", h(pattern=5)),
        "pattern catastrophic (a|aa)+$": variant("catpat", h(pattern="(a|aa)+$")),
        "pattern (x+x+)+y": variant("catpat2", h(pattern="(x+x+)+y")),
        "pattern invalid regex": variant("badre", h(pattern="(")),
        "pattern empty": variant("emptypat", h(pattern="")),
        "special_tokens a list": variant("splist", h(special_tokens=["<|endoftext|>"])),
        "special id -1": variant("spneg", h(special_tokens={"<|endoftext|>": -1})),
        "special id a string": variant("spstr", h(special_tokens={"<|endoftext|>": "299"})),
        "special id collides with a token": variant("spcol", h(special_tokens={"<|endoftext|>": 65})),
        "special id 10**30": variant("sphuge", h(special_tokens={"<|endoftext|>": 10**30})),
        "special token empty string": variant("spempty", h(special_tokens={"": 299})),
        "special id a bool": variant("spbool", h(special_tokens={"<|endoftext|>": True})),
        "n_ranks wrong": variant("nranks", h(n_ranks=3)),
        "ranks_sha256 wrong": variant("sha", h(ranks_sha256="0" * 64)),
        "name a number": variant("name", h(name=5)),
        "merges a string": variant("mstr", h(merges="abc")),
        "merges [[1]]": variant("mshort", h(merges=[[1]])),
        "merges out of range": variant("mrange", h(merges=[[999, 1]])),
        "merges negative": variant("mneg", h(merges=[[-1, 2]])),
        "merges wrong pair": variant("mwrong", h(merges=[[1, 2]] + header["merges"][1:])),
        "merges duplicated": variant("mdup", h(merges=header["merges"][:1] * 2 + header["merges"][2:])),
        "ranks truncated mid-line": variant("rtrunc", ranks_bytes=ranks[: len(ranks) // 2 - 3], fix_sha=False),
        "ranks no final newline": variant("rnonl", ranks_bytes=ranks[:-1]),
        "ranks duplicate rank": variant("rduprank", ranks_bytes=ranks + f"{b64(b'zzqq')} 5\n".encode()),
        "ranks duplicate token": variant("rduptok", ranks_bytes=ranks + lines[70].split()[0] + b" 5000\n"),
        "ranks bad base64": variant("rb64", ranks_bytes=ranks + b"!!!! 301\n"),
        "ranks negative rank": variant("rneg", ranks_bytes=ranks + f"{b64(b'zzqq')} -7\n".encode()),
        "ranks rank 10**12": variant("rhuge", ranks_bytes=ranks + f"{b64(b'zzqq')} {10**12}\n".encode()),
        "ranks missing byte tokens": variant("rfew", ranks_bytes=b"".join(lines[100:])),
        "ranks binary garbage": variant("rbin", ranks_bytes=bytes(range(256)) * 4 + b"\n"),
        "ranks empty": variant("rempty", ranks_bytes=b"", fix_sha=False),
        "ranks.tiktoken missing": variant("rmiss"),
        "tokenizer.json missing": variant("hmiss"),
        "ranks.tiktoken a directory": variant("rdir"),
    }  # fmt: skip
    (bad["ranks.tiktoken missing"] / "ranks.tiktoken").unlink()
    (bad["tokenizer.json missing"] / "tokenizer.json").unlink()
    (bad["ranks.tiktoken a directory"] / "ranks.tiktoken").unlink()
    (bad["ranks.tiktoken a directory"] / "ranks.tiktoken").mkdir()
    bad["missing directory"] = scratch / "bad" / "nope"
    (scratch / "bad" / "emptydir").mkdir()
    bad["empty directory"] = scratch / "bad" / "emptydir"
    (scratch / "bad" / "empty.tiktoken").write_bytes(b"")
    bad["empty .tiktoken file"] = scratch / "bad" / "empty.tiktoken"
    os.mkfifo(scratch / "bad" / "fifo")
    bad["a FIFO"] = scratch / "bad" / "fifo"
    if quick:
        bad = {k: bad[k] for k in ("tokenizer.json truncated", "pattern catastrophic (a|aa)+$", "merges out of range",
                                   "ranks duplicate rank")}  # fmt: skip
    for what, d in bad.items():
        cli_case("tokenizer files", f"encode with {what}", ["tokenizer", "encode", "--tokenizer", str(d)], scratch,
                 stdin=b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab hello world", limit=20)  # fmt: skip

    good = str(base)
    stdin_cases = [
        ("encode invalid UTF-8", ["encode"], b"caf\xc3\xa9 \xff\xfe"),
        ("encode UTF-8 cut at a chunk edge", ["encode"], b"a" * 65535 + b"\xc3"),
        ("encode a lone surrogate (CESU)", ["encode"], b"\xed\xa0\x80"),
        ("encode overlong NUL", ["encode"], b"\xc0\x80"),
        ("decode a word", ["decode"], b"1 2 abc"),
        ("decode -1", ["decode"], b"-1"),
        ("decode a huge id", ["decode"], b"99999999999999999999999"),
        ("decode 1.5", ["decode"], b"1.5"),
        ("decode 0x10", ["decode"], b"0x10"),
        ("decode --5", ["decode"], b"--5"),
        ("decode superscript two", ["decode"], "\u00b2".encode()),
        ("decode id = vocab size", ["decode"], b"301"),
        ("decode invalid UTF-8", ["decode"], b"\xff\xfe"),
        ("show a lone surrogate", ["show", "a\udcffb"], b""),
        ("show a surrogate pair half", ["show", "\ud800"], b""),
        ("encode unknown --errors", ["encode", "--errors", "ignore"], b"x"),
    ]
    if quick:
        stdin_cases = stdin_cases[:1] + stdin_cases[4:6] + stdin_cases[9:10]
    for what, sub, data in stdin_cases:
        cli_case("tokenizer files", what, ["tokenizer", sub[0], "--tokenizer", good, *sub[1:]], scratch,
                 stdin=data, limit=20)  # fmt: skip
    gap = variant("rgap", ranks_bytes=b"".join(lines[:280]) + f"{b64(b'zzqq')} 400\n".encode())
    cli_case("tokenizer files", "ranks with a gap in ids (valid, as in tiktoken's files)",
             ["tokenizer", "encode", "--tokenizer", str(gap)], scratch, stdin=b"zzqq", expect="ok",
             check=lambda out: out.split() == ["400"])  # fmt: skip
    cli_case("tokenizer files", "encode --errors replace (valid)", ["tokenizer", "encode", "--tokenizer", good,
             "--errors", "replace"], scratch, stdin=b"a\xffb", expect="ok",
             check=lambda out: len(out.split()) >= 2)  # fmt: skip


# ------------------------------------------------------------------------------------------- dashboard


def http(port, raw: bytes, timeout=30.0, wait_before_send=0.0):
    """(status or None, parsed JSON body or text, error) of one raw HTTP exchange on 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            if wait_before_send:
                time.sleep(wait_before_send)
            if raw:
                s.sendall(raw)
            chunks = []
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
    except TimeoutError:
        return None, None, "hang"
    except OSError as e:
        return None, None, f"{type(e).__name__}: {e}"
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, None, f"no HTTP response: {data[:80]!r}"
    try:
        return status, json.loads(body), ""
    except ValueError:
        return status, body[:80], ""


def post_raw(body: bytes, path="/api/generate", method="POST", headers=None, length=None):
    hdrs = {"Host": "127.0.0.1", "Content-Type": "application/json",
            "Content-Length": str(len(body) if length is None else length), **(headers or {})}  # fmt: skip
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None
    )
    return head.encode("latin-1") + b"Connection: close\r\n\r\n" + body


GOOD = {"prompt": "def f(", "temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.02,
        "repetition_penalty": 1.1, "seed": 3, "max_tokens": 4}  # fmt: skip


def dashboard_cases(quick: bool):
    import jax

    from lab.data.tokenize import ByteTokenizer
    from lab.infer import dashboard as D
    from lab.infer.load import TextModel
    from lab.model import PRESETS, init

    cfg = PRESETS["smoke"].replace(vocab_size=256, max_len=32)
    model = TextModel(cfg, init(cfg, jax.random.PRNGKey(0)), ByteTokenizer(), Path("."), 0, "fuzz model")
    srv = D.make_server(model, "127.0.0.1", 0, max_new=8, max_concurrent=2, request_timeout=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_port
    normal = post_raw(json.dumps(GOOD).encode())

    def alive():
        status, body, _ = http(port, normal, timeout=60)
        return status == 200 and isinstance(body, dict) and len(body.get("tokens", [])) == 4

    try:
        if not alive():  # also compiles the generation program once
            record("dashboard", "a normal request", "wrong", "the fresh server did not serve GOOD")
            return

        def case(name, raw, expect=(400,), timeout=30.0, wait=0.0):
            t0 = time.perf_counter()
            status, body, err = http(port, raw, timeout, wait)
            took = time.perf_counter() - t0
            if err == "hang":
                return record("dashboard", name, "hang", f"no reply within {timeout:g} s")
            if status is None:
                return record("dashboard", name, "wrong", err or "no reply")
            if status >= 500 and status not in expect:
                return record("dashboard", name, "traceback", f"{status}: {body}")
            if status < 400:
                return record("dashboard", name, "wrong", f"{status}, expected an error")
            if not (isinstance(body, dict) and isinstance(body.get("error"), str)) or status not in expect:
                return record("dashboard", name, "wrong", f"{status} {body!r}"[:200])
            if not alive():
                return record("dashboard", name, "wrong", "the server no longer serves a normal request")
            record("dashboard", name, "clean", f"{status} in {took:.1f} s: {body['error']}")

        def body_case(name, text: str | bytes, **kw):
            raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
            case(name, post_raw(raw), **kw)

        good_json = json.dumps(GOOD)
        bodies = {
            "bad JSON": "{prompt: 1}",
            "truncated JSON": good_json[:-5],
            "empty body": "",
            "a JSON list": "[1, 2]",
            "a JSON string": '"hello"',
            "JSON null": "null",
            "unknown field": json.dumps({**GOOD, "temp": 1}),
            "__proto__ field": json.dumps({**GOOD, "__proto__": {}}),
            "prompt a number": json.dumps({**GOOD, "prompt": 5}),
            "prompt a list": json.dumps({**GOOD, "prompt": ["a"]}),
            "prompt 5000 chars": json.dumps({**GOOD, "prompt": "x" * 5000}),
            "prompt a lone surrogate": good_json.replace('"def f("', '"a\\ud800b"'),
            "prompt a low surrogate": good_json.replace('"def f("', '"\\udfff"'),
            "32,000 nested brackets": "[" * 32000 + "]" * 32000,
            "nested objects in a knob": json.dumps({**GOOD, "top_k": {"a": [[[[1]]]]}}),
            "not UTF-8": b'{"prompt": "\xff\xfe"}',
            "duplicate keys with a bad last": good_json[:-1] + ', "top_p": 7}',
        }
        fields = [k for k in GOOD if k != "prompt"]
        values = ["NaN", "Infinity", "-Infinity", "1e-300", "1e300", "-1e300", "9" * 5000, "0." + "0" * 4999 + "1",
                  '"1"', "true", "null", "[]", "{}", "-1", "1.5e400"]  # fmt: skip
        for f in fields:
            for v in values:
                if v.startswith("0.000") and f in ("temperature", "min_p"):
                    continue  # 1e-5000 reads as 0.0, which these knobs allow (greedy, no floor)
                body = good_json.replace(f'"{f}": {json.dumps(GOOD[f])}', f'"{f}": {v}')
                bodies[f"{f} = {v[:12]}{'...' if len(v) > 12 else ''}"] = body
        if quick:
            keep = ["bad JSON", "a JSON list", "prompt a lone surrogate", "32,000 nested brackets",
                    "top_p = NaN", "temperature = 1e-300", "seed = 999999999999..."]  # fmt: skip
            bodies = {k: bodies[k] for k in keep}
        for name, b in bodies.items():
            body_case(name, b)

        big = b'{"prompt": "' + b"x" * 70000 + b'"}'
        case("oversized body (70 kB)", post_raw(big[:1000], length=len(big)))
        case("Content-Length -1", post_raw(b"{}", length=-1))
        case("Content-Length abc", post_raw(b"{}", length="abc"))
        case("Content-Length missing", post_raw(b"{}", headers={"Content-Length": None}))
        case("Content-Length 10**30", post_raw(b"{}", length=10**30))
        if not quick:
            case("wrong path", post_raw(b"{}", path="/api/generat"), expect=(404,))
            case("GET unknown page", post_raw(b"", method="GET", path="/../../etc/passwd"), expect=(404,))
            case("method DELETE", post_raw(b"", method="DELETE"), expect=(405,))
            case("method PUT", post_raw(b"{}", method="PUT"), expect=(405,))
            case("garbage request line", b"\x00\x01\x02 garbage\r\n\r\n", expect=(400,))
            # 505 is HTTP's own answer to a version it does not speak (a JSON error, not a failure)
            case("HTTP/9.9", b"GET / HTTP/9.9\r\n\r\n", expect=(400, 505))
            case("70 kB request line", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", expect=(414,))
            case("header without colon", b"POST /api/generate HTTP/1.1\r\nnonsense\r\n\r\n", expect=(400,))
            case(
                "Content-Length larger than body (stall)",
                post_raw(b"{}", length=100),
                expect=(408,),
                timeout=10,
            )
        case("silent client", b"", expect=(408,), timeout=10)
        case("half a request line (stall)", b"POST /api/gen", expect=(408,), timeout=10)
        case("headers never finished (stall)", b"POST /api/generate HTTP/1.1\r\nContent-Length: 2\r\n",
             expect=(408,), timeout=10)  # fmt: skip

        # Many at once: each must get a 200 or a 429 (max_concurrent is 2), none a reset or a 5xx.
        n = 20 if quick else 100
        statuses, lock = [], threading.Lock()

        def one(i):
            status, _, err = http(port, post_raw(json.dumps({**GOOD, "seed": i}).encode()), timeout=120)
            with lock:
                statuses.append(status if status is not None else err)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        counts = {s: statuses.count(s) for s in set(map(str, statuses))}
        statuses = [str(s) for s in statuses]
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        ok = len(statuses) == n and set(statuses) <= {"200", "429"} and "200" in statuses
        record("dashboard", f"{n} concurrent requests", "clean" if ok else "wrong", f"statuses {counts}")
        record("dashboard", "a normal request after everything", "clean" if alive() else "wrong", "")
    finally:
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------------------------------------- faults


def lab_process(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "lab.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)  # fmt: skip


def finish(p, limit):
    try:
        out, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "hang", "", ""
    return p.returncode, out, err


def err_lines(err):
    return [line for line in err.splitlines() if line.strip()]


def metrics_files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("metrics.jsonl"))}


def fault_cases(scratch: Path, quick: bool):
    import errno

    import jax.numpy as jnp

    from lab.errors import CheckpointError
    from lab.train import checkpoint as ckpt

    # (5) A full disk while saving a checkpoint: one line, and Orbax's temporary directory removed.
    mngr = ckpt.manager(scratch / "ck")
    state = {"w": jnp.arange(4.0)}
    mngr.save(10, state)
    mngr.finish()

    def full_disk(step, args=None):  # what Orbax does when the disk fills: a temporary dir, then OSError
        (mngr.directory / f"{step}{ckpt.TMP_MARK}-1700000000").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mngr._mngr.save = full_disk
    try:
        mngr.save(20, state)
        record("faults", "checkpoint save on a full disk (ENOSPC)", "wrong", "no error raised")
    except CheckpointError as e:
        left = sorted(os.listdir(scratch / "ck"))
        msg = str(e)
        if left != ["10"]:
            record("faults", "checkpoint save on a full disk (ENOSPC)", "partial", f"left {left}")
        elif "\n" in msg or "No space left" not in msg:
            record("faults", "checkpoint save on a full disk (ENOSPC)", "wrong", msg[:200])
        else:
            record("faults", "checkpoint save on a full disk (ENOSPC)", "clean", msg)
    except Exception as e:  # noqa: BLE001
        record("faults", "checkpoint save on a full disk (ENOSPC)", "traceback", f"{type(e).__name__}: {e}")

    if quick:  # a second writer, in-process: the lock held by another process is one line naming its PID
        import experiments
        from lab.experiment import find, registry

        (exp,) = find(registry(experiments), "e04")
        out = exp.out_dir(scratch / "held")
        out.mkdir(parents=True)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time\nfrom lab.runs import lock\nwith lock(sys.argv[1]):\n"
             "    print('held', flush=True)\n    time.sleep(120)\n", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            holder.stdout.readline()
            cli_case("faults", "a second writer while a run holds the lock",
                     ["run", "e04", "--preset", "smoke", "--results", str(scratch / "held")], scratch / "held",
                     fragment=f"PID {holder.pid}", limit=60)  # fmt: skip
        finally:
            holder.kill()
            holder.wait()
        return

    R = scratch / "R"
    limit = 300
    # (2) Two identical runs at once: one refused in one line naming the other's PID, one finishes.
    name = "two identical runs at once"
    a, b = lab_process([*RUN_ARGS, "--results", str(R)]), lab_process([*RUN_ARGS, "--results", str(R)])
    (ca, _, ea), (cb, _, eb) = finish(a, limit), finish(b, limit)
    pids = {a.pid, b.pid}
    if "hang" in (ca, cb):
        record("faults", name, "hang", f"exit {ca}, {cb}")
        return
    if "Traceback" in ea + eb or not {ca, cb} <= {0, 2}:
        record("faults", name, "traceback", f"exit {ca}, {cb}: {(ea + eb)[-200:]}")
        return
    loser_err = ea if ca == 2 else eb
    rows = [  # (file, step, member): one row each
        (f, json.loads(line)["step"], json.loads(line)["member"])
        for f, data in metrics_files(R).items()
        for line in data.decode().splitlines()
    ]
    lines = err_lines(loser_err)
    if sorted((ca, cb)) != [0, 2] or len(lines) != 1 or not any(f"PID {p}" in lines[0] for p in pids):
        record("faults", name, "wrong", f"exit {ca}, {cb}; loser said {loser_err[:200]!r}")
        return
    if len(rows) != len(set(rows)) or not rows:
        record("faults", name, "wrong", f"{len(rows) - len(set(rows))} repeated metrics rows")
        return
    record("faults", name, "clean", lines[0])
    baseline = metrics_files(R)

    # (3) 40 bytes cut off metrics.jsonl: analyze is one line naming the member and the steps.
    R3 = scratch / "R3"
    shutil.copytree(R / EXP_DIR, R3 / EXP_DIR, ignore=shutil.ignore_patterns("checkpoints"))
    m = R3 / EXP_DIR / "runs" / "D8" / "metrics.jsonl"
    m.write_bytes(m.read_bytes()[:-40])
    (R3 / EXP_DIR / "findings.json").unlink()
    cli_case("faults", "metrics.jsonl cut by 40 bytes, then analyze", ["analyze", "e00", "--results", str(R3)],
             R3, fragment="member", limit=60)  # fmt: skip
    if RESULTS[-1].outcome == "clean" and "step" not in RESULTS[-1].detail:
        RESULTS[-1].outcome, RESULTS[-1].detail = "wrong", "does not name the step: " + RESULTS[-1].detail

    # (1) The largest file of the newest checkpoint truncated: the rerun resumes from the older intact one.
    name = "newest checkpoint truncated, then rerun"
    ck = R / EXP_DIR / "runs" / "D8" / "checkpoints"
    newest = max((p for p in ck.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    files = [p for p in newest.rglob("*") if p.is_file() and p.name != ckpt.MANIFEST]
    big = max(files, key=lambda p: p.stat().st_size)
    os.truncate(big, big.stat().st_size // 2)
    code, out, err = finish(lab_process([*RUN_ARGS, "--results", str(R)]), limit)
    lines = err_lines(err)
    if code == "hang":
        record("faults", name, "hang", "")
    elif "Traceback" in out + err or code != 0:
        record("faults", name, "traceback" if code not in (0, 2) or "Traceback" in err else "wrong",
               f"exit {code}: {err[-200:]}")  # fmt: skip
    elif len(lines) != 1 or "instead" not in lines[0]:
        record("faults", name, "wrong", f"stderr {err[:200]!r}")
    elif metrics_files(R) != baseline:
        record("faults", name, "wrong", "metrics differ from the uninterrupted run's")
    else:
        record("faults", name, "clean", lines[0])

    # (4) kill -9 mid-run, then the same command: metrics identical to the uninterrupted run's.
    name = "kill -9 mid-run, then resume"
    R4 = scratch / "R4"
    p = lab_process([*RUN_ARGS, "--results", str(R4)])
    t0 = time.time()
    first = R4 / EXP_DIR / "runs" / "D8" / "checkpoints" / "10"
    while time.time() - t0 < limit and p.poll() is None and not first.is_dir():
        time.sleep(0.05)
    time.sleep(0.5)
    killed = p.poll() is None
    if killed:
        os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    code, out, err = finish(lab_process([*RUN_ARGS, "--results", str(R4)]), limit)
    if code == "hang":
        record("faults", name, "hang", "")
    elif "Traceback" in out + err or code != 0:
        record("faults", name, "traceback" if code not in (0, 2) or "Traceback" in err else "wrong",
               f"exit {code}: {err[-200:]}")  # fmt: skip
    elif not killed:
        record("faults", name, "wrong", "the run finished before it could be killed")
    elif metrics_files(R4) != baseline:
        record("faults", name, "wrong", "metrics.jsonl differs from the uninterrupted run's")
    else:
        record(
            "faults", name, "clean", f"killed after {time.time() - t0:.0f} s; resumed to identical metrics"
        )


# ---------------------------------------------------------------------------------------------- report


def table() -> str:
    rows = ["| area | tried | " + " | ".join(HEADERS) + " |", "|---" * (2 + len(HEADERS)) + "|"]
    for area in [*AREAS, "total"]:
        rs = [r for r in RESULTS if area in ("total", r.area)]
        counts = [sum(r.outcome == o for r in rs) for o in OUTCOMES]
        label = f"**{area}**" if area == "total" else area
        rows.append(f"| {label} | {len(rs)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(rows)


def problems() -> str:
    bad = [r for r in RESULTS if r.outcome != "clean"]
    if not bad:
        return "Every case was clean."
    return "Cases that were not clean:\n\n" + "\n".join(
        f"- {r.area}: `{r.name}` — **{r.outcome}**: {r.detail}" for r in bad
    )


DESCRIPTION = """\
What is tried (scripts/fuzz.py's docstring defines each column):
- **cli**: `lab.cli.main` in-process (nothing can train: the experiment's `run` is a stub that fails the case)
  with unknown experiments, presets, options; `--set` with unknown keys, wrong types, out-of-range, inf/nan/-0,
  huge and empty values, list syntax errors, models too large for memory; `--seeds` 0/-1/abc/huge;
  `--data` unknown names and `file:` missing, a directory, /dev/zero, a FIFO, empty, binary, not UTF-8,
  a symlink loop, /proc files; `--results` a file, under a file, in /proc, a NUL byte, a 300-character name;
  `analyze`/`report` on empty, torn and garbage results; `config`, `list`, `dashboard` and `tokenizer train`
  with junk. Each case's scratch directory is listed before and after (partial files).
- **tokenizer files**: `lab tokenizer encode --tokenizer DIR` on a tokenizer trained here and then corrupted
  (truncated or non-JSON header, wrong fields, catastrophic or invalid regexes, bad special tokens, malformed
  merges, duplicate, negative, huge or missing ranks, missing files), invalid UTF-8 on stdin, and `decode` /
  `show` of non-integers, negative, huge ids and lone surrogates.
- **dashboard**: a server on 127.0.0.1 (a tiny untrained model, request_timeout 1 s, max_concurrent 2) sent bad
  JSON, non-objects, unknown fields, wrong types, NaN/Infinity, 1e-300/1e300/5000-digit numbers in every knob,
  32,000 nested brackets, lone surrogates, oversized bodies, bad Content-Length, wrong methods and paths,
  stalled senders, and 100 requests at once (each must get a 200 or a 429); after each 4xx a normal request
  must still succeed.
- **faults**: on a smoke run of the template (`lab run e00 --preset smoke --set widths=8,16 --set seeds=1`):
  two identical runs at once; 40 bytes cut off metrics.jsonl, then `analyze`; the largest file of the newest
  checkpoint truncated, then the run again; kill -9 mid-run, then the run again (metrics must equal the
  uninterrupted run's); and a checkpoint save failing with ENOSPC."""


def main(argv=None) -> int:
    from _script_args import Parser

    ap = Parser(prog="fuzz.py", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few cases of each kind (for the test suite)")
    ap.add_argument("--write", action="store_true", help="write the table to results/reliability.md")
    ap.add_argument("--verbose", action="store_true", help="also print every case and what it got")
    args = ap.parse_args(argv)
    RESULTS.clear()
    t0 = time.perf_counter()

    import lab.cli
    import lab.experiment
    from lab.runtime import init_jax

    init_jax()

    def no_training(*a, **k):
        raise WouldTrain

    saved = (lab.experiment.run, lab.cli.train_default_model)
    lab.experiment.run = lab.cli.train_default_model = no_training
    with tempfile.TemporaryDirectory(prefix="lab-fuzz-") as tmp:
        tmp = Path(tmp)
        try:
            for area, fn in (("cli", cli_cases), ("tokenizer", tokenizer_cases)):
                (tmp / area).mkdir()
                cwd = os.getcwd()
                os.chdir(tmp / area)
                try:
                    fn(tmp / area, args.quick)
                finally:
                    os.chdir(cwd)
            dashboard_cases(args.quick)
            (tmp / "faults").mkdir()
            fault_cases(tmp / "faults", args.quick)  # its in-process cases must not train either
        finally:
            lab.experiment.run, lab.cli.train_default_model = saved
    seconds = time.perf_counter() - t0
    command = "python scripts/fuzz.py" + (" --quick" if args.quick else "")
    text = f"{table()}\n\n{problems()}\n"
    if args.verbose:
        for r in RESULTS:
            print(f"{r.area:16} {r.outcome:9} {r.name[:60]:60} {r.detail[:150]}")
    print(text + f"\n({len(RESULTS)} cases in {seconds:.0f} s)")
    if args.write:
        from lab.fileio import atomic_write_text
        from lab.report import portable_paths

        doc = (
            "# Reliability: hostile inputs and faults\n\n"
            f"Made by `{command} --write` (issue 12). {DESCRIPTION}\n\n{text}"
        )
        doc = portable_paths(doc).replace(str(ROOT), ".").replace(tempfile.gettempdir(), "TMP")
        path = ROOT / "results" / "reliability.md"
        atomic_write_text(path, doc)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0 if all(r.outcome == "clean" for r in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
