"""Orbax checkpoints of a train state (or a sweep's stacked states), sealed with a sha256 manifest.

Checkpoints hold only the real members of a sweep, without the padding a sharded layout may add, so
they do not depend on how many devices trained them. Restoring is against an abstract target (shapes
and dtypes from `jax.eval_shape`), so a checkpoint from a different model fails loudly.

Integrity: once Orbax has finished writing a step, its files' sha256 are recorded in <step>/MANIFEST. A
restore checks them first (a truncated or altered file is found without reading it through Orbax), then
restores; a step that fails either way is passed over for the next older one (`Checkpoints.restore_intact`),
and the caller says so in one line. A checkpoint without a manifest (a kill between the end of the save and
the manifest, or one written before manifests existed) is judged by whether it restores.

A save that fails (a full disk: OSError) removes Orbax's temporary directory and is reported in one line.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import orbax.checkpoint as ocp

from lab.errors import CheckpointError
from lab.fileio import atomic_write_json, is_writer

# Orbax logs every save at INFO level; the progress bar says enough.
logging.getLogger("absl").setLevel(logging.WARNING)

MANIFEST = "lab_sha256.json"  # {"files": {relative path: sha256}} of a step's files, written after the save
TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's temporary step directories: <step>.orbax-checkpoint-tmp-<n>


def _first_line(e: BaseException, width: int = 240) -> str:
    """`e`'s message as one line of at most about `width` characters. TensorStore's messages chain every
    layer's context ("Error opening "zarr" driver: Error reading ...: <the cause>") and append dumps of its
    specs; the dumps are dropped, and a chain still too long keeps its start and its end (the cause), each
    cut at a space where its part has one, with " ... " between."""
    text = str(e).strip().split(". See full TensorStore details")[0]
    line = text.splitlines()[0].split(" [tensorstore_spec")[0].strip() if text else ""
    if not line:
        return type(e).__name__
    if len(line) <= width:
        return line
    half = max(1, (width - 5) // 2)
    head, tail = line[: half + 1], line[-(half + 1) :]  # one more: a part that ends at a space keeps its word
    head = head.rsplit(" ", 1)[0] if " " in head else head[:half]
    tail = tail.split(" ", 1)[1] if " " in tail else tail[1:]
    return f"{head} ... {tail}"


class _DropOrphanedTaskErrors(logging.Filter):
    """asyncio logs "Task exception was never retrieved" (with a TensorStore spec dozens of lines long)
    for the sibling reads of a restore that failed; the failure itself is reported in one line."""

    def filter(self, record):
        return "exception was never retrieved" not in str(record.msg)


class _DropMetadataParseErrors(logging.Filter):
    """Orbax logs "Failed to json parse Metadata file" (with the file's content) whenever it lists a step
    whose _CHECKPOINT_METADATA is damaged, before the lab has said anything: the damage is reported in the
    lab's one line (the manifest's digest differs, or the step does not restore), so this echo is dropped."""

    def filter(self, record):
        return not str(record.msg).startswith("Failed to json parse Metadata file")


logging.getLogger("absl").addFilter(_DropMetadataParseErrors())


def _drop_closed_loop_echoes() -> None:
    """From now on, drop unraisable "Event loop is closed" errors; any other goes to the hook before.

    A restore that fails leaves sibling reads in flight; they finish after Orbax has closed the restore's
    event loop, and each one's callback then raises "Event loop is closed" where no one can catch it: one
    traceback through sys.unraisablehook each, dozens for one damaged checkpoint, at any moment after the
    failure (also after the restore has returned). So the filter stays for the rest of the process."""
    before = sys.unraisablehook
    if getattr(before, "_lab_drops_closed_loop", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            before(unraisable)

    hook._lab_drops_closed_loop = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _quiet_failed_reads():
    """Around every restore: if it fails (the failure itself is reported in one line), silence its echoes,
    asyncio's "Task exception was never retrieved" for the sibling reads and their late callbacks. The
    second filter is installed for the rest of the process on the first restore (`_drop_closed_loop_echoes`),
    since those callbacks come after the restore has returned."""
    _drop_closed_loop_echoes()
    log = logging.getLogger("asyncio")
    f = _DropOrphanedTaskErrors()
    log.addFilter(f)
    try:
        yield
    finally:
        # the orphaned tasks are logged when collected: collect them while filtered (on every restore, since
        # a failed one's traceback still holds them until its caller's handler ends)
        gc.collect()
        log.removeFilter(f)


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e` (itself, or one in its chain of causes), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _step_files(step_dir: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(step_dir)): p
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


class Checkpoints:
    """An Orbax `CheckpointManager` over `directory`, with manifests, fallback restore and clean failures."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():  # refused before anything trains
            raise CheckpointError(
                f"{self.directory} is not a directory, and checkpoints are written there: move it away, or "
                "pass --results DIR to write elsewhere"
            )
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=opts)
        self._unsealed: list[int] = []  # steps saved by this process whose manifest is not written yet

    # --- reading ------------------------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def damage(self, step: int) -> str | None:
        """Why `step`'s files differ from its manifest, or None (they match, or it has no manifest)."""
        step_dir = self.directory / str(step)
        try:
            want = json.loads((step_dir / MANIFEST).read_text(encoding="utf-8"))["files"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return f"its {MANIFEST} is unreadable"
        have = _step_files(step_dir)
        for rel, digest in want.items():
            if rel not in have:
                return f"{rel} is missing"
            if _sha256(have[rel]) != digest:
                return f"{rel} has changed since it was saved (sha256 differs)"
        return None

    def restore(self, step: int, abstract_state):
        """Restore `step` into the structure of `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
        try:
            with _quiet_failed_reads():
                return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds; each means "cannot"
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} cannot be restored into this config ({_first_line(e)}); "
                "pass --fresh to start over or --results DIR to write elsewhere"
            ) from None

    def restore_intact(self, abstract_state, below: int | None = None):
        """(step, state, passed_over) of the newest checkpoint that is intact and restores: `passed_over`
        lists (step, why) of the newer ones that did not. None if there are no checkpoints; a
        CheckpointError naming each step and why if none of them restores."""
        steps = [s for s in reversed(self.all_steps()) if below is None or s < below]
        if not steps:
            return None
        passed = []
        for step in steps:
            why = self.damage(step)
            if why is None:
                try:
                    with _quiet_failed_reads():
                        state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
                    return step, state, passed
                except Exception as e:  # noqa: BLE001 - Orbax and TensorStore raise many kinds
                    why = f"does not restore: {_first_line(e)}"
            passed.append((step, why))
        listed = "; ".join(f"step {s}: {w}" for s, w in passed)
        raise CheckpointError(
            f"no checkpoint in {self.directory} can be restored into this config ({listed}); they are "
            "damaged or from another config: pass --fresh to start over or --results DIR to write elsewhere"
        )

    def remove(self, step: int) -> None:
        """Delete checkpoint `step` (one found damaged), so that it can be saved again."""
        if is_writer():
            shutil.rmtree(self.directory / str(step), ignore_errors=True)
        self._mngr.reload()

    # --- writing ------------------------------------------------------------------------------------------
    def save(self, step: int, state) -> None:
        """Hand `state` to Orbax as checkpoint `step` (written in the background); the previous save is
        finished and sealed with its manifest first (Orbax waits for it before a new save anyway)."""
        self.finish()
        try:
            self._mngr.save(step, args=ocp.args.StandardSave(state))
        except Exception as e:  # noqa: BLE001 - only an OSError is reported as such; the rest re-raised
            self._failed(step, e)
        self._unsealed.append(step)

    def finish(self) -> None:
        """Wait for the background save, then write the manifest of each step this process saved."""
        try:
            self._mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            self._failed(self._unsealed[-1] if self._unsealed else None, e)
        kept = set(self._mngr.all_steps()) if is_writer() else set()  # process 0 seals
        for step in self._unsealed:
            if step in kept:  # not already removed by max_to_keep
                step_dir = self.directory / str(step)
                files = {rel: _sha256(p) for rel, p in _step_files(step_dir).items()}
                try:
                    atomic_write_json(step_dir / MANIFEST, {"files": files})
                except OSError as e:
                    self._failed(step, e)
        self._unsealed = []

    def _failed(self, step, e: BaseException):
        """A failed save: remove Orbax's temporary directories and say what happened in one line."""
        self._unsealed = []
        self.remove_temporary()
        os_err = _os_error(e)
        if os_err is None:
            raise e
        reason = os.strerror(os_err.errno) if os_err.errno else _first_line(os_err)
        hint = "free some disk space" if os_err.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the cause"
        done = [s for s in self._mngr.all_steps() if step is None or s < step]
        resume = f"resume from step {max(done)}" if done else "start over"
        raise CheckpointError(
            f"saving checkpoint {'' if step is None else f'step {step} '}to {self.directory} failed: {reason}"
            f" (errno {os_err.errno}); its temporary files were removed; {hint}, then rerun the same command to "
            f"{resume}"
        ) from None

    def remove_temporary(self) -> list[Path]:
        """Remove Orbax's temporary step directories (left by a save that failed or was killed)."""
        gone = []
        if self.directory.is_dir() and is_writer():
            for p in self.directory.iterdir():
                if TMP_MARK in p.name:
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p)
        return gone

    def close(self) -> None:
        """Finish and seal any save in flight, then close the manager (even if that fails)."""
        try:
            self.finish()
        finally:
            self._mngr.close()


