"""The training config: a frozen dataclass, hashable, so train steps can take it as a static argument."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

from lab.config import check, check_finite

# The learning-rate schedules: the keys of lab.train.optimizer.SCHEDULES (a test keeps the two in sync).
Schedule = Literal["cosine", "linear", "wsd"]


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warmup, a decay schedule and global-norm gradient clipping.

    Defaults follow nanoGPT's shakespeare_char recipe (lr 1e-3, beta2 0.99, warmup 100, cosine decay to
    min lr = lr/10, weight decay 0.1 on matrices, clip 1.0).

    `schedule` (lab.train.optimizer.SCHEDULES) shapes the learning rate after warmup:
      cosine  nanoGPT's: half a cosine from the peak down to lr * min_lr_ratio at the last step
      linear  a straight line from the peak down to lr * min_lr_ratio at the last step
      wsd     warmup-stable-decay (Hu et al. 2024; Hägele et al. 2024): the peak held until the last
              `decay_fraction` of the steps, then a straight line down to lr * min_lr_ratio
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3  # peak learning rate (a sweep can give each member its own)
    warmup_steps: int = 100
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio at the last step
    decay_fraction: float = 0.2  # wsd only: the final fraction of the steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0  # global-norm clipping threshold; 0 turns clipping off
    init_scale: float = 1.0  # multiplies every initial weight matrix (a sweep can vary it)
    log_every: int = 10  # steps per compiled call (lax.scan); one metrics row per member per call
    eval_every: int = 100  # validation loss every this many steps (a multiple of log_every)
    eval_batches: int = 8
    ckpt_every: int = 500  # checkpoint every this many steps (a multiple of log_every), and at the end

    def __post_init__(self):
        check_finite(self, "train.")
        for name in ("steps", "batch_size", "log_every", "eval_every", "eval_batches", "ckpt_every"):
            check(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        check(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(
            self.schedule in typing.get_args(Schedule),
            f"train.schedule must be one of {', '.join(map(repr, typing.get_args(Schedule)))}, "
            f"got {self.schedule!r}",
        )
        check(
            0 < self.decay_fraction <= 1, f"train.decay_fraction must be in (0, 1], got {self.decay_fraction}"
        )
        check(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)")
        check(self.eps > 0, f"train.eps must be > 0, got {self.eps}")
        check(self.grad_clip >= 0, f"train.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        check(self.init_scale > 0, f"train.init_scale must be > 0, got {self.init_scale}")
        for name in ("eval_every", "ckpt_every"):
            check(
                getattr(self, name) % self.log_every == 0,
                f"train.{name} ({getattr(self, name)}) must be a multiple of train.log_every ({self.log_every})",
            )

    def replace(self, **kw) -> TrainConfig:
        return dataclasses.replace(self, **kw)


# Named training sizes, shared by the experiments' presets (each picks its own number of steps):
#   smoke  a few compiled calls; what the tests run
#   gpu    one accelerator: bigger batches, rarer logging, evaluation and checkpoints
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "smoke": TrainConfig(
        steps=20, batch_size=8, warmup_steps=2, log_every=10, eval_every=10, eval_batches=2, ckpt_every=10
    ),
    "gpu": TrainConfig(
        steps=3000,
        batch_size=64,
        warmup_steps=200,
        log_every=50,
        eval_every=250,
        eval_batches=16,
        ckpt_every=1000,
    ),
}
