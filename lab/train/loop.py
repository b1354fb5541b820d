"""The one impure driver: trains a sweep with progress, metrics, checkpoints and resume.

    result = train_sweep(run_dir, SweepSpec(model=..., train=..., task=..., members=[...], data=...))

writes under `run_dir`:
    config.json      the resolved config (model, train, task, members, data) and provenance
    metrics.jsonl    one row per member every `log_every` steps (mean train loss of those steps,
                     mean gradient norm, learning rate) and, every `eval_every` steps, val loss/accuracy
    checkpoints/     Orbax checkpoints of the stacked train states (every `ckpt_every` steps and the end)
    timing.json      compile time and throughput of the last session (kept out of metrics.jsonl so that
                     metrics are reproducible bit for bit)

Re-running with the same config resumes from the newest checkpoint: the metrics rows written after it
are dropped and recomputed, so a run killed at any moment and resumed writes the same metrics.jsonl as
an uninterrupted run (bitwise on CPU). A different config in the same directory is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lab import config as config_lib
from lab import runtime
from lab.errors import ConfigError
from lab.fileio import atomic_write_json, is_writer
from lab.model import ModelConfig
from lab.progress import phase, progress_bar
from lab.runs import check_or_write_config, lock, read_rows, truncate_after
from lab.train import checkpoint as ckpt
from lab.train.config import TrainConfig
from lab.train.memory import check_fits
from lab.train.mesh import MeshConfig
from lab.train.metrics import MetricsWriter
from lab.train.optimizer import make_optimizer
from lab.train.sweep import Member, SweepRunner, init_sweep


@dataclass
class SweepResult:
    run_dir: Path
    steps: int
    resumed_from: int | None
    diverged_at: list[int]  # per member, -1 if never
    final_val_loss: list[float]
    compile_seconds: float
    train_seconds: float
    tokens_per_second: float
    strategy: str
    skipped: bool = False  # already complete on disk


@dataclass(frozen=True, eq=False)
class SweepSpec:
    """Everything one sweep trains, for `train_sweep`: the model, the optimizer settings, the task and
    its data, the members (seeds and scalar hyperparameters), and optionally what replaces the defaults.

    forward:     module-level `forward(cfg, params, batch, extra) -> logits` instead of the plain model
                 (lab.train.step), e.g. a reparametrized model whose variant is a member's `extra`.
    loss:        module-level `loss(params, cfg, batch, extra, forward) -> (loss, logits)` instead of the
                 next-token cross entropy (finetuning on response tokens only, preference losses, ...).
    init_params: parameters to start from instead of a fresh initialization, stacked along a leading
                 member axis (one entry per member); the optimizer state starts fresh on them. Used as
                 given: `init_scale` does not apply. Their content hash is recorded in config.json, so a
                 resume from different starting parameters is refused.
    """

    model: ModelConfig
    train: TrainConfig
    task: Any
    members: tuple[Member, ...]
    data: Mapping[str, np.ndarray] = field(default_factory=dict)
    data_info: dict | None = None  # recorded in config.json: corpus name, content hash, tokenizer, sizes
    forward: Callable | None = None
    loss: Callable | None = None
    init_params: Any = None

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))

    @classmethod
    def text(cls, lm, train: TrainConfig, members, **kw) -> SweepSpec:
        """A language-model sweep on a `lab.data.pipeline.TextLM` (its model, windows task and corpus)."""
        return cls(lm.model, train, lm.task, members, lm.text.arrays, lm.text.info, **kw)

    def replace(self, **kw) -> SweepSpec:
        return dataclasses.replace(self, **kw)


def _fn_name(f) -> str | None:
    return None if f is None else f"{f.__module__}.{f.__qualname__}"


def params_sha256(params) -> str:
    """Content hash of a parameter pytree (leaf paths, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_config(spec: SweepSpec) -> dict:
    """The part of config.json that must match for a resume."""
    task = spec.task
    d = {
        "model": config_lib.to_dict(spec.model),
        "train": config_lib.to_dict(spec.train),
        "task": {"kind": task.kind, **config_lib.to_dict(task)},
        "members": [m.to_dict() for m in spec.members],
        "forward": _fn_name(spec.forward),
    }
    # Recorded only when used, so runs recorded before these existed still match.
    if spec.loss is not None:
        d["loss"] = _fn_name(spec.loss)
    if spec.init_params is not None:
        d["init_params_sha256"] = params_sha256(spec.init_params)
    if spec.data_info:
        d["data"] = spec.data_info
    return d


def _upgrade_run_config(have: dict) -> dict:
    """A run's recorded model and train configs with fields added since then at their defaults."""
    have = dict(have)
    for key, cls in (("model", ModelConfig), ("train", TrainConfig)):
        if isinstance(have.get(key), dict):
            have[key] = config_lib.fill_defaults(have[key], cls)
    return have


def abstract_sweep(cfg, tcfg, members: list[Member], runner: SweepRunner | None = None):
    """Shapes and dtypes of the stacked train states of `members`: the target checkpoints restore into.

    Every leaf is placed on this process's first device, whatever layout saved it, so a checkpoint written
    by a sweep sharded over 8 devices restores on a machine with 1 (the runner re-places it for its own
    layout); with a `runner` in "mesh" mode, into that runner's layout (matrices split over `fsdp`), so a
    model too large for one device is never whole on one.
    """
    shapes = jax.eval_shape(lambda: init_sweep(cfg, tcfg, members))
    stored = None if runner is None else runner.stored_shardings(shapes)
    if stored is None:
        stored = jax.tree_util.tree_map(
            lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]), shapes
        )
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, stored
    )


