"""One model across many devices: the `mesh` config section and the shardings it implies.

A sweep's stacked train states (leading axis: members) are laid out on a named device mesh with three axes:

    sweep   members of the sweep (seeds, hyperparameters): each device group trains its slice of them
    data    the batch: each device computes the gradient of its slice of every batch (data parallel)
    fsdp    the batch too, and every weight matrix with its gradients and AdamW moments (ZeRO-3 / FSDP,
            Rajbhandari et al. 2020): each device holds 1/fsdp of each matrix, and XLA gathers a matrix
            for the matmuls that need it and reduce-scatters its gradient

This is JAX's own SPMD machinery: a `jax.make_mesh`, a `NamedSharding` per leaf given to `jax.jit` as in
and out shardings, and one `with_sharding_constraint` on the batch; XLA's partitioner inserts every
collective. Nothing here knows about a particular model: a leaf is sharded by its shape alone (the largest
axis that `fsdp` divides, for matrices; vectors and scalars are replicated, a few KB).

The default `MeshConfig()` (data = fsdp = 1, sweep unset) is the sweep strategies of lab.train.sweep,
unchanged. Setting any axis (`--set mesh.data=4 --set mesh.fsdp=2`) asks for a mesh of exactly
sweep x data x fsdp devices; `sweep` defaults to the devices left over. Several processes
(`jax.distributed`, lab.runtime) see one mesh over all their devices; the code is the same.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lab.config import check
from lab.errors import ConfigError

AXES = ("sweep", "data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both: in FSDP every device computes its own slice


@dataclass(frozen=True)
class MeshConfig:
    """Devices per mesh axis (`--set mesh.data=4`). All 1 with sweep unset: the sweep strategies decide."""

    sweep: int | None = None  # None: the devices left over by data x fsdp (or, with both 1, the strategy's)
    data: int = 1
    fsdp: int = 1

    def __post_init__(self):
        for name in ("data", "fsdp"):
            check(getattr(self, name) >= 1, f"mesh.{name} must be >= 1, got {getattr(self, name)}")
        check(self.sweep is None or self.sweep >= 1, f"mesh.sweep must be >= 1 (or none), got {self.sweep}")

    @property
    def is_default(self) -> bool:
        return self.sweep is None and self.data == 1 and self.fsdp == 1

    @property
    def batch_ways(self) -> int:
        """How many slices each batch is cut into (over `data` and `fsdp`)."""
        return self.data * self.fsdp

    def replace(self, **kw) -> MeshConfig:
        return dataclasses.replace(self, **kw)

    def describe(self) -> str:
        return f"sweep={self.sweep} x data={self.data} x fsdp={self.fsdp}"


def resolve(mesh: MeshConfig, n_devices: int) -> MeshConfig:
    """`mesh` with `sweep` filled in, or a ConfigError if sweep x data x fsdp cannot equal `n_devices`."""
    model = mesh.data * mesh.fsdp
    sweep = mesh.sweep if mesh.sweep is not None else max(1, n_devices // model)
    if sweep * model != n_devices:
        raise ConfigError(
            f"mesh sweep x data x fsdp = {sweep} x {mesh.data} x {mesh.fsdp} = {sweep * model} devices, but "
            f"there are {n_devices} (jax.devices()); the product must equal the device count (on CPU, "
            "LAB_CPU_DEVICES=N sets how many host devices a process has)"
        )
    return mesh.replace(sweep=sweep)


def make(mesh: MeshConfig, devices=None) -> jax.sharding.Mesh:
    """The named mesh of a resolved `mesh` over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    return jax.make_mesh((mesh.sweep, mesh.data, mesh.fsdp), AXES, axis_types=auto, devices=devices)


def fsdp_axis(shape: tuple[int, ...], fsdp: int) -> int | None:
    """The axis of a per-member leaf of `shape` that `fsdp` shards: the largest one `fsdp` divides, for a
    matrix (2+ axes); None for vectors and scalars (replicated) or when fsdp is 1."""
    if fsdp == 1 or len(shape) < 2:
        return None
    fits = [i for i, n in enumerate(shape) if n % fsdp == 0]
    return max(fits, key=lambda i: (shape[i], -i)) if fits else None


