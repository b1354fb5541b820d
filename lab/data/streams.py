"""Next-token prediction where each member of a sweep trains on its own token stream.

A sweep vmaps one program over its members, and a task's batch cannot see which member it is for. So for
the "train" split `MemberStreams.sample` cuts a batch from every stream, stacked along a leading stream axis
(C, B, T), and the loss picks the member's stream by an index it reads from the member's hyperparameters
(lab.train.step.stream_loss: `Member.extra[0]`). Sampling C small batches of windows is a gather, negligible
beside the forward pass, and it lets data conditions of equal shape (clean, noisy, synthetic, mixed text;
the chains of model-collapse generations) train as one compiled program. Every other split is one shared
stream: all members are evaluated on the same windows of the same validation text.

data: {"train0": ..., "train<C-1>": token streams (any lengths), "val": the shared validation stream}
and optionally "train<c>_len": an int32 scalar, the number of valid tokens at the start of stream c (the
rest is padding). Streams padded to one shape with their lengths given keep the compiled program's input
shapes fixed while the data grows (model-collapse generations that accumulate their samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from lab.config import check
from lab.data.tasks import TextWindows


@dataclass(frozen=True)
class MemberStreams(TextWindows):
    n_streams: int = 1

    kind = "member_streams"

    def __post_init__(self):
        check(self.n_streams >= 1, f"n_streams must be >= 1, got {self.n_streams}")

    @staticmethod
    def stream_key(c: int) -> str:
        return f"train{c}"

    def sample(self, data, split, key, batch_size):
        if split != "train":
            return super().sample(data, split, key, batch_size)
        keys = jax.random.split(key, self.n_streams)
        parts = [self._windows(data, c, keys[c], batch_size) for c in range(self.n_streams)]
        return {k: jnp.stack([p[k] for p in parts]) for k in ("inputs", "targets", "mask")}  # (C, B, T)

    def _windows(self, data, c: int, key, batch_size: int) -> dict:
        tokens = jnp.asarray(data[self.stream_key(c)])
        n = data.get(f"{self.stream_key(c)}_len", tokens.shape[0])
        starts = jax.random.randint(key, (batch_size,), 0, n - self.seq_len)
        window = tokens[starts[:, None] + jnp.arange(self.seq_len + 1)[None, :]].astype(jnp.int32)
        mask = jnp.ones((batch_size, self.seq_len), bool)
        return {"inputs": window[:, :-1], "targets": window[:, 1:], "mask": mask}

    def check_data(self, data) -> None:
        want = [self.stream_key(c) for c in range(self.n_streams)]
        missing = [k for k in want if k not in data]
        check(not missing, f"MemberStreams: data lacks the streams {missing}")
        super().check_data({k: data[k] for k in [*want, "val"] if k in data})
        for k in want:
            n = int(data.get(f"{k}_len", len(data[k])))
            check(
                self.seq_len + 1 <= n <= len(data[k]),
                f"MemberStreams: {k} has {n} valid tokens; need seq_len + 1 = {self.seq_len + 1} .. {len(data[k])}",
            )
