"""Sweeps: N seeds and scalar hyperparameters trained as one compiled program.

The members' states are stacked along a leading "sweep" axis and trained by
``jax.jit(jax.vmap(train_steps))`` (as purejaxrl trains many agents). The sweep axis is placed on a
one-dimensional device mesh whose axis is named ``"sweep"``, so a pod trains its slice of the sweep on
each device; on a CPU the cores are exposed as host devices (lab.runtime) and each core trains its slice.

Strategies (``strategy=``):
  "vmap"   one device, one vmapped program;
  "shard"  the vmapped program with the sweep axis sharded over all devices (padded to a multiple of the
           device count by repeating the first member; padded results are discarded);
  "loop"   one member at a time, each a separately compiled call, for comparison;
  "auto"   on accelerators, "shard" when there are several devices and members; on CPU, "shard" only
           for small members (see CPU_SHARD_MAX_FLOPS) and modest padding, else "vmap".
The measured trade-offs are in results/benchmarks.md (scripts/bench_sweep.py).

A `mesh` (lab.train.mesh.MeshConfig) other than the default replaces the strategy with "mesh": the sweep
axis over `mesh.sweep` devices (padded like "shard"), each batch split over `data` x `fsdp`, and every weight
matrix with its optimizer state split over `fsdp`, on one named mesh of every device of every process.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lab.config import since
from lab.errors import ConfigError
from lab.model import ModelConfig
from lab.model.flops import train_flops_per_step
from lab.train import mesh as mesh_lib
from lab.train.config import TrainConfig
from lab.train.state import TrainState, init_state
from lab.train.step import eval_step, train_steps

STRATEGIES = ("auto", "vmap", "shard", "loop")


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its seed and its scalar hyperparameters."""

    seed: int
    lr: float
    init_scale: float = 1.0
    extra: tuple[float, ...] = ()  # experiment-defined hyperparameters, read by a custom forward function

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Member:
        """The member a `to_dict` (e.g. config.json's "members") describes."""
        return cls(
            int(d["seed"]), float(d["lr"]), float(d["init_scale"]), tuple(float(x) for x in d["extra"])
        )


def members_grid(seeds, lrs, init_scales=(1.0,), extras=((),)) -> list[Member]:
    """The product extras x init_scales x lrs x seeds, seeds varying fastest (extras slowest).

    `extras` lists tuples of experiment-defined hyperparameters, e.g. ((0.0,), (1.0,)) for two variants.
    """
    return [
        Member(int(s), float(lr), float(sc), tuple(float(x) for x in ex))
        for ex in extras
        for sc in init_scales
        for lr in lrs
        for s in seeds
    ]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_stacked(cfg: ModelConfig, tcfg: TrainConfig, seeds, lrs, scales, extra) -> TrainState:
    """init_state vmapped over members, jitted once per (configs, member count): sweeps of the same shapes
    (e.g. a chain of generations) reuse the compiled initialization, which on CPU can take longer to compile
    than the train step (the random number generation of every parameter)."""
    return jax.vmap(functools.partial(init_state, cfg, tcfg))(seeds, lrs, scales, extra)


def init_sweep(cfg: ModelConfig, tcfg: TrainConfig, members: list[Member], shardings=None) -> TrainState:
    """Stacked fresh states, one per member (leading axis = member), laid out with `shardings` if given
    (a pytree of shardings, e.g. SweepRunner.stored_shardings: created in place, never whole on one device)."""
    seeds = jnp.asarray([m.seed for m in members], jnp.int32)
    lrs = jnp.asarray([m.lr for m in members], jnp.float32)
    scales = jnp.asarray([m.init_scale for m in members], jnp.float32)
    if len({len(m.extra) for m in members}) > 1:
        raise ValueError("every member of a sweep needs the same number of extra hyperparameters")
    extra = jnp.asarray([m.extra or (0.0,) for m in members], jnp.float32).reshape(len(members), -1)
    if shardings is None:
        return _init_stacked(cfg, tcfg, seeds, lrs, scales, extra)
    f = jax.vmap(functools.partial(init_state, cfg, tcfg))
    # The members' values are constants of the program, so every process of a multi-process job builds the
    # same global state (each its own shards) without first putting host arrays on devices it cannot reach.
    host = [np.asarray(a) for a in (seeds, lrs, scales, extra)]
    return jax.jit(lambda: f(*host), out_shardings=shardings)()


