"""One process of a multi-process training job, for tests/train/test_mesh.py (not a test itself).

    python tests/train/mesh_worker.py RUN_DIR COORDINATOR NUM_PROCESSES PROCESS_ID DEVICES_PER_PROCESS

With COORDINATOR "env" the job is read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID
(lab.runtime.process_args) instead of being passed in.

Trains `spec()` (the tiny sweep the test also trains in one process) with `MESH` over every device of every
process, through the one driver; process 0 writes metrics.jsonl, every process writes its checkpoint shards.
"""

import sys

from lab.data.tasks import Sort
from lab.model import ModelConfig
from lab.train import SweepSpec, TrainConfig, members_grid
from lab.train.mesh import MeshConfig

MESH = MeshConfig(data=2, fsdp=4)


def spec() -> SweepSpec:
    task = Sort(n_items=4, n_symbols=6)
    cfg = ModelConfig(vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=1, d_model=16, n_heads=2)
    tcfg = TrainConfig(
        steps=20, batch_size=8, warmup_steps=2, log_every=5, eval_every=10, eval_batches=2, ckpt_every=10
    )
    return SweepSpec(cfg, tcfg, task, members_grid([0], [3e-3]))


def main(run_dir, coordinator, num_processes, process_id, devices):
    from lab.runtime import init_jax

    if coordinator == "env":
        init_jax(int(devices))
    else:
        init_jax(int(devices), coordinator, int(num_processes), int(process_id))
    import jax

    from lab.train import train_sweep

    assert jax.process_count() == int(num_processes) and len(jax.devices()) == int(num_processes) * int(
        devices
    )
    train_sweep(run_dir, spec(), mesh=MESH, progress=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
