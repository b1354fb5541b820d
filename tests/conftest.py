"""Test session set-up: 8 host CPU devices (for the sharded-sweep tests) before JAX starts, files-only plots.

Every test uses tiny configs so the whole suite stays within minutes on 2 cores; JAX compiles once per
config, so tests share configs through module-scoped fixtures where they can.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# Must happen before any JAX array exists; 8 devices let the sweep tests shard a sweep axis for real.
jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

from lab.data.tasks import Sort  # noqa: E402
from lab.model import ModelConfig  # noqa: E402
from lab.train.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """(model config, train config, task): a sorting task small enough to compile in about a second."""
    task = Sort(n_items=4, n_symbols=6)
    cfg = ModelConfig(vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=1, d_model=16, n_heads=2)
    tcfg = TrainConfig(
        steps=20, batch_size=4, warmup_steps=2, log_every=5, eval_every=10, eval_batches=2, ckpt_every=10
    )
    return cfg, tcfg, task
