"""Run directories, read and guarded without JAX: what `run` wrote and what `analyze` reads.

A training run directory (written by `lab.train.train_sweep`) holds

    config.json     {"config": {model, train, task, members, forward, data}, "provenance": {...}}
    metrics.jsonl   one JSON row per (logged step, sweep member)
    checkpoints/    Orbax checkpoints (read only by code that needs the parameters, i.e. `run`)

and an experiment's measurement files (`runs/*.json`, `runs/*.npz`, written by `write_measurement`)
hold the numbers `run` computed from trained models, with the experiment config and git commit that
made them. This module reads all of it with the standard library and NumPy, so `lab analyze` never
starts JAX, and it holds the one guard that keeps two configs from sharing a directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import shutil
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab import config as config_lib
from lab.errors import CheckpointError, DataError
from lab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, is_writer, read_json
from lab.provenance import git_commit


# --- metrics.jsonl ----------------------------------------------------------------------------------------
def clean_float(v):
    """A float as JSON can hold it: NaN -> null, ±inf -> "inf" / "-inf"."""
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


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All rows of a metrics file; a torn final line (from a kill) is ignored, a torn middle line is an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"metrics file {path} does not exist; run the experiment first (lab run ...)")
    return [row for _, row in _rows(path)]


def truncate_after(path: str | os.PathLike, step: int) -> None:
    """Keep only the rows with row["step"] <= step (atomic rewrite)."""
    path = Path(path)
    if not path.exists():
        return
    atomic_write_text(path, "".join(line + "\n" for line, row in _rows(path) if row["step"] <= step))


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(line, row) for each row of a metrics file, each checked (non-finite values restored); a torn final
    line (a kill while writing) is left out; anything else that is not a metrics row is a DataError."""
    fix = "; pass --fresh to train its run again"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"metrics file {path} is not valid UTF-8 (corrupted){fix}") from None
    out = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}:{i + 1}: corrupted metrics line (not JSON){fix}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i + 1}: corrupted metrics row (not a JSON object){fix}")
        for k, v in row.items():
            if k in ("step", "member"):
                ok, what = isinstance(v, int) and v >= 0, "a whole number >= 0"
            else:
                v = row[k] = _restore(v)
                ok, what = isinstance(v, (int, float)), "a number"
            if not ok or isinstance(v, bool):
                raise DataError(f"{path}:{i + 1}: corrupted metrics row ({k}={v!r} is not {what}){fix}")
        if "step" not in row:
            raise DataError(f"{path}:{i + 1}: corrupted metrics row (no step){fix}")
        out.append((line, row))
    return out


# --- one writer per directory ---------------------------------------------------------------------------------
_held: dict[str, list] = {}  # lock file path -> [open file, depth]: this process's locks (re-entrant)
_held_guard = threading.Lock()


def lock_path(directory: str | os.PathLike) -> Path:
    """The lock file of `directory`: a sibling, `.<name>.lock`, so that `--fresh` (which removes the
    directory) never removes a lock that is held."""
    directory = Path(directory).absolute()
    return directory.parent / f".{directory.name}.lock"