def train_sweep(
    run_dir,
    spec: SweepSpec,
    *,
    strategy: str = "auto",
    fresh: bool = False,
    progress: bool = True,
    desc: str | None = None,
    on_checkpoint=None,
    mesh: MeshConfig | None = None,
    runners: dict | None = None,
) -> SweepResult:
    """Train `spec.members` as one sweep under `run_dir`, resuming if it holds a run of the same spec.

    strategy: how the sweep uses devices (lab.train.sweep.STRATEGIES); fresh: discard `run_dir` first.
    mesh: lay each model out over a device mesh (lab.train.mesh: sweep x data x fsdp) instead; a run may
    resume on another mesh (checkpoints do not depend on the layout that wrote them).
    progress: show a bar of the programs compiling, then a bar of the steps (from the resumed step).
    on_checkpoint: optional callback `f(step)` called after each checkpoint is handed to Orbax.
    runners: optional dict the caller keeps across calls: a sweep with the same model, train config, task,
    member count, strategy, hooks and data shapes as an earlier one reuses its compiled programs (a chain of
    sweeps each trained on data made by the one before, e.g. model-collapse generations) instead of compiling
    them again. Not with a mesh.
    """
    run_dir = Path(run_dir)
    cfg, tcfg, task, members = spec.model, spec.train, spec.task, list(spec.members)
    if not members:
        raise ConfigError("a sweep needs at least one member (seed and hyperparameters)")
    if cfg.position == "learned" and task.seq_len > cfg.max_len:  # refuse before anything compiles
        raise ConfigError(
            f"the task's sequences have {task.seq_len} tokens but model.max_len={cfg.max_len}: learned "
            "positions exist only for 0..max_len-1; raise model.max_len or use position none, sinusoidal, "
            "rope or alibi"
        )
    want = run_config(spec)
    task.check_data(spec.data)
    reuse = runners is not None and (mesh is None or mesh.is_default)
    shapes = tuple(sorted((k, np.shape(v), str(np.asarray(v).dtype)) for k, v in spec.data.items()))
    key = (cfg, tcfg, task, len(members), strategy, spec.forward, spec.loss, shapes)
    runner = runners.get(key) if reuse else None
    if runner is None:
        runner = SweepRunner(
            cfg, tcfg, task, len(members), strategy, forward=spec.forward, loss=spec.loss, mesh=mesh
        )
        if reuse:
            runners[key] = runner
    if runner.mesh is not None:  # a batch or matrix the mesh cannot split: refused before any write
        runner.check_model(jax.eval_shape(lambda: init_sweep(cfg, tcfg, members[:1])).params, str(run_dir))
    shards = (1, 1) if runner.mesh is None else (runner.mesh.fsdp, runner.mesh.batch_ways)
    check_fits(cfg, tcfg.batch_size, task.seq_len, 1, what=str(run_dir), shards=shards)  # before any write
    progress = progress and is_writer()  # one bar per job, from process 0
    with lock(run_dir):
        return _train_locked(run_dir, spec, want, runner, fresh, progress, desc, on_checkpoint)


