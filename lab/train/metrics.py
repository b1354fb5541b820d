"""Metrics as JSONL: one JSON object per line, one line per (logged step, sweep member).

Appends are flushed line by line. A killed run can leave a torn last line; `read_rows` skips a trailing
line that does not parse, and `truncate_after` (used on resume) rewrites the file atomically without the
rows past the restored checkpoint, so a resumed run's file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lab.errors import DataError
from lab.fileio import atomic_write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _restore(v):
    if v is None:
        return math.nan
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return v


class MetricsWriter:
    """Append rows to `path`. Non-finite floats are written as null / "inf" (JSON has no NaN)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rows: list[dict]) -> None:
        self._f.write("".join(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n" for r in rows))
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_FLOAT_KEYS_MAY_BE_NONFINITE = ("loss", "grad_norm", "val_loss", "val_accuracy", "lr")


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All rows of a metrics file; a torn final line (from a kill) is ignored, a torn middle line is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"metrics file {path} does not exist; run the experiment first (lab run ...)")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}:{i + 1}: corrupted metrics line (not JSON)") from None
        for k in _FLOAT_KEYS_MAY_BE_NONFINITE:
            if k in row:
                row[k] = _restore(row[k])
        rows.append(row)
    return rows


def truncate_after(path: str | os.PathLike, step: int) -> None:
    """Keep only the rows with row["step"] <= step (atomic rewrite)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))
