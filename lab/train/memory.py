"""Will a training run fit in memory? An estimate made before anything is written or compiled.

A model too large for the machine would otherwise fail deep in XLA (a native abort, not an error), after
the run's files were written. `check_fits` refuses it in one line that names the estimate.

The estimate, for one member (a sweep of M vmapped members needs M times as much):
  parameters   P float32 values from `jax.eval_shape` of the initialization (nothing is allocated), held
               four times during a step: the parameters, their gradients and AdamW's two moments (16 P bytes)
  activations  what the backward pass keeps, in float32, per block: about 16 B·T·d + 2 B·T·f values for the
               projections, norms and MLP (d = model.d_model, f = the MLP width) and 2 B·H·T² for the
               attention scores and probabilities; plus 3 B·T·V for the logits, their softmax and gradient
               (Korthikanti et al. 2022, "Reducing activation recomputation", Sec. 4, counted in float32)
The rule: refuse when the estimate exceeds the memory available, which is the device's memory limit on an
accelerator (one member must fit on one device) and the host's available RAM (MemAvailable) on CPU.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from lab.errors import ConfigError
from lab.model import ModelConfig
from lab.train.config import TrainConfig

GiB = 1 << 30


def param_count(cfg: ModelConfig) -> int:
    """Parameters of one model of `cfg`, from the shapes of its initialization (nothing allocated)."""
    from lab.model import init

    shapes = jax.eval_shape(lambda: init(cfg, jax.random.key(0)))
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))


def estimate_bytes(
    cfg: ModelConfig, batch_size: int, seq_len: int, members: int = 1, params: int | None = None, div=(1, 1)
) -> dict:
    """{"params", "state", "activations", "total"}: bytes to train `members` models of `cfg` on batches of
    `batch_size` x `seq_len` tokens (see the module docstring for what is counted); `params` in place of
    `param_count(cfg)` if given. div = (fsdp, data x fsdp): the state and activations per device of a mesh."""
    p = param_count(cfg) if params is None else params
    b, t, d, f = batch_size, seq_len, cfg.d_model, cfg.ff_dim
    per_block = 16 * b * t * d + 2 * b * t * f + 2 * b * cfg.n_heads * t * t
    acts = 4 * (cfg.n_layers * per_block + 3 * b * t * cfg.vocab_size)
    state, acts = 16 * p // div[0], acts // div[1]
    return {"params": p, "state": state, "activations": acts, "total": members * (state + acts)}


def available_bytes() -> tuple[int | None, str]:
    """(bytes a run may use, what they are): the first device's memory limit on an accelerator, the host's
    available RAM on CPU; None where neither is known."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]), f"{dev.device_kind} memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host RAM, MemAvailable"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free host RAM"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def _gib(n: float) -> str:
    return f"{n / GiB:.3g} GiB"


def check_fits(
    cfg: ModelConfig, batch_size: int, seq_len: int, members: int = 1, what: str = "", shards=(1, 1)
) -> dict:
    """The estimate (`estimate_bytes`), or a ConfigError naming it if it exceeds `available_bytes()`.

    shards: (fsdp, data x fsdp) of a mesh (lab.train.mesh): on accelerators each device holds 1/fsdp of the
    parameters and optimizer state and 1/(data x fsdp) of the activations, so the per-device estimate is
    divided accordingly; CPU host devices share one RAM, so there the total is what must fit."""
    have, kind = available_bytes()
    div = shards if jax.devices()[0].platform != "cpu" else (1, 1)
    # First without tracing the initialization (which takes minutes for 100,000 blocks): every block holds at
    # least its query and output projections, 2 d_model^2 parameters. Too large already is refused at once.
    est = estimate_bytes(cfg, batch_size, seq_len, members, params=2 * cfg.n_layers * cfg.d_model**2, div=div)
    if have is None or est["total"] <= have:
        est = estimate_bytes(cfg, batch_size, seq_len, members, div=div)
    if have is not None and est["total"] > have:
        who = f"{what}: " if what else ""
        raise ConfigError(
            f"{who}training {members} model{'s' if members != 1 else ''} of {est['params']:,} parameters "
            f"(n_layers={cfg.n_layers}, d_model={cfg.d_model}, vocab_size={cfg.vocab_size}) at batch "
            f"{batch_size} x {seq_len} tokens needs about {_gib(est['total'])} (parameters, gradients and "
            f"AdamW state {_gib(members * est['state'])}, activations {_gib(members * est['activations'])}) "
            f"but only {_gib(have)} is available ({kind}); lower model.d_model, model.n_layers, model.max_len or "
            "train.batch_size"
        )
    return est


def configs_of(cfg, kind):
    """Every instance of `kind` in the (nested) dataclass config `cfg`, `cfg` itself included."""
    if isinstance(cfg, kind):
        yield cfg
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            yield from configs_of(getattr(cfg, f.name), kind)


def check_config_fits(exp_cfg, what: str = "") -> None:
    """`check_fits` for each model config in an experiment's config, trained one member at a time at the
    experiment's train.batch_size on windows of model.max_len tokens: what any of its runs needs at least
    (a sweep that vmaps its members needs more; `train_sweep` checks that with the sweep's own sizes)."""
    train = next(configs_of(exp_cfg, TrainConfig), TrainConfig())
    for model in configs_of(exp_cfg, ModelConfig):
        check_fits(model, train.batch_size, model.max_len, 1, what)
