"""The train state: one model's parameters, optimizer state and its own hyperparameters, as one pytree.

Everything a member of a sweep differs in (seed, peak learning rate, initial scale, and `extra`
hyperparameters that an experiment's own forward function reads) lives *inside* the state as arrays, so
a sweep is just this pytree with a leading axis and `jax.vmap` over it.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from lab.model import ModelConfig, init
from lab.train.config import TrainConfig
from lab.train.optimizer import make_optimizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 (): optimizer steps taken (all members of a sweep advance together)
    params: dict
    opt_state: tuple
    lr: jax.Array  # float32 (): this member's peak learning rate
    data_key: jax.Array  # uint32 (2,): raw PRNG key; the batch at step t uses fold_in(data_key, t)
    diverged_at: jax.Array  # int32 (): the step whose loss or gradient was not finite, -1 if none
    extra: jax.Array  # float32 (k,): experiment-defined hyperparameters read by a custom `forward`


def member_keys(seed):
    """(init key, data key) for a seed: the seed decides both the initialization and the batch order."""
    root = jax.random.PRNGKey(seed)
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)


def init_state(cfg: ModelConfig, tcfg: TrainConfig, seed, lr, init_scale, extra=()) -> TrainState:
    """A fresh state. `seed`, `lr`, `init_scale` and `extra` may be traced (they are vmapped in a sweep)."""
    init_key, data_key = member_keys(seed)
    params = init(cfg, init_key)
    # Scale matrices only; norm gains stay 1 so that init_scale changes the weights, not the norms.
    params = jax.tree_util.tree_map(lambda p: p * init_scale if p.ndim >= 2 else p, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=make_optimizer(tcfg).init(params),
        lr=jnp.asarray(lr, jnp.float32),
        data_key=data_key,
        diverged_at=jnp.full((), -1, jnp.int32),
        # Orbax cannot save zero-size arrays, so "no extra hyperparameters" is stored as one zero.
        extra=jnp.asarray(extra if len(extra) else (0.0,), jnp.float32).reshape(-1),
    )
