"""Training: optimizer, pure steps, vmapped+sharded sweeps, the driver loop, checkpoints, JSONL metrics."""

from lab.train.config import TrainConfig
from lab.train.loop import SweepResult, SweepSpec, sweep_params, train_sweep, train_sweeps
from lab.train.state import TrainState, init_state
from lab.train.step import eval_step, train_step, train_steps
from lab.train.sweep import Member, SweepRunner, init_sweep, members_grid, seed_members

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
    "seed_members",
    "sweep_params",
    "train_step",
    "train_steps",
    "train_sweep",
    "train_sweeps",
]
