"""Process-level JAX set-up, done once before JAX initializes its backends.

* CPU host devices: XLA's CPU backend runs a vmapped sweep of small models as one program whose matmuls
  it parallelizes poorly; exposing the cores as several host devices (`jax_num_cpu_devices`) and sharding
  the sweep axis over them lets each core train its slice of the sweep (see lab.train.sweep).
* Several processes (hosts, or processes on one host): `jax.distributed.initialize` when `lab run` is given
  `--coordinator HOST:PORT --num-processes N --process-id I`, or when the environment describes the job
  (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a cluster JAX detects itself). Every
  process then sees the devices of all of them (one mesh, lab.train.mesh); on CPU the processes' collectives
  go over gloo. Only process 0 writes files (lab.fileio.set_writer); Orbax writes each process's shards.
"""

from __future__ import annotations

import os

import numpy as np

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


def init_jax(
    cpu_devices: int | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Configure JAX for this process; call before anything creates a JAX array. `coordinator`
    ("HOST:PORT"), `num_processes` and `process_id` join a multi-process job (else the environment may)."""
    import jax

    n = default_cpu_devices() if cpu_devices is None else cpu_devices
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass  # backends already initialized (e.g. inside a test session that configured them itself)
    global _distributed
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    job = process_args(coordinator, num_processes, process_id)  # the arguments, or JAX's variables
    if (explicit or any(os.environ.get(k) for k in _DISTRIBUTED_ENV)) and not _distributed:
        coordinator, num_processes, process_id = job
        # CPU devices of different processes talk over gloo (no effect on GPU/TPU backends).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(coordinator, num_processes, process_id)
        except ValueError as e:  # what JAX could not work out from the arguments and the environment
            from lab.errors import ConfigError

            raise ConfigError(
                f"jax.distributed.initialize: {e} (give --coordinator, --num-processes and --process-id, or "
                "set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID)"
            ) from None
        _distributed = True
        from lab.fileio import set_writer

        set_writer(jax.process_index() == 0)


FLAGS = ("--coordinator", "--num-processes", "--process-id")
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def process_args(coordinator=None, num_processes=None, process_id=None) -> tuple:
    """(coordinator, num_processes, process_id): the flags where any is given, else JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES and JAX_PROCESS_ID from the environment (JAX itself reads only the first; one left unset
    stays None, for JAX to work out on a cluster it detects), checked either way (one-line ConfigErrors)."""
    from lab.errors import ConfigError

    given = (coordinator, num_processes, process_id)
    if any(x is not None for x in given):
        check_process_args(*given)
        if any(x is None for x in given):
            raise ConfigError(
                "--coordinator, --num-processes and --process-id go together (or set JAX_COORDINATOR_ADDRESS, "
                "JAX_NUM_PROCESSES and JAX_PROCESS_ID)"
            )
        return given
    values = [os.environ.get(k) or None for k in ENV]
    for name, v in zip(ENV[1:], values[1:]):
        if v is not None and not v.isdigit():
            raise ConfigError(f"{name}={v!r} must be a whole number")
    if values[0] is None and any(values[1:]) and not os.environ.get("LAB_DISTRIBUTED"):
        raise ConfigError(  # else this would run as one process, unasked
            f"{' and '.join(n for n, v in zip(ENV[1:], values[1:]) if v)} set without {ENV[0]}: set it too, or "
            "LAB_DISTRIBUTED=1 for a cluster JAX detects"
        )
    job = (values[0], *(None if v is None else int(v) for v in values[1:]))
    check_process_args(*job, names=ENV)
    return job


def check_process_args(coordinator, num_processes, process_id, names=FLAGS) -> None:
    """One-line errors for a malformed coordinator address or process numbers (None: from the environment),
    naming them as `names` (the flags, or the environment variables)."""
    from lab.errors import ConfigError

    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{names[0]} {coordinator!r} must be HOST:PORT with a port in 1..65535")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"{names[1]} must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"{names[2]} must be in 0..{num_processes - 1}, got {process_id}")


def sync(name: str) -> None:
    """Wait until every process of a multi-process job reaches this point (no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's `flag`, on every process (so that all of them take the same branch)."""
    import jax

    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
