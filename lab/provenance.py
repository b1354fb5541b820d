"""What a run records so it can be reproduced: git commit, package versions, devices, host."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tiktoken", "matplotlib")


# Paths a run writes (published results, scratch runs): changes there are output, not code, so they do
# not make a tree "dirty" (a `lab run all` resumed after a kill sees its own rewritten results/).
OUTPUT_PATHS = ("results", "scratch")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def changed_files(root: Path | None = None) -> tuple[str, ...] | None:
    """Tracked files with uncommitted changes, outside OUTPUT_PATHS (None outside a git checkout)."""
    root = root or Path(__file__).resolve().parent.parent
    excludes = [f":(exclude){p}" for p in OUTPUT_PATHS]
    r = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes)
    if r is None or r.returncode != 0:
        return None
    return tuple(line[3:] for line in r.stdout.splitlines() if line.strip())


@functools.cache
def git_commit(root: Path | None = None) -> str | None:
    """The full commit hash of the checkout, with "+dirty" if tracked code has uncommitted changes
    (changed_files); None outside a git checkout."""
    root = root or Path(__file__).resolve().parent.parent
    out = _git(root, "rev-parse", "HEAD")
    if out is None or out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if changed_files(root) else "")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    import jax

    devs = jax.devices()
    return {
        "platform": devs[0].platform,
        "device_kind": devs[0].device_kind,
        "device_count": len(devs),
        "process_count": jax.process_count(),
    }


def provenance(allow_dirty: bool = False) -> dict:
    """What config.json records about the session that started a run; `allow_dirty` records that a run
    into the published results/ was asked for from a tree with uncommitted changes (`lab run --allow-dirty`)."""
    return {
        "git_commit": git_commit(),
        **({"allow_dirty": True} if allow_dirty else {}),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "devices": device_info(),
    }
