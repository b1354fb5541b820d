"""Metrics as JSONL: one JSON object per line, one line per (logged step, sweep member).

Appends are flushed line by line. A killed run can leave a torn last line; `read_rows` skips a trailing
line that does not parse, and `truncate_after` (used on resume) rewrites the file atomically without the
rows past the restored checkpoint, so a resumed run's file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.fileio import is_writer
from lab.runs import clean_float, read_rows, truncate_after

__all__ = ["MetricsWriter", "read_rows", "truncate_after"]


class MetricsWriter:
    """Append rows to `path`. Non-finite floats are written as null / "inf" (JSON has no NaN). On a process
    that does not write files (lab.fileio.is_writer: processes 1.. of a multi-process job) it writes nothing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = None
        if is_writer():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: list[dict]) -> None:
        if self._f is not None:
            self._f.write("".join(json.dumps({k: clean_float(v) for k, v in r.items()}) + "\n" for r in rows))
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
