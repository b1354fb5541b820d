"""Orbax checkpoints of a train state (or a sweep's stacked states).

Checkpoints hold only the real members of a sweep, without the padding a sharded layout may add, so
they do not depend on how many devices trained them. Restoring is against an abstract target (shapes
and dtypes from `jax.eval_shape`), so a checkpoint from a different model fails loudly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orbax.checkpoint as ocp

from lab.errors import CheckpointError

# Orbax logs every save at INFO level; the progress bar says enough.
logging.getLogger("absl").setLevel(logging.WARNING)


def manager(directory: str | os.PathLike, max_to_keep: int = 2) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=opts)


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
    mngr.save(step, args=ocp.args.StandardSave(state))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    """Restore `step` into the structure of `abstract_state` (a pytree of jax.ShapeDtypeStruct)."""
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {mngr.directory}/{step} cannot be restored into this config ({first}); "
            "pass --fresh to start over or --results DIR to write elsewhere"
        ) from None


def restore_latest(directory: str | os.PathLike, abstract_state):
    """(step, state) of the newest checkpoint in `directory`, for analysis code that reads results."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoints at {directory}; run the experiment first (lab run ...)")
    mngr = manager(directory)
    try:
        step = mngr.latest_step()
        if step is None:
            raise CheckpointError(f"no finished checkpoint in {directory}; run the experiment first")
        return step, restore(mngr, step, abstract_state)
    finally:
        mngr.close()
