"""Bad input to scripts/*.py: an unknown option, a number out of range, a missing, empty or corrupted file, an
output path that is a directory or lies under a file. Each is refused in one line on stderr naming the option,
with exit status 2, before any expensive work (no corpus is built, nothing compiled) and without creating
anything. Each script's main(argv) runs in this process: every case here returns before JAX is initialised.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Stand-ins, made in tmp_path for each case: FILE an existing regular file, DIR an existing directory, EMPTY a
# file of whitespace, BAD a file that is not UTF-8, NEW a path that does not exist yet.
CASES = {
    "bench_tokenizer": [
        (["--vocab", "abc"], "--vocab must be whole numbers >= 256"),
        (["--vocab", "100"], "--vocab must be whole numbers >= 256 separated by commas, got '100'"),
        (["--vocab", "4096,"], "--vocab must be whole numbers >= 256"),
        (["--data", "nope"], "--data: unknown corpus 'nope'; allowed: "),
        (["--data", "file:NEW"], "--data file:NEW: corpus file NEW does not exist"),
        (["--data", "file:EMPTY"], "is empty or only whitespace"),
        (["--data", "file:BAD"], "is not valid UTF-8"),
        (["--data", "file:DIR"], "is a directory"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--smoke", "--repeats", "-1"], "--repeats must be >= 1, got -1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "bench_sweep": [
        (["--strategies", "foo"], "--strategies: unknown 'foo'; allowed: auto, vmap, shard, loop"),
        (["--smoke", "--strategies", "loop,,auto"], "--strategies: unknown ''"),
        (["--members", "0"], "--members must be >= 1, got 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--devices", "0"], "--devices must be >= 1, got 0"),
        (["--members", "x"], "argument --members: invalid int value: 'x'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "bench_mesh": [
        (["--devices", "2", "--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--devices", "3"], "--devices must be a power of two >= 2, got 3"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "bench_train": [
        (["--smoke", "--chunk", "0"], "--chunk must be >= 1, got 0"),
        (["--smoke", "--steps", "-5"], "--steps must be >= 0, got -5"),
        (["--steps", "25"], "--steps 25 must be 0 or a multiple of --chunk (10)"),
        (["--smoke", "--steps", "35", "--chunk", "15"], "--steps 20 (--smoke cut 35 to 20) must be 0 or"),
        (["--devices", "0"], "--devices must be >= 1, got 0"),
        (["--time-steps", "0"], "--time-steps must be >= 1, got 0"),
        (["--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--check-steps", "-1"], "--check-steps must be >= 0, got -1"),
        (["--shape", "gpt2-small", "--batch", "0"], "--batch must be >= 1, got 0"),
        (["--smoke", "--json", "DIR"], "--json DIR is a directory; give a file name"),
        (["--smoke", "--json", "FILE/NEW/x.json"], "--json FILE/NEW/x.json: FILE is not a directory"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "bench_generate": [
        (["--smoke", "--json", "DIR"], "--json DIR is a directory; give a file name"),
        (["--smoke", "--json", "FILE/x.json"], "--json FILE/x.json: FILE is not a directory"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--smoke", "--new", "0"], "--new must be >= 1, got 0"),
        (["--batches", "1,0"], "--batches must be whole numbers >= 1 separated by commas, got '1,0'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "gpu_check": [
        (["--dry", "--no-benchmarks", "--scratch", "FILE"], "--scratch FILE exists and is not a directory"),
        (
            ["--dry", "--no-benchmarks", "--scratch", "NEW", "--out", "FILE/gpu.md"],
            "--out FILE/gpu.md: FILE is",
        ),
        (["--dry", "--scratch", "NEW", "--out", "DIR"], "--out DIR is a directory; give a file name"),
        (["--dry", "--scratch", "FILE/NEW"], "--scratch FILE/NEW: FILE is not a directory"),
        (["--dry", "--bogus"], "unrecognized arguments: --bogus"),
    ],
    "bench_rewrites": [
        (["--calls", "0"], "--calls must be >= 1, got 0"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
    "fuzz": [(["--bogus"], "unrecognized arguments: --bogus")],
}


def _stand_ins(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "FILE").write_text("text\n")
    (tmp_path / "DIR").mkdir()
    (tmp_path / "EMPTY").write_text("  \n")
    (tmp_path / "BAD").write_bytes(b"\xff\xfe not UTF-8\n")
    return {k: str(tmp_path / k) for k in ("FILE", "DIR", "EMPTY", "BAD", "NEW")}


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def _fill(text: str, paths: dict[str, str]) -> str:
    """Each stand-in at the start of a path by its path in tmp_path (FILE/NEW: a name under FILE)."""
    return re.sub(r"(?<![/\w])(FILE|DIR|EMPTY|BAD|NEW)\b", lambda m: paths[m.group(1)], text)


@pytest.mark.parametrize(
    "name, args, message",
    [pytest.param(n, a, m, id=f"{n} {' '.join(a)}") for n, cases in CASES.items() for a, m in cases],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(name, args, message, tmp_path, capsys, script):
    paths = _stand_ins(tmp_path)
    args = [_fill(a, paths) for a in args]
    before = _tree(tmp_path)
    script = script(name)
    with pytest.raises(SystemExit) as e:
        script.main(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and lines[0].strip(), err
    assert _fill(message, paths) in lines[0] and "Traceback" not in err, lines[0]
    assert lines[0].startswith(f"{'gpu_check' if name == 'gpu_check' else name + '.py'}: error: ")
    assert _tree(tmp_path) == before  # nothing made, nothing changed


def test_an_output_path_in_new_directories_is_accepted_without_making_them(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from _script_args import Parser, writable
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    p = Parser(prog="x.py")
    out = tmp_path / "a" / "b" / "x.json"
    assert writable(p, "--json", out) == out
    assert writable(p, "--scratch", tmp_path / "c" / "d", directory=True) == tmp_path / "c" / "d"
    (tmp_path / "old.json").write_text("{}")
    assert writable(p, "--json", tmp_path / "old.json") == tmp_path / "old.json"  # replaced at the end
    assert sorted(x.name for x in tmp_path.iterdir()) == ["old.json"]
