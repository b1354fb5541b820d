"""Training: optimizer, pure steps, vmapped+sharded sweeps, the driver loop, checkpoints, JSONL metrics."""

from lab.train.config import TrainConfig
from lab.train.loop import SweepResult, SweepSpec, train_sweep
from lab.train.state import TrainState, init_state
from lab.train.step import eval_step, train_step, train_steps
from lab.train.sweep import Member, SweepRunner, init_sweep, members_grid

__all__ = [
    "Member",
    "SweepResult",
    "SweepRunner",
    "SweepSpec",
    "TrainConfig",
    "TrainState",
    "eval_step",
    "init_state",
    "init_sweep",
    "members_grid",
    "train_step",
    "train_steps",
    "train_sweep",
]