def manager(directory: str | os.PathLike, max_to_keep: int = 2) -> Checkpoints:
    return Checkpoints(directory, max_to_keep)


def save(mngr: Checkpoints, step: int, state) -> None:
    mngr.save(step, state)


def restore(mngr: Checkpoints, step: int, abstract_state):
    """Restore `step` into the structure of `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
    return mngr.restore(step, abstract_state)


def passed_over_note(directory, passed, step: int, extra: str = "") -> str:
    """The one line that says newer checkpoints were damaged and which step is used instead."""
    listed = "; ".join(f"step {s}: {w}" for s, w in passed)
    return f"lab: warning: checkpoint(s) in {directory} damaged ({listed}); using step {step} instead{extra}"


def restore_latest(directory: str | os.PathLike, abstract_state):
    """(step, state) of the newest intact checkpoint in `directory`, for code that reads results; newer
    damaged ones are passed over with one line on stderr."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoints at {directory}; run the experiment first (lab run ...)")
    mngr = manager(directory)
    try:
        found = mngr.restore_intact(abstract_state)
        if found is None:
            raise CheckpointError(f"no finished checkpoint in {directory}; run the experiment first")
        step, state, passed = found
        if passed:
            print(passed_over_note(directory, passed, step), file=sys.stderr)
        return step, state
    finally:
        mngr.close()
