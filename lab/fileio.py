"""Atomic file writes: write to a temporary name in the same directory, then rename over the target.

A reader (or a killed run) therefore sees either the old file or the new one, never half of one.

In a job of several processes (lab.runtime.init_jax with jax.distributed) only process 0 writes: the others
compute the same values and `set_writer(False)` makes these functions (and everything that writes through
them: configs, metrics, measurements, locks, manifests) skip the write. Orbax writes checkpoints itself,
each process its own shards.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_writer = True  # does this process write files? (False on processes 1.. of a multi-process job)


def set_writer(flag: bool) -> None:
    global _writer
    _writer = bool(flag)


def is_writer() -> bool:
    return _writer


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    if not _writer:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
