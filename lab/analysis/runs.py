"""Read a finished sweep back from disk (config.json + metrics.jsonl) into arrays for analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.errors import DataError
from lab.fileio import read_json
from lab.train.metrics import read_rows


@dataclass
class RunData:
    run_dir: Path
    config: dict  # the "config" part of config.json: model, train, task, members, data
    members: list[dict]  # seed, lr, init_scale per member
    train_steps: np.ndarray  # (K,) steps at which train rows were logged
    train_loss: np.ndarray  # (M, K) mean train loss over each logging interval (NaN once diverged)
    grad_norm: np.ndarray  # (M, K)
    val_steps: np.ndarray  # (E,)
    val_loss: np.ndarray  # (M, E)
    val_accuracy: np.ndarray  # (M, E)
    diverged_at: np.ndarray  # (M,) step of the first non-finite loss, -1 if none

    @property
    def final_val_loss(self) -> np.ndarray:
        """(M,) validation loss at the last evaluation; NaN for members that diverged."""
        v = self.val_loss[:, -1].copy()
        v[self.diverged_at >= 0] = np.nan
        return v


def _grid(rows, key, members, steps):
    out = np.full((members, len(steps)), np.nan)
    index = {s: i for i, s in enumerate(steps)}
    for r in rows:
        if key in r:
            out[r["member"], index[r["step"]]] = r[key]
    return out


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path} does not exist; run the experiment first (lab run ...)")
    config = read_json(cfg_path)["config"]
    members = config["members"]
    rows = read_rows(run_dir / "metrics.jsonl")
    if not rows:
        raise DataError(f"{run_dir / 'metrics.jsonl'} is empty; run the experiment first")
    m = len(members)
    train_steps = np.array(sorted({r["step"] for r in rows if "loss" in r}), dtype=np.int64)
    val_steps = np.array(sorted({r["step"] for r in rows if "val_loss" in r}), dtype=np.int64)
    diverged = np.full(m, -1, dtype=np.int64)
    for r in rows:
        if r.get("diverged_at", -1) >= 0 and diverged[r["member"]] < 0:
            diverged[r["member"]] = r["diverged_at"]
    return RunData(
        run_dir=run_dir,
        config=config,
        members=members,
        train_steps=train_steps,
        train_loss=_grid(rows, "loss", m, train_steps),
        grad_norm=_grid(rows, "grad_norm", m, train_steps),
        val_steps=val_steps,
        val_loss=_grid(rows, "val_loss", m, val_steps),
        val_accuracy=_grid(rows, "val_accuracy", m, val_steps),
        diverged_at=diverged,
    )
