"""Pure train and eval steps for one model. Sweeps vmap these (lab.train.sweep); nothing here knows
about devices, files or experiments.

    state, metrics = train_step(state, data, cfg=..., tcfg=..., task=...)

`metrics` is a flat dict of scalars. A non-finite loss or gradient norm marks the state diverged at
that step; from then on its parameters and optimizer state are frozen and its reported loss is NaN,
while the other members of a sweep go on training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lab import ops
from lab.model import ModelConfig, apply
from lab.model.transformer import apply_with_aux, moe_aux_loss
from lab.train.config import TrainConfig
from lab.train.optimizer import apply_updates, make_optimizer, unit_schedule
from lab.train.state import TrainState

# Validation batches come from this fixed seed, so every member and every evaluation sees the same windows.
# (A seed, not a key: creating a key at import time would start JAX's backends before lab.runtime can
# configure them.)
EVAL_SEED = 20_240_917
SHUFFLE_STREAM = 0x5EED  # on-policy steps: the minibatch shuffles' key is fold_in(step key, SHUFFLE_STREAM)


def default_forward(cfg: ModelConfig, params, batch, extra):
    """The model's logits for a batch; `extra` (per-member hyperparameters) is unused."""
    return apply(cfg, params, batch["inputs"], batch.get("prefix_len"))


def loss_fn(params, cfg: ModelConfig, batch, extra=None, forward=None):
    if cfg.mlp == "moe" and forward is None:
        return moe_loss_fn(params, cfg, batch, extra)
    logits = (forward or default_forward)(cfg, params, batch, extra)
    loss, _ = ops.cross_entropy(logits, batch["targets"], batch["mask"])
    return loss, logits


def moe_loss_fn(params, cfg: ModelConfig, batch, extra=None, forward=None):
    """A mixture-of-experts model's loss: the next-token cross entropy in value, cross entropy plus the
    routers' auxiliary losses (lab.model.transformer.moe_aux_loss) in gradient. aux - stop_gradient(aux) is
    exactly 0 but carries aux's gradient, so train and val losses stay cross entropies, comparable with a
    dense model's, while the balance and z-losses still train the routers."""
    logits, moe = apply_with_aux(cfg, params, batch["inputs"], batch.get("prefix_len"))
    loss, _ = ops.cross_entropy(logits, batch["targets"], batch["mask"])
    aux = moe_aux_loss(cfg, moe)
    return loss + (aux - jax.lax.stop_gradient(aux)), logits


def moe_eval(params, batch, cfg: ModelConfig):
    """(cross entropy, logits, routing statistics) of a mixture-of-experts model on one batch, from one
    forward pass. The statistics are flat scalars named by block index l and expert e: moe_share_L<l>_E<e>
    (fraction of routing choices), moe_dropped_L<l>, moe_entropy_L<l> (nats), moe_balance_L<l> (Switch's
    loss, unscaled), moe_z_L<l> (ST-MoE's, unscaled)."""
    logits, moe = apply_with_aux(cfg, params, batch["inputs"], batch.get("prefix_len"))
    loss, _ = ops.cross_entropy(logits, batch["targets"], batch["mask"])
    out = {}
    for i, layer in enumerate(cfg.moe_layers):
        for e in range(cfg.moe_experts):
            out[f"moe_share_L{layer}_E{e}"] = moe["share"][i, e]
        for key, name in (("dropped", "dropped"), ("entropy", "entropy"), ("balance_loss", "balance")):
            out[f"moe_{name}_L{layer}"] = moe[key][i]
        out[f"moe_z_L{layer}"] = moe["z_loss"][i]
    return loss, logits, out