def _train_locked(run_dir, spec, want, runner, fresh, progress, desc, on_checkpoint) -> SweepResult:
    cfg, tcfg, members = spec.model, spec.train, list(spec.members)
    if is_writer():  # process 0 of a multi-process job decides; the others wait for it
        check_or_write_config(run_dir, want, fresh=fresh, upgrade=_upgrade_run_config)
    runtime.sync(f"config {run_dir}")

    metrics_path = run_dir / "metrics.jsonl"
    mngr = ckpt.manager(run_dir / "checkpoints")
    try:
        mngr.remove_temporary()  # left by a save that was killed; this process is the one writer
        abstract = abstract_sweep(cfg, tcfg, members, runner)
        found = mngr.restore_intact(abstract)
        runtime.sync(f"restored {run_dir}")  # every process has read before process 0 removes anything
        latest = None if found is None else found[0]
        if found is not None:
            latest, real, passed = found
            if passed:  # damaged newer checkpoints: resume from the intact one, with its metrics
                for step, _ in passed:
                    mngr.remove(step)
                truncate_after(metrics_path, latest)
                note = f", metrics.jsonl cut back to step {latest} and the damaged checkpoints removed"
                print(ckpt.passed_over_note(mngr.directory, passed, latest, note), file=sys.stderr)
            if latest >= tcfg.steps:
                return _finished(run_dir, real, latest, runner, skipped=True)
            truncate_after(metrics_path, latest)
        else:
            real = _start(spec, runner.stored_shardings(abstract))
            if metrics_path.exists() and is_writer():
                metrics_path.unlink()
        state = runner.place(real)
        dev_data = runner.place_data(spec.data)
        start = latest or 0
        return _loop(
            run_dir,
            tcfg,
            members,
            runner,
            state,
            dev_data,
            start,
            mngr,
            metrics_path,
            progress,
            desc or run_dir.name,
            resumed_from=latest,
            on_checkpoint=on_checkpoint,
        )
    finally:
        mngr.close()  # waits for the last save and seals it with its manifest


def _start(spec: SweepSpec, shardings=None):
    """The stacked states a sweep starts from: fresh (created with `shardings`, the runner's stored layout,
    if given), or on `spec.init_params` with a fresh optimizer."""
    members = list(spec.members)
    if spec.init_params is None:
        return init_sweep(spec.model, spec.train, members, shardings=shardings)
    state = init_sweep(spec.model, spec.train, members)
    want = jax.tree_util.tree_structure(state.params)
    if jax.tree_util.tree_structure(spec.init_params) != want or any(
        np.shape(a) != b.shape
        for a, b in zip(jax.tree_util.tree_leaves(spec.init_params), jax.tree_util.tree_leaves(state.params))
    ):
        raise ConfigError(
            "init_params must have the model's parameter tree with a leading axis of one entry per member "
            f"({len(spec.members)})"
        )
    # A copy (jnp.array, not asarray): the train program donates its state, and the caller's arrays (e.g. one
    # sweep's trained parameters, the start of two others) must survive it.
    params = jax.tree_util.tree_map(lambda a, b: jnp.array(a, b.dtype), spec.init_params, state.params)
    opt_state = jax.vmap(make_optimizer(spec.train).init)(params)
    return state.replace(params=params, opt_state=opt_state)


def _rows(step: int, n: int, values: dict[str, np.ndarray]) -> list[dict]:
    """One metrics row per member from arrays of shape (n,)."""
    out = []
    for i in range(n):
        row = {"step": step, "member": i}
        for k, v in values.items():
            row[k] = int(v[i]) if k == "diverged_at" else float(v[i])
        out.append(row)
    return out


def _chunk_sizes(start: int, tcfg: TrainConfig) -> list[int]:
    """The step counts of the compiled train calls from `start` to the end: `log_every` and any remainder."""
    left = tcfg.steps - start
    return sorted({min(tcfg.log_every, left), left % tcfg.log_every} - {0})


