"""Test session set-up: 8 host CPU devices (for the sharded-sweep tests) before JAX starts, files-only plots.

Every test uses tiny configs so the whole suite stays within minutes on 2 cores; JAX compiles once per
config, so tests share configs through module-scoped fixtures where they can.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# Must happen before any JAX array exists; 8 devices let the sweep tests shard a sweep axis for real.
jax.config.update("jax_num_cpu_devices", 8)