def train_step(
    state: TrainState,
    data,
    *,
    cfg: ModelConfig,
    tcfg: TrainConfig,
    task,
    forward=None,
    loss=None,
    shard_batch=None,
):
    """One AdamW step on the batch that (data_key, step) selects.

    `forward(cfg, params, batch, extra) -> logits` replaces the plain model call when an experiment
    trains something other than `apply(cfg, params, tokens)`, e.g. a reparametrized model whose variant
    is the per-member hyperparameter `state.extra` (so variants of equal shape share one program).
    `loss(params, cfg, batch, extra, forward) -> (scalar loss, logits)` replaces the next-token cross
    entropy (`loss_fn`). Both must be module-level functions (hashable: they are static arguments).
    `shard_batch(batch) -> batch` lays the sampled batch out over devices (lab.train.mesh: a sharding
    constraint, no change to the values); None leaves the layout to XLA.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state.data_key), state.step)
    if getattr(task, "on_policy", False):
        return _on_policy_step(
            state,
            data,
            key,
            cfg=cfg,
            tcfg=tcfg,
            task=task,
            forward=forward,
            loss=loss,
            shard_batch=shard_batch,
        )
    batch = task.sample(data, "train", key, tcfg.batch_size)
    if shard_batch is not None:
        batch = shard_batch(batch)
    (value, _), grads = jax.value_and_grad(loss or loss_fn, has_aux=True)(
        state.params, cfg, batch, state.extra, forward
    )
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = make_optimizer(tcfg).update(grads, state.opt_state, state.params)
    params = apply_updates(state.params, updates, state.lr)

    alive, diverged_at, new_state = _advance(
        state, params, opt_state, jnp.isfinite(value) & jnp.isfinite(grad_norm)
    )
    metrics = {
        "loss": jnp.where(alive, value, jnp.nan),  # the non-finite loss itself at the divergence step
        "grad_norm": jnp.where(alive, grad_norm, jnp.nan),
        "lr": state.lr * unit_schedule(tcfg)(state.step),
        "diverged_at": diverged_at,
    }
    return new_state, metrics


def _advance(state: TrainState, params, opt_state, finite):
    """(alive, diverged_at, next state): the updated parameters and optimizer state are kept only if the
    step was `finite` and the member had not diverged before; otherwise the member stays frozen and
    `diverged_at` records the first non-finite step."""
    alive = state.diverged_at < 0
    keep_new = finite & alive
    pick = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(keep_new, n, o), new, old)
    diverged_at = jnp.where(alive & ~finite, state.step, state.diverged_at)
    new_state = state.replace(
        step=state.step + 1,
        params=pick(params, state.params),
        opt_state=pick(opt_state, state.opt_state),
        diverged_at=diverged_at,
    )
    return alive, diverged_at, new_state


def _on_policy_step(
    state: TrainState, data, key, *, cfg, tcfg, task, forward=None, loss=None, shard_batch=None
):
    """One step of an on-policy task (e.g. PPO, lab.align.rlhf.PPOTask): the task makes its batch from the
    current parameters and the step's key (`task.rollout(params, cfg, data, "train", key, batch_size, extra)
    -> (batch, stats)`), then `task.epochs` passes over it in `task.minibatches` shuffled minibatches are
    `epochs * minibatches` AdamW updates of `loss or task.loss`. The batch is a pure function of the state,
    so a resumed run makes the same batches. Metrics: the mean loss and gradient norm over the updates, the
    learning rate, and the rollout's `stats` (flat scalars). The learning-rate schedule counts updates.
    Divergence is handled as in `train_step`: a non-finite loss or gradient in any update freezes the
    member at the step's starting state."""
    batch, stats = task.rollout(state.params, cfg, data, "train", key, tcfg.batch_size, state.extra)
    if shard_batch is not None:  # the rollouts laid out over `data` x `fsdp` like any sampled batch
        batch = shard_batch(batch)
    n_mb = task.minibatches
    size = tcfg.batch_size // n_mb
    opt = make_optimizer(tcfg)
    shuffle = jax.random.fold_in(key, SHUFFLE_STREAM)  # apart from the keys the rollout derives from `key`

    def update(carry, i):
        params, opt_state = carry
        perm = jax.random.permutation(jax.random.fold_in(shuffle, i // n_mb), tcfg.batch_size)
        rows = jax.lax.dynamic_slice(perm, ((i % n_mb) * size,), (size,))
        mb = jax.tree_util.tree_map(lambda x: x[rows], batch)
        (value, _), grads = jax.value_and_grad(loss or task.loss, has_aux=True)(
            params, cfg, mb, state.extra, forward
        )
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (apply_updates(params, updates, state.lr), opt_state), (value, grad_norm)

    (params, opt_state), (values, norms) = jax.lax.scan(
        update, (state.params, state.opt_state), jnp.arange(task.epochs * n_mb)
    )
    value, grad_norm = jnp.mean(values), jnp.mean(norms)
    finite = jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(norms))
    alive, diverged_at, new_state = _advance(state, params, opt_state, finite)
    metrics = {
        "loss": jnp.where(alive, value, jnp.nan),
        "grad_norm": jnp.where(alive, grad_norm, jnp.nan),
        "lr": state.lr * unit_schedule(tcfg)(state.step * task.epochs * n_mb),
        "diverged_at": diverged_at,
    } | {k: jnp.where(alive, v, jnp.nan) for k, v in stats.items()}
    return new_state, metrics


def train_steps(
    state: TrainState, data, n_steps: int, *, cfg, tcfg, task, forward=None, loss=None, shard_batch=None
):
    """`n_steps` train steps in one `lax.scan`; metrics come back stacked with a leading (n_steps,) axis."""
    kw = dict(cfg=cfg, tcfg=tcfg, task=task, forward=forward, loss=loss, shard_batch=shard_batch)
    step = lambda s, _: train_step(s, data, **kw)
    return jax.lax.scan(step, state, None, length=n_steps)


def eval_step(
    params,
    data,
    *,
    cfg: ModelConfig,
    tcfg: TrainConfig,
    task,
    split: str = "val",
    extra=None,
    forward=None,
    loss=None,
    shard_batch=None,
):
    """Mean loss and next-token accuracy over `tcfg.eval_batches` fixed batches of `split`. An on-policy
    task is evaluated on its rollouts from fixed keys: val_loss, and each rollout statistic as val_<name>."""
    if getattr(task, "on_policy", False):
        kw = dict(cfg=cfg, tcfg=tcfg, task=task, split=split, extra=extra, forward=forward, loss=loss)
        return _on_policy_eval(params, data, **kw)

    def one(i):
        batch = task.sample(
            data, split, jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), i), tcfg.batch_size
        )
        if shard_batch is not None:
            batch = shard_batch(batch)
        routed = cfg.mlp == "moe" and forward is None and loss is None
        if routed:  # routing over training, in the metrics (dense: unchanged); the value is moe_loss_fn's
            value, logits, stats = moe_eval(params, batch, cfg)
        else:
            value, logits = (loss or loss_fn)(params, cfg, batch, extra, forward)
        m = batch["mask"].astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        acc = jnp.sum(correct * m) / jnp.maximum(jnp.sum(m), 1.0)
        return (value, acc, stats) if routed else (value, acc)

    out = jax.lax.map(one, jnp.arange(tcfg.eval_batches))
    moe = {k: jnp.mean(v) for k, v in out[2].items()} if len(out) == 3 else {}
    return {"val_loss": jnp.mean(out[0]), "val_accuracy": jnp.mean(out[1])} | moe


def _on_policy_eval(params, data, *, cfg, tcfg, task, split, extra, forward, loss):
    def one(i):
        key = jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), i)
        batch, stats = task.rollout(params, cfg, data, split, key, tcfg.batch_size, extra)
        value, _ = (loss or task.loss)(params, cfg, batch, extra, forward)
        return value, stats

    values, stats = jax.lax.map(one, jnp.arange(tcfg.eval_batches))
    return {"val_loss": jnp.mean(values)} | {f"val_{k}": jnp.mean(v) for k, v in stats.items()}


def eval_transformed(params, transforms, data, *, cfg: ModelConfig, tcfg: TrainConfig, task, chunk: int = 8):
    """(len(transforms), members) numpy val losses of stacked trained `params` (leading axis: members, e.g.
    seeds) after each `transform(params of one member) -> params`: ablations and weight surgery measured
    without retraining.

    `chunk` transforms are evaluated per compiled call, `chunk` x members parameter sets at once, to bound
    memory; the last chunk is padded with its last transform, so one compiled program serves them all.
    """
    ev = jax.jit(jax.vmap(lambda p, d: eval_step(p, d, cfg=cfg, tcfg=tcfg, task=task), in_axes=(0, None)))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    members = jax.tree_util.tree_leaves(params)[0].shape[0]
    chunk, out = min(chunk, len(transforms)), []
    for i in range(0, len(transforms), chunk):
        group = list(transforms[i : i + chunk])
        stacked = [jax.vmap(f)(params) for f in group + [group[-1]] * (chunk - len(group))]
        batch = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *stacked)
        out.append(np.asarray(ev(batch, data)["val_loss"]).reshape(chunk, members)[: len(group)])
    return np.concatenate(out)


def stacked_eval(data, *, cfg: ModelConfig, tcfg: TrainConfig, task):
    """A jitted function from stacked parameters (a sweep's members on a leading axis) to each member's
    `eval_step` val loss, (S,). Build it once and call it on many parameter sets (e.g. one per ablation)."""
    return jax.jit(jax.vmap(lambda p: eval_step(p, data, cfg=cfg, tcfg=tcfg, task=task)["val_loss"]))


def stream_loss(params, cfg: ModelConfig, batch, extra=None, forward=None):
    """`loss_fn` on the member's own stream of a per-member-stream batch (lab.data.streams.MemberStreams):
    a training batch stacked over streams (C, B, T) is cut to stream `extra[0]` (the member's first extra
    hyperparameter, an index); a plain (B, T) batch (validation, shared by every member) is used as is."""
    if batch["inputs"].ndim == 3:
        c = jnp.asarray(extra)[0].astype(jnp.int32)
        batch = {k: v[c] for k, v in batch.items()}
    return loss_fn(params, cfg, batch, extra, forward)