def _compile(runner, state, data, sizes, desc, enabled) -> float:
    """Seconds to compile every program the loop calls (a train call of each of `sizes` steps and the
    evaluation), counted on a line of its own: compilation is its own phase, kept out of the step bar's
    clock. The line shows no ETA: a training call takes several times an evaluation to compile."""
    t0 = runner.compile_seconds
    jobs = {
        f"train call of {k} steps": functools.partial(runner.compile_train, k, state, data) for k in sizes
    }
    jobs["evaluation"] = functools.partial(runner.compile_eval, state, data)
    for name in phase(jobs, f"{desc} (compiling)", enabled, label=str):
        jobs[name]()
    return runner.compile_seconds - t0


def compiled_memory(runner) -> dict | None:
    """XLA's memory analysis (bytes per device) of the longest train call compiled so far: arguments,
    outputs, temporaries, aliased (donated) bytes, and "peak" = arguments + outputs + temporaries - aliased,
    the most the program holds at once by XLA's count. None when nothing is compiled or XLA gives none."""
    if not runner._train_cache:
        return None
    m = runner._train_cache[max(runner._train_cache)].memory_analysis()
    if m is None:
        return None
    kinds = ("argument", "output", "temp", "alias", "generated_code")
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in kinds}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


class _StepBar:
    """A sweep's step bar. Made once every program is compiled, so its clock, rate and ETA are training
    alone; it starts at the resumed step and counts steps when their metrics are read back (done, not
    merely dispatched), showing the mean loss, tokens/s since it started, diverged members and the compile
    time."""

    def __init__(self, total, start, tokens_per_step, compile_s, desc, enabled):
        self.bar = progress_bar(total, desc, enabled, unit="step", initial=start)
        self.start = self.step = start
        self.tokens_per_step, self.t0 = tokens_per_step, time.perf_counter()
        self.compile = f"{compile_s:.1f}s"
        self.bar.set_postfix(compile=self.compile, refresh=False)

    def done(self, step: int, loss: np.ndarray, diverged_at: np.ndarray):
        """Steps up to `step` are done, with members' mean losses `loss` over the last chunk."""
        alive = np.isfinite(loss)
        self.bar.set_postfix(
            loss=f"{np.mean(loss[alive]):.3f}" if alive.any() else "nan",
            tok_s=f"{self.tokens_per_step * (step - self.start) / self.seconds():.3g}",
            diverged=f"{int((diverged_at >= 0).sum())}/{len(loss)}",
            compile=self.compile,
            refresh=False,  # the bar redraws at its own pace (mininterval)
        )
        self.bar.update(step - self.step)
        self.step = step

    def seconds(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)


def _chunk_rows(step: int, n: int, train_m, eval_m) -> tuple[list[dict], dict | None]:
    """(metrics rows of one chunk, one per member; the chunk's train values or None) from device metrics."""
    rows, vals = [], None
    if train_m is not None:
        host = jax.device_get(train_m)
        vals = {
            # mean over the chunk's steps; NaN if the member diverged within it
            "loss": np.asarray(host["loss"])[:n].mean(axis=1),
            "grad_norm": np.asarray(host["grad_norm"])[:n].mean(axis=1),
            "lr": np.asarray(host["lr"])[:n, -1],
            "diverged_at": np.asarray(host["diverged_at"])[:n, -1],
        }
        # Anything else a step reports (an on-policy task's rollout statistics): its mean over the chunk.
        vals |= {k: np.asarray(v)[:n].mean(axis=1) for k, v in host.items() if k not in vals}
        rows = _rows(step, n, vals)
    if eval_m is not None:
        ev_rows = _rows(step, n, {k: np.asarray(v)[:n] for k, v in jax.device_get(eval_m).items()})
        rows = [{**r, **e} for r, e in zip(rows, ev_rows)] if rows else ev_rows
    return rows, vals