# On CPU, sharding the sweep over host devices pays when one member's step is too small for XLA to spread
# over the cores by itself; past about this much work per member-step a single device's intra-op
# threads already use the cores, and sharding only adds padding and per-device overhead
# (measured: results/benchmarks.md, scripts/bench_sweep.py).
CPU_SHARD_MAX_FLOPS = 2e9
MAX_PADDING = 4 / 3  # shard only if padding to a multiple of the devices adds at most a third


def resolve(strategy: str, n_members: int, devices=None, flops_per_member_step: float | None = None):
    """(strategy, devices) actually used for `n_members` members."""
    devices = list(jax.devices() if devices is None else devices)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sweep strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
    if strategy == "auto":
        strategy = "vmap"
        if len(devices) > 1 and n_members > 1:
            used = min(len(devices), n_members)
            small = flops_per_member_step is None or flops_per_member_step <= CPU_SHARD_MAX_FLOPS
            cheap_pad = padded_size(n_members, used) / n_members <= MAX_PADDING
            if devices[0].platform != "cpu" or (small and cheap_pad):
                strategy = "shard"
    if strategy == "shard":
        return strategy, devices[: min(len(devices), n_members)]
    return strategy, devices[:1]


def padded_size(n_members: int, n_devices: int) -> int:
    return -(-n_members // n_devices) * n_devices


def pad(tree, n: int):
    """Pad the leading axis to n by repeating member 0 (so padded members are valid, finite runs)."""

    def one(x):
        extra = n - x.shape[0]
        if extra == 0:
            return x
        return jnp.concatenate([x, jnp.repeat(x[:1], extra, axis=0)], axis=0)

    return jax.tree_util.tree_map(one, tree)


def unpad(tree, n: int):
    return jax.tree_util.tree_map(lambda x: x[:n], tree)


@jax.jit
def _split_members(state):
    """The members of a stacked state as separate states, in one compiled call (slicing leaf by leaf costs a
    dispatch per leaf, which at small models is a measurable part of a step)."""
    n = jax.tree_util.tree_leaves(state)[0].shape[0]
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], state) for i in range(n)]


@jax.jit
def _stack_members(outs):
    """[(state, metrics) per member] -> (stacked state, stacked metrics), in one compiled call."""
    stack = lambda *xs: jnp.stack(xs)
    return (
        jax.tree_util.tree_map(stack, *[o[0] for o in outs]),
        jax.tree_util.tree_map(stack, *[o[1] for o in outs]),
    )


