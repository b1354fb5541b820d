"""Test session set-up: 8 host CPU devices (for the sharded-sweep tests) before JAX starts, files-only plots,
and cheaper compilation.

Every test uses tiny configs, so most of the suite's time is XLA compiling programs that then run for
milliseconds. XLA's CPU backend therefore compiles with LLVM's optimizations off
(`--xla_backend_optimization_level=0`): code generation gets about three times faster and the programs
slower, which programs this small do not notice. XLA's own graph passes (fusion, layouts, sharding) still
run, so the tests exercise the programs users run; `lab run` keeps the default. The flag goes into the
environment before JAX starts, so subprocesses that tests start get it too.

`./lab.sh test` runs the suite on several processes (pytest-xdist; lab.cli.run_tests), which is why
fixtures that train share work only within one process (see tests/experiments/conftest.py).
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

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