def _loop(
    run_dir,
    tcfg,
    members,
    runner,
    state,
    data,
    start,
    mngr,
    metrics_path,
    progress,
    desc,
    resumed_from,
    on_checkpoint,
):
    n = len(members)
    tokens_per_step = n * tcfg.batch_size * runner.task.seq_len
    compile_s = _compile(runner, state, data, _chunk_sizes(start, tcfg), desc, progress)
    writer = MetricsWriter(metrics_path)
    bar = _StepBar(tcfg.steps, start, tokens_per_step, compile_s, desc, progress)
    pending: list = []  # (step, device metrics): read one chunk late so the host never stalls the device

    def flush():
        while pending:
            step, train_m, eval_m = pending.pop(0)
            rows, vals = _chunk_rows(step, n, train_m, eval_m)
            writer.write(rows)
            if vals is not None:
                bar.done(step, vals["loss"], vals["diverged_at"])

    try:
        if start == 0:
            pending.append((0, None, runner.evaluate(state, data)))
        step = start
        while step < tcfg.steps:
            k = min(tcfg.log_every, tcfg.steps - step)
            state, m = runner.train(state, data, k)
            step += k
            ev = runner.evaluate(state, data) if (step % tcfg.eval_every == 0 or step == tcfg.steps) else None
            flush()  # the previous chunk's metrics: ready by now, while this chunk runs
            pending.append((step, m, ev))
            if step % tcfg.ckpt_every == 0 or step == tcfg.steps:
                flush()  # rows up to this step are on disk before the checkpoint that covers them
                ckpt.save(mngr, step, runner.take(state))
                if on_checkpoint is not None:
                    on_checkpoint(step)
        flush()
        jax.block_until_ready(state)
    finally:
        bar.bar.close()
        writer.close()
    train_s = bar.seconds()
    result = _finished(run_dir, runner.take(state), tcfg.steps, runner, resumed_from=resumed_from)
    result.train_seconds = train_s
    result.tokens_per_second = tokens_per_step * (tcfg.steps - start) / max(train_s, 1e-9)
    atomic_write_json(
        run_dir / "timing.json",
        {
            "strategy": runner.strategy,
            "mesh": None if runner.mesh is None else dataclasses.asdict(runner.mesh),
            "processes": jax.process_count(),
            "devices": len(runner.devices),
            "members": n,
            "padded_members": runner.n_padded,
            "compile_seconds": runner.compile_seconds,
            "train_seconds": train_s,
            "steps": tcfg.steps - start,
            "tokens_per_second": result.tokens_per_second,
            "ms_per_step": 1000 * train_s / max(tcfg.steps - start, 1),
            "memory": compiled_memory(runner),
        },
    )
    return result


def _finished(run_dir, real_state, step, runner, skipped=False, resumed_from=None) -> SweepResult:
    rows = [r for r in read_rows(run_dir / "metrics.jsonl") if "val_loss" in r and r["step"] == step]
    val = [math.nan] * runner.n
    for r in rows:
        val[r["member"]] = r["val_loss"]
    return SweepResult(
        run_dir=run_dir,
        steps=step,
        resumed_from=resumed_from,
        diverged_at=[int(x) for x in np.asarray(jax.device_get(real_state.diverged_at))],
        final_val_loss=val,
        compile_seconds=runner.compile_seconds,
        train_seconds=0.0,
        tokens_per_second=0.0,
        strategy=runner.strategy,
        skipped=skipped,
    )


def latest_state(run_dir, cfg: ModelConfig, tcfg: TrainConfig, members: list[Member]):
    """(step, stacked train states) of the newest checkpoint of a sweep, for analysis."""
    return ckpt.restore_latest(Path(run_dir) / "checkpoints", abstract_sweep(cfg, tcfg, members))


def member_params(run_dir, cfg: ModelConfig, tcfg: TrainConfig, members: list[Member]) -> list:
    """Each member's parameters from the newest checkpoint of a sweep, one pytree per member in order
    (what `run` measures trained models with: evaluations, interventions, activations)."""
    _, state = latest_state(run_dir, cfg, tcfg, members)
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], state.params) for i in range(len(members))]


def sweep_params(run_dir, spec: SweepSpec):
    """The stacked parameters (leading axis: `spec.members`) of the newest checkpoint of the sweep `spec`
    under `run_dir`: what `run` measures its trained models with."""
    return latest_state(run_dir, spec.model, spec.train, list(spec.members))[1].params


def train_sweeps(runs_dir, specs: dict[str, SweepSpec], desc: str, opts) -> dict[str, SweepResult]:
    """`train_sweep` for each named sweep of `specs`, under `runs_dir`/<name>, its progress labelled
    "<desc> <name>"; `opts` (lab.experiment.RunOptions: .strategy, .progress, .mesh) says how.
    What an experiment's `run` does first when it trains several sweeps."""
    kw = opts.train_kw()
    return {
        name: train_sweep(Path(runs_dir) / name, s, desc=f"{desc} {name}", **kw) for name, s in specs.items()
    }