class SweepRunner:
    """Compiled train and eval calls for a sweep, for one (model, train, task) config and strategy.

    runner = SweepRunner(cfg, tcfg, task, n_members, strategy="auto")
    state = runner.place(init_sweep(...))         # pad + put on the mesh
    runner.compile_train(n, state, data)           # optional: compile ahead (else the first call does)
    runner.compile_eval(state, data)
    state, metrics = runner.train(state, data, n)  # n steps; metrics (n_members, n) per key
    evals = runner.evaluate(state, data)           # (n_members,) per key
    real = runner.take(state)                      # unpadded, for checkpoints
    """

    def __init__(
        self,
        cfg,
        tcfg,
        task,
        n_members: int,
        strategy: str = "auto",
        devices=None,
        forward=None,
        loss=None,
        mesh: mesh_lib.MeshConfig | None = None,
    ):
        self.cfg, self.tcfg, self.task, self.n = cfg, tcfg, task, n_members
        self._train_cache: dict[int, object] = {}
        self._eval_compiled = None
        self.compile_seconds = 0.0  # every program compiled so far, train and eval
        self.mesh = None  # the resolved MeshConfig in "mesh" mode
        kw = dict(cfg=cfg, tcfg=tcfg, task=task, forward=forward, loss=loss)
        if mesh is not None and not mesh.is_default:
            self._init_mesh(mesh, strategy, devices, kw)
            return
        work = train_flops_per_step(cfg, tcfg.batch_size, task.seq_len)
        self.strategy, self.devices = resolve(strategy, n_members, devices, work)
        self.n_padded = padded_size(n_members, len(self.devices)) if self.strategy == "shard" else n_members
        if self.strategy == "shard":
            mesh = jax.make_mesh(
                (len(self.devices),),
                ("sweep",),
                axis_types=(jax.sharding.AxisType.Auto,),
                devices=self.devices,
            )
            self.state_sharding = NamedSharding(mesh, P("sweep"))
            self.data_sharding = NamedSharding(mesh, P())
        else:
            self.state_sharding = self.data_sharding = jax.sharding.SingleDeviceSharding(self.devices[0])
        self._eval_one = lambda state, data: eval_step(state.params, data, extra=state.extra, **kw)
        self._train_one = lambda n: functools.partial(train_steps, n_steps=n, **kw)
        # Building the evaluator costs nothing until it is compiled (compile_eval, or the first evaluate).
        vmapped_eval = jax.vmap(self._eval_one, in_axes=(0, None))
        if self.strategy == "loop":
            self._eval = jax.jit(vmapped_eval)
        else:
            self._eval = jax.jit(
                vmapped_eval,
                in_shardings=(self.state_sharding, self.data_sharding),
                out_shardings=self.state_sharding,
            )

    def _init_mesh(self, mesh, strategy, devices, kw):
        """The "mesh" layout (lab.train.mesh): the programs are built once the state's shapes are known."""
        if strategy not in ("auto", "shard"):
            raise ConfigError(
                f"--strategy {strategy} cannot be combined with a mesh ({mesh.describe()}); the mesh decides "
                "where members go: use --strategy auto (the default)"
            )
        self.devices = list(jax.devices() if devices is None else devices)
        self.mesh = mesh_lib.resolve(mesh, len(self.devices))
        self.strategy = "mesh"
        self.n_padded = padded_size(self.n, self.mesh.sweep)
        self.jmesh = mesh_lib.make(self.mesh, self.devices)
        self.data_sharding = self.replicated = NamedSharding(self.jmesh, P())
        kw = dict(kw, shard_batch=mesh_lib.batch_constraint(self.jmesh))
        self._eval_one = lambda state, data: eval_step(state.params, data, extra=state.extra, **kw)
        self._train_one = lambda n: functools.partial(train_steps, n_steps=n, **kw)
        self.state_sharding = None  # per leaf; set by `place` from the state's shapes
        self._eval = None

    def stored_shardings(self, state):
        """Per-leaf shardings of the real (unpadded) members in "mesh" mode: members replicated over `sweep`
        (their count need not divide it), matrices split over `fsdp`. What checkpoints are saved from and
        restored into, and what `take` returns. None in the other modes."""
        if self.mesh is None:
            return None
        return mesh_lib.state_shardings(state, self.jmesh, self.mesh.fsdp, sweep_axis=False)

    def check_model(self, abstract_params, what: str = "") -> None:
        """In "mesh" mode, refuse a batch or weight shape the mesh cannot split (lab.train.mesh.check_model)."""
        if self.mesh is not None:
            mesh_lib.check_model(self.mesh, abstract_params, self.tcfg.batch_size, what)

    # -- placement -------------------------------------------------------------------------------------
    def place(self, state):
        """Pad a stacked (unpadded) state to the strategy's layout and put it on its devices."""
        if self.mesh is None:
            return jax.device_put(pad(state, self.n_padded), self.state_sharding)
        stored = self.stored_shardings(state)
        if any(
            getattr(x, "sharding", None) != s for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(stored))
        ):
            state = mesh_lib.put(state, stored)  # from the host (e.g. a checkpoint restored elsewhere)
        padded = jax.eval_shape(lambda s: pad(s, self.n_padded), state)
        self.state_sharding = mesh_lib.state_shardings(padded, self.jmesh, self.mesh.fsdp)
        self._stored = stored
        return jax.jit(lambda s: pad(s, self.n_padded), out_shardings=self.state_sharding)(state)

    def place_data(self, data: dict):
        if self.mesh is None:
            return jax.device_put(dict(data), self.data_sharding)
        # replicated; a value may be a tree (e.g. an on-policy task's frozen reference parameters)
        return mesh_lib.put(dict(data), jax.tree_util.tree_map(lambda _: self.data_sharding, dict(data)))

    def take(self, state):
        """The real members of a placed state (drops padding)."""
        if self.mesh is not None:
            return jax.jit(lambda s: unpad(s, self.n), out_shardings=self._stored)(state)
        return unpad(state, self.n) if self.n_padded != self.n else state

    # -- compiled calls ----------------------------------------------------------------------------------
    def compile_train(self, n_steps: int, state, data):
        """The compiled program for `n_steps` steps on `state`'s layout (compiled ahead of time once)."""
        if n_steps not in self._train_cache:
            t0 = time.perf_counter()
            if self.strategy == "loop":
                fn = jax.jit(self._train_one(n_steps), donate_argnums=0)
                one = jax.tree_util.tree_map(lambda x: x[0], state)
                compiled = fn.lower(one, data).compile()
            elif self.strategy == "mesh":  # metrics replicated: every process reads them all
                fn = jax.jit(
                    jax.vmap(self._train_one(n_steps), in_axes=(0, None), spmd_axis_name="sweep"),
                    in_shardings=(self.state_sharding, self.data_sharding),
                    out_shardings=(self.state_sharding, self.replicated),
                    donate_argnums=0,
                )
                compiled = fn.lower(state, data).compile()
            else:
                fn = jax.jit(
                    jax.vmap(self._train_one(n_steps), in_axes=(0, None)),
                    in_shardings=(self.state_sharding, self.data_sharding),
                    out_shardings=(self.state_sharding, self.state_sharding),
                    donate_argnums=0,
                )
                compiled = fn.lower(state, data).compile()
            self.compile_seconds += time.perf_counter() - t0
            self._train_cache[n_steps] = compiled
        return self._train_cache[n_steps]

    def train(self, state, data, n_steps: int):
        """Advance every member `n_steps` steps. Returns (state, metrics with arrays (n_padded, n_steps))."""
        fn = self.compile_train(n_steps, state, data)
        if self.strategy != "loop":
            return fn(state, data)
        outs = [fn(member, data) for member in _split_members(state)]
        return _stack_members(outs)

    def compile_eval(self, state, data):
        """The compiled evaluation of `state`'s layout (compiled ahead of time once)."""
        if self._eval_compiled is None:
            t0 = time.perf_counter()
            if self.strategy == "mesh":
                self._eval = jax.jit(
                    jax.vmap(self._eval_one, in_axes=(0, None), spmd_axis_name="sweep"),
                    in_shardings=(self.state_sharding, self.data_sharding),
                    out_shardings=self.replicated,
                )
            self._eval_compiled = self._eval.lower(state, data).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._eval_compiled

    def evaluate(self, state, data) -> dict:
        return self.compile_eval(state, data)(state, data)


def fresh_seeds(first: int):
    """The `first_seed` field of an experiment config that publishes from seeds `first`.. because a setting
    was chosen on seeds 0.. (DESIGN convention 15). A run recorded before the field existed trained seeds
    0.., and reads back with first_seed 0 (lab.config.since)."""
    return since(first, absent=0)


def seed_members(seeds: int, tcfg: TrainConfig, extras=((),), first: int = 0) -> list[Member]:
    """Seeds first..first+seeds-1 of one training recipe (its peak lr and init scale), for each of `extras`:
    the members of an experiment that repeats one setting over seeds (`members_grid` with one lr and scale).
    `first` > 0 gives fresh seeds, to test a choice made on seeds 0.. (DESIGN convention 15)."""
    return members_grid(range(first, first + seeds), [tcfg.lr], [tcfg.init_scale], extras)