@contextlib.contextmanager
def lock(directory: str | os.PathLike, what: str = "writing to"):
    """Hold the one-writer lock of `directory` (an experiment's results or a run directory) while the block
    runs; another process holding it is refused at once with a CheckpointError naming its PID.

    The lock is `fcntl.flock` on `lock_path(directory)`, which records the holder's PID. The kernel drops
    it when the holder dies, so a run killed even with SIGKILL never blocks the next one. It is re-entrant
    within a process: `lab run` holds it around an experiment and `train_sweep` again around each sweep.
    """
    path = lock_path(directory)
    if not is_writer():  # a process of a multi-process job other than 0: it writes nothing to guard
        yield path
        return
    key = str(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            entry = None
        else:
            entry = _acquire(path, directory, what)
            _held[key] = [entry, 1]
    try:
        yield path
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                f = _held.pop(key)[0]
                f.close()  # closing drops the flock; the file stays (removing it would race a new holder)


def _acquire(path: Path, directory, what: str):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until the lock is released
    except OSError as e:
        raise CheckpointError(
            f"cannot create the lock file {path} ({e.strerror or e}); the results directory must be a "
            "writable directory"
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise CheckpointError(f"cannot lock {path} ({e.strerror or e})") from None
        raise CheckpointError(
            f"{directory} is in use by another lab process (PID {holder}, holding {path}); wait for it to "
            f"finish or stop it before {what} it, or pass --results DIR to use another directory"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


# --- config.json: one config per directory -------------------------------------------------------------------
def check_or_write_config(
    run_dir: Path,
    want: dict,
    fresh: bool = False,
    write: bool = True,
    upgrade=None,
    allow_dirty: bool = False,
) -> None:
    """Write config.json, or refuse if `run_dir` already holds a run of a different config.

    With write=False only the check is made (nothing is created or removed). `upgrade(have) -> have`, if
    given, fills in fields added to the config classes since the run was recorded (at their defaults,
    lab.config.fill_defaults) before comparing. `allow_dirty` is recorded in the provenance (lab run
    --allow-dirty: published results from a tree with uncommitted changes).
    """
    from lab.provenance import provenance

    run_dir = Path(run_dir)
    want = json.loads(json.dumps(want))  # compare as JSON sees it: tuples are lists
    path = run_dir / "config.json"
    if fresh:
        if write and run_dir.exists():
            shutil.rmtree(run_dir)
        elif not write:
            return
    if path.exists():
        try:
            doc = read_json(path)
            have = doc.get("config", {}) if isinstance(doc, dict) else None
            if not isinstance(have, dict):
                raise ValueError("not a config")
        except (ValueError, OSError):
            raise CheckpointError(f"{path} is unreadable or corrupted; pass --fresh to start over") from None
        if upgrade is not None:
            have = upgrade(have)
        if have != want:
            d = config_lib.diff(have, want)
            shown = "; ".join(d[:3]) + (f"; and {len(d) - 3} more" if len(d) > 3 else "")
            raise CheckpointError(
                f"{run_dir} holds a run with a different config ({shown}; on disk vs now); "
                "pass --fresh to replace it or --results DIR to write elsewhere"
            )
        return  # same config: keep the provenance of the session that started it
    if write:
        atomic_write_json(path, {"config": want, "provenance": provenance(allow_dirty)})


# --- a finished training run, as arrays ------------------------------------------------------------------------
@dataclass
class RunData:
    run_dir: Path
    config: dict  # the "config" part of config.json: model, train, task, members, data
    members: list[dict]  # seed, lr, init_scale, extra per member
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

    @property
    def corpus_sha256(self) -> str | None:
        return (self.config.get("data") or {}).get("sha256")

    def member_values(self, key: str) -> np.ndarray:
        """(M,) one member field ("seed", "lr", "init_scale") as an array."""
        return np.array([m[key] for m in self.members])

    def extra(self, i: int = 0) -> np.ndarray:
        """(M,) the i-th experiment-defined hyperparameter of each member."""
        return np.array([m["extra"][i] for m in self.members])

    def failed(self, initial_loss: float) -> np.ndarray:
        """(M,) members whose training failed: a non-finite loss at some step (diverged), or a final
        validation loss above `initial_loss` (e.g. the untrained model's: it learned nothing)."""
        final = self.final_val_loss
        return (self.diverged_at >= 0) | ~np.isfinite(final) | (final > initial_loss)

    @property
    def max_grad_norm(self) -> np.ndarray:
        """(M,) the largest finite logged gradient norm of each member (NaN where none is finite)."""
        finite = np.where(np.isfinite(self.grad_norm), self.grad_norm, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: members that diverged at once
            return np.nanmax(finite, axis=1)


def _grid(rows, key, members, steps):
    out = np.full((members, len(steps)), np.nan)
    index = {s: i for i, s in enumerate(steps)}
    for r in rows:
        if key in r:
            out[r["member"], index[r["step"]]] = r[key]
    return out


def expected_steps(train: dict) -> tuple[list[int], list[int]]:
    """(train steps, validation steps) at which a finished run of the train config `train` (a dict of
    lab.train.TrainConfig) has a metrics row for every member: the end of each compiled call of `log_every`
    steps (and of a shorter last one), and step 0, every `eval_every` steps and the last step."""
    steps, log_every, eval_every = int(train["steps"]), int(train["log_every"]), int(train["eval_every"])
    logged = sorted({*range(log_every, steps + 1, log_every), steps})
    return logged, [0, *(s for s in logged if s % eval_every == 0 or s == steps)]


def _spans(steps) -> str:
    """Steps as short text: "15, 20" or "30, 40, ..., 300 (28 steps)"."""
    steps = list(steps)
    if len(steps) <= 4:
        return ", ".join(map(str, steps))
    return f"{steps[0]}, {steps[1]}, ..., {steps[-1]} ({len(steps)} steps)"


def _read_config(run_dir: Path) -> dict:
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path} does not exist; run the experiment first (lab run ...)")
    try:
        return read_json(cfg_path)["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{cfg_path} is unreadable or corrupted; rerun the experiment with --fresh") from None


def check_complete(run_dir: str | Path, rows: list[dict] | None = None, config: dict | None = None) -> None:
    """Refuse (DataError) a training run that is not finished or whose metrics are torn: every member must
    have exactly one train row at every logged step up to train.steps and a validation row at every
    evaluation step (`expected_steps`). A missing row is never read as a number (or as NaN, which would
    count as a divergence); the message names the first member with missing steps and the steps."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir) if config is None else config
    rows = read_rows(run_dir / "metrics.jsonl") if rows is None else rows
    try:
        logged, evals = expected_steps(config["train"])
        n = len(config["members"])
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{run_dir / 'config.json'} is not a training run's config (no train/members)"
        ) from None
    seen: dict[tuple[str, int, int], int] = {}
    for r in rows:
        for kind in ("loss", "val_loss"):
            if kind in r:
                k = (kind, r.get("member"), r.get("step"))
                seen[k] = seen.get(k, 0) + 1
    twice = sorted((k for k, c in seen.items() if c > 1), key=lambda k: (k[1], k[2]))
    if twice:
        kind, member, step = twice[0]
        raise DataError(
            f"{run_dir / 'metrics.jsonl'} has {len(twice)} rows written more than once (first: member "
            f"{member}, step {step}): two processes wrote this run; rerun it with --fresh"
        )
    for member in range(n):
        for kind, want, what in (("loss", logged, "train"), ("val_loss", evals, "validation")):
            missing = [s for s in want if (kind, member, s) not in seen]
            if missing:
                raise DataError(
                    f"{run_dir} is incomplete: member {member} has no {what} row at step {_spans(missing)} "
                    f"(a finished run has them up to train.steps={config['train']['steps']}); rerun "
                    "`lab run` with the same options to finish it"
                )


def load_run(run_dir: str | Path, corpus_sha256: str | None = None) -> RunData:
    """A finished training run from its config.json and metrics.jsonl (an unfinished or torn one is refused:
    `check_complete`). With `corpus_sha256`, refuse a run trained on a different corpus than the one named
    (its content hash is recorded in config.json)."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    members = config["members"]
    rows = read_rows(run_dir / "metrics.jsonl")
    if not rows:
        raise DataError(f"{run_dir / 'metrics.jsonl'} is empty; run the experiment first")
    check_complete(run_dir, rows, config)
    m = len(members)
    train_steps = np.array(sorted({r["step"] for r in rows if "loss" in r}), dtype=np.int64)
    val_steps = np.array(sorted({r["step"] for r in rows if "val_loss" in r}), dtype=np.int64)
    diverged = np.full(m, -1, dtype=np.int64)
    for r in rows:
        if r.get("diverged_at", -1) >= 0 and diverged[r["member"]] < 0:
            diverged[r["member"]] = r["diverged_at"]
    run = RunData(
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
    if corpus_sha256 is not None and run.corpus_sha256 != corpus_sha256:
        raise CheckpointError(
            f"{run_dir} was trained on a different corpus (sha256 {str(run.corpus_sha256)[:12]}… vs "
            f"{corpus_sha256[:12]}…); rerun the experiment with --fresh"
        )
    return run


def training_runs(root: str | Path) -> list[Path]:
    """Every training run directory under `root` (directories holding both config.json and metrics.jsonl),
    sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("metrics.jsonl") if (p.parent / "config.json").is_file())


def check_runs_complete(root: str | Path) -> None:
    """`check_complete` for every training run under `root`: what analysis checks before it reads anything,
    so that measurement files from models of an unfinished run are never analyzed."""
    for run_dir in training_runs(root):
        check_complete(run_dir)


def load_runs(dirs: dict, corpus_sha256: str | None = None) -> dict:
    """{key: RunData} for {key: run directory}, refusing a set whose members were trained on different
    corpora (e.g. one sweep rerun after the corpus changed), or on another corpus than `corpus_sha256`."""
    runs = {k: load_run(d, corpus_sha256) for k, d in dirs.items()}
    hashes = {r.corpus_sha256 for r in runs.values()} - {None}
    if len(hashes) > 1:
        raise CheckpointError(
            f"the runs under {Path(next(iter(dirs.values()))).parent} were trained on {len(hashes)} "
            "different corpora; rerun the experiment with --fresh"
        )
    return runs


# --- measurement files: numbers `run` computed from trained models ------------------------------------------
def _meta(config) -> dict:
    return {
        "config": None if config is None else config_lib.to_dict(config),
        "git_commit": git_commit(),
    }


def write_measurement(path: str | Path, data: dict, config=None) -> Path:
    """Write what `run` measured, with the experiment config and git commit that made it, atomically.

    `path` ending in .json: `data` is any JSON value tree (NaN allowed). Ending in .npz: `data` maps
    names to arrays. Read back with `read_measurement`.
    """
    path = Path(path)
    if path.suffix == ".json":
        atomic_write_json(path, {"meta": _meta(config), "data": data})
    elif path.suffix == ".npz":
        buf = io.BytesIO()
        arrays = {k: np.asarray(v) for k, v in data.items()}
        np.savez(buf, __meta__=np.array(json.dumps(_meta(config))), **arrays)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise ValueError(f"a measurement file is .json or .npz, got {path.name}")
    return path


def read_measurement(path: str | Path, config=None):
    """The data of a file written by `write_measurement`. With `config`, refuse a file measured with a
    different experiment config (a stale file left by an older run)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run the experiment first (lab run ...)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                data = {k: z[k] for k in z.files if k != "__meta__"}
        else:
            stored = read_json(path)
            meta, data = stored["meta"], stored["data"]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path} is corrupted or not a measurement file ({type(e).__name__}); rerun"
        ) from None
    have = meta.get("config")
    if config is not None and isinstance(have, dict):  # fields added since, at their defaults
        have = config_lib.fill_defaults(have, type(config))
    if config is not None and have != config_lib.to_dict(config):
        d = config_lib.diff(have or {}, config_lib.to_dict(config))
        raise CheckpointError(
            f"{path} was measured with a different config ({'; '.join(d[:3])}); rerun the experiment"
        )
    return data
