"""Process-level JAX set-up, done once before JAX initializes its backends.

* CPU host devices: XLA's CPU backend runs a vmapped sweep of small models as one program whose matmuls
  it parallelizes poorly; exposing the cores as several host devices (`jax_num_cpu_devices`) and sharding
  the sweep axis over them lets each core train its slice of the sweep (see lab.train.sweep).
* Multi-host: `jax.distributed.initialize()` when the environment describes a multi-process job.
"""

from __future__ import annotations

import os

_distributed = False
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "LAB_DISTRIBUTED")


def default_cpu_devices() -> int:
    env = os.environ.get("LAB_CPU_DEVICES")
    if env:
        if not env.isdigit() or int(env) < 1:
            from lab.errors import ConfigError

            raise ConfigError(f"LAB_CPU_DEVICES={env!r} must be a whole number >= 1")
        return int(env)
    return min(available_cores(), 8)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def init_jax(cpu_devices: int | None = None) -> None:
    """Configure JAX for this process; call before anything creates a JAX array."""
    import jax

    n = default_cpu_devices() if cpu_devices is None else cpu_devices
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # backends already initialized (e.g. inside a test session that configured them itself)
    global _distributed
    if any(os.environ.get(k) for k in _DISTRIBUTED_ENV) and not _distributed:
        jax.distributed.initialize()  # reads coordinator address, process count and id from the environment
        _distributed = True
