"""The published results redraw from what a fresh clone has: every reported experiment's files under
results/ that git tracks (configs, metrics, measurements, plots; no checkpoints), with their findings and
tables deleted, re-analyzed where JAX cannot compute, give back the committed findings.json, tables, plots
and REPORT.md byte for byte. So `lab analyze` and `lab report` work on a fresh clone, and the committed
analysis is what the code draws from the committed numbers."""

import re
import shutil
import subprocess
from pathlib import Path

from lab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def clone_files(prefix: str) -> list[str]:
    """Paths under `prefix` that a clone of this working tree has: tracked, or new and not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", prefix],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def test_published_results_redraw_byte_for_byte_from_committed_files(tmp_path, redraw_without_jax):
    files = clone_files("results")
    assert any("/runs/" in f and f.endswith("metrics.jsonl") for f in files), "no run files are published"
    written = lambda rel: rel.endswith(("findings.json", "REPORT.md")) or "/tables/" in rel
    for rel in files:  # plots are copied (e02's animation is drawn by `run`) and redrawn over
        if not written(rel) and rel.count("/") > 1:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp_path / rel)
    redraw_without_jax(["all"], tmp_path / "results")
    assert main(["report", "--results", str(tmp_path / "results")]) == 0
    drawn = [rel for rel in files if written(rel) or "/plots/" in rel]
    differ = [rel for rel in drawn if (tmp_path / rel).read_bytes() != (ROOT / rel).read_bytes()]
    assert not differ, f"redrawn from the committed numbers, these differ from what is committed: {differ}"


MACHINE_PATH = re.compile(r"(/root/|/home/[a-z_][\w-]*/|/Users/\w+/|/work/|/tmp/|[A-Z]:\\Users\\)")


def test_no_committed_file_names_a_machines_directories():
    """Configs, results and docs record data by name and content hash, never one machine's absolute paths
    (a user's home, this workspace, temporary directories)."""
    found = []
    for rel in clone_files("."):
        if ROOT / rel == Path(__file__):  # the pattern itself
            continue
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images and other binary files
            continue
        found += [f"{rel}: {m.group(0)!r}" for m in MACHINE_PATH.finditer(text)][:1]
    assert not found, found
