"""The README, followed from the top: every shell command in its ```bash blocks (and each Python block marked
`<!-- run by tests/test_readme.py -->`) runs, in the order written, in a temporary copy of this checkout,
and afterwards `git status` there is clean (nothing under version control changed, nothing untracked left
outside ignored paths). The README's two halves, running experiments (up to the dashboard) and the tools
after it (dashboard, library snippet, tokenizer, benchmarks), share no files, so they walk at once, each
in its own order, which keeps the walkthrough within the suite's time.

Commands run as written except where the README offers a size: `lab run` without `--preset` runs the
`smoke` preset, and the dashboard trains its `smoke` model on a free port. The experiments' smoke runs are
the session's shared ones (tests/conftest.py `smoke_run`), copied into the copy's `scratch/smoke/` with
their trained-and-measured markers, so `./lab.sh run all --preset smoke` there only redraws every analysis
instead of training and measuring everything a second time; the experiments' own tests cover that. Benchmark commands
run with `--smoke`, which shrinks them and writes nothing. `./lab.sh test` is this suite, so it is not run
again. Commands that need a download (Tiny Shakespeare, GPT-2's ranks) get it from $LAB_REFERENCE_DATA
through a seeded cache, and are skipped, saying so, where it is unset.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lab.experiment import MEASURED

ROOT = Path(__file__).resolve().parents[1]
RUN_MARK = "<!-- run by tests/test_readme.py -->"
NEEDS_DOWNLOAD = {"tinyshakespeare": "tinyshakespeare.txt", "--tokenizer gpt2": "gpt2.tiktoken"}


def readme_steps(text: str) -> list[tuple[str, str]]:
    """[("bash", command) | ("python", source)] in README order: each line of a ```bash block without its
    comment, and each ```python block that follows RUN_MARK."""
    steps = []
    for m in re.finditer(r"(<!--[^\n]*-->\n)?```(bash|python)\n(.*?)```", text, re.S):
        mark, lang, body = m.groups()
        if lang == "python":
            steps += [("python", body)] if mark and mark.strip() == RUN_MARK else []
            continue
        for line in body.splitlines():
            command = _strip_comment(line).strip()
            steps += [("bash", command)] if command else []
    return steps


def _strip_comment(line: str) -> str:
    """The line up to a `#` that starts a shell comment (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def sized(command: str) -> str | None:
    """The command as the walkthrough runs it (smoke-sized where the README offers a size), or None for
    the one it must not run (this suite itself)."""
    words = shlex.split(command)
    if words[:2] == ["./lab.sh", "test"]:
        return None
    if words[:2] == ["./lab.sh", "run"] and "--preset" not in words:
        return f"{command} --preset smoke"
    if "scripts/bench_" in command:  # the walkthrough installs nothing: `pip install ... &&` is dropped
        script = command.split("&&")[-1].replace(" --write", "").strip()
        return f"{script} --smoke".replace(".venv/bin/", f"{sys.prefix}/bin/")
    return command


def _copy_checkout(dest: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, committed in a new repository at
    `dest`: a fresh clone of what is being tested (uncommitted changes included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout under test"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)


def _dirty(clone: Path) -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True, text=True
    ).stdout


def _env(tmp_path: Path) -> tuple[dict, set[str]]:
    """The environment commands run in (this venv, a seeded download cache), and the downloads it lacks."""
    cache = tmp_path / "cache"
    cache.mkdir()
    ref = os.environ.get("LAB_REFERENCE_DATA")
    missing = set()
    for name in NEEDS_DOWNLOAD.values():
        if ref and Path(ref, name).is_file():
            shutil.copy(Path(ref, name), cache / name)
        else:
            missing.add(name)
    env = {**os.environ, "LAB_VENV": sys.prefix, "LAB_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    return env, missing


def _dashboard(command: str, clone: Path, env: dict) -> None:
    """Start the dashboard (smoke model, free port), load its page, stop it with Ctrl-C (SIGINT)."""
    cmd = f"{command} --preset smoke --port 0"
    proc = subprocess.Popen(
        cmd, shell=True, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"open (http://\S+?)/", line):
                with urllib.request.urlopen(m.group(1) + "/", timeout=60) as r:
                    assert r.status == 200 and b"<html" in r.read().lower()
                return
        pytest.fail(f"`{cmd}` exited without serving:\n{''.join(lines)[-3000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _seed_smoke_runs(clone: Path, smoke_run) -> None:
    """Every published experiment's shared smoke run, copied to the copy's scratch/smoke (resumable)."""
    import experiments
    from lab.experiment import registry

    for exp in registry(experiments).values():
        if exp.is_template:
            continue
        _, out = smoke_run(exp.id)
        dest = clone / "scratch" / "smoke" / out.name
        shutil.copytree(out, dest, ignore=shutil.ignore_patterns(".*.lock"))  # with its MEASURED marker
        assert (dest / MEASURED).is_file()


def test_the_readme_from_the_top_on_a_fresh_copy(tmp_path, smoke_run):
    if not (Path(sys.prefix) / ".lab-install-stamp").exists():
        pytest.skip(f"not running from a venv made by lab.sh ({sys.prefix}); ./lab.sh test makes one")
    clone = tmp_path / "clone"
    _copy_checkout(clone)
    env, missing = _env(tmp_path)
    steps = readme_steps((clone / "README.md").read_text(encoding="utf-8"))
    assert any(c.startswith("./lab.sh run all") for _, c in steps), "the README's main command is gone"
    tools = next(i for i, (_, c) in enumerate(steps) if c.startswith("./lab.sh dashboard"))
    halves = {"experiments": steps[:tools], "tools": steps[tools:]}
    times, skipped = {k: [] for k in halves}, []
    if "run all" in " ".join(c for _, c in steps[:tools]):  # seeded before either half starts
        _seed_smoke_runs(clone, smoke_run)
    try:
        with concurrent.futures.ThreadPoolExecutor(len(halves)) as pool:
            walks = [pool.submit(_walk, s, clone, env, missing, times[k], skipped) for k, s in halves.items()]
            for w in walks:
                w.result()  # re-raises the half's failure
    finally:  # how long each took (-s shows it), also when one fails
        lines = [f"  {k}:\n" + "\n".join(v) for k, v in times.items()]
        print("\n".join(["README walkthrough:", *lines, *(f"  skipped: {s}" for s in skipped)]))


def _walk(steps, clone, env, missing, times, skipped) -> None:
    for lang, step in steps:
        command = sized(step) if lang == "bash" else step
        need = [f for k, f in NEEDS_DOWNLOAD.items() if k in step and f in missing]
        if command is None or need:
            skipped.append(f"{step} ({'this suite' if command is None else 'needs ' + ', '.join(need)})")
            continue
        t0 = time.perf_counter()
        if command.startswith("./lab.sh dashboard"):
            _dashboard(command, clone, env)
        else:
            argv = [sys.executable, "-c", command] if lang == "python" else ["bash", "-c", command]
            r = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"`{command}` exited {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}"
        times.append(f"{time.perf_counter() - t0:6.1f} s  {command.splitlines()[0][:100]}")
        assert not _dirty(clone), f"after `{command}`, git status is not clean:\n{_dirty(clone)}"