def leaf_spec(shape: tuple[int, ...], fsdp: int, sweep_axis: bool = True) -> P:
    """The PartitionSpec of a stacked leaf (leading axis: members) of full `shape`: members over `sweep`
    (or replicated, with sweep_axis=False) and, for a matrix, its `fsdp_axis` over `fsdp`."""
    spec = [None] * len(shape)
    if sweep_axis and len(shape) >= 1:
        spec[0] = "sweep"
    i = fsdp_axis(tuple(shape[1:]), fsdp)
    if i is not None:
        spec[i + 1] = "fsdp"
    return P(*spec)


def state_shardings(abstract_state, mesh: jax.sharding.Mesh, fsdp: int, sweep_axis: bool = True):
    """A NamedSharding per leaf of a stacked train state (or any stacked pytree) of `abstract_state`'s shapes."""
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), fsdp, sweep_axis)), abstract_state
    )


def batch_constraint(mesh: jax.sharding.Mesh):
    """`f(batch) -> batch` with every array's leading (example) axis split over `data` and `fsdp`; applied
    inside the vmapped step, where vmap's `spmd_axis_name` adds the `sweep` axis in front."""

    def one(x):
        if x.ndim == 0:
            return x
        return jax.lax.with_sharding_constraint(
            x, NamedSharding(mesh, P(BATCH_AXES, *([None] * (x.ndim - 1))))
        )

    def constrain(batch):
        return jax.tree_util.tree_map(one, batch)

    return constrain


def check_model(mesh: MeshConfig, abstract_params, batch_size: int, what: str = "") -> None:
    """Refuse, in one line, a batch that `data` x `fsdp` does not divide or a weight matrix with no axis
    that `fsdp` divides (abstract_params: one member's parameter shapes, e.g. from jax.eval_shape)."""
    who = f"{what}: " if what else ""
    if batch_size % mesh.batch_ways:
        raise ConfigError(
            f"{who}train.batch_size={batch_size} is not divisible by mesh.data x mesh.fsdp = {mesh.data} x "
            f"{mesh.fsdp}: each batch is split over both axes; use a batch size that is a multiple of "
            f"{mesh.batch_ways}"
        )
    if mesh.fsdp == 1:
        return
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
        shape = tuple(leaf.shape)
        if len(shape) >= 2 and fsdp_axis(shape, mesh.fsdp) is None:
            raise ConfigError(
                f"{who}mesh.fsdp={mesh.fsdp} divides no axis of the weight {jax.tree_util.keystr(path)} of shape "
                f"{shape}; choose an fsdp that divides model.d_model (and the vocabulary or MLP width)"
            )


def device_bytes(tree) -> dict[str, int]:
    """{"total": bytes of `tree`'s arrays, "per_device": the most any one device holds}: read from each
    array's sharding (its shard shape), not from memory statistics."""
    per: dict = {}
    total = 0
    for x in jax.tree_util.tree_leaves(tree):
        total += x.size * x.dtype.itemsize
        shard = math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
        for d in x.sharding.device_set:
            per[d] = per.get(d, 0) + shard
    return {"total": int(total), "per_device": int(max(per.values())) if per else 0}


def put(tree, shardings):
    """Host values of `tree` placed with `shardings`, in one process or several: each process supplies the
    shards its own devices hold (every process must hold the same values)."""

    def one(x, s):
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, s, lambda idx: host[idx])

    return jax.tree_util.tree_map(one, tree, shardings)


def check_config(mesh: MeshConfig, exp_cfg, what: str = "") -> None:
    """Refuse, before anything is written, a mesh that this job's devices or an experiment's config cannot
    take: the device count (`resolve`), then every model config in `exp_cfg` at its train.batch_size
    (`check_model` on its parameter shapes; a sweep checks its own final shapes again when it starts)."""
    if mesh.is_default:
        return
    from lab.model import ModelConfig, init
    from lab.train.config import TrainConfig
    from lab.train.memory import configs_of

    resolve(mesh, len(jax.devices()))
    train = next(configs_of(exp_cfg, TrainConfig), TrainConfig())
    for model in configs_of(exp_cfg, ModelConfig):
        params = jax.eval_shape(lambda m=model: init(m, jax.random.key(0)))
        check_model(mesh, params, train.batch_size, what)
