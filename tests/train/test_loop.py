"""The training driver: files it writes, refusal to mix configs, and kill -9 + resume == uninterrupted."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lab.errors import CheckpointError, ConfigError
from lab.runs import read_rows
from lab.train import Member, SweepSpec, members_grid, train_sweep

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from lab.runtime import init_jax
    init_jax(2)
    from lab.data.tasks import Sort
    from lab.model import ModelConfig
    from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep

    run_dir, kill_at = sys.argv[1], int(sys.argv[2])
    task = Sort(n_items=4, n_symbols=6)
    cfg = ModelConfig(vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=1, d_model=16, n_heads=2)
    tcfg = TrainConfig(steps=40, batch_size=4, warmup_steps=2, log_every=5, eval_every=10, eval_batches=2,
                       ckpt_every=10)

    def on_checkpoint(step):
        if step == kill_at:  # a real kill -9, while Orbax may still be writing this checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    spec = SweepSpec(cfg, tcfg, task, members_grid([0, 1, 2], [3e-3]))
    train_sweep(run_dir, spec, progress=False, on_checkpoint=on_checkpoint)
    """
)


def _child(tmp_path, run_dir, kill_at):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.run(
        [sys.executable, str(script), str(run_dir), str(kill_at)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_killed_and_resumed_run_writes_the_same_metrics_bitwise(tmp_path):
    full = _child(tmp_path, tmp_path / "full", -1)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _child(tmp_path, tmp_path / "resumed", 20)
    assert killed.returncode == -9, killed.stderr[-2000:]
    rows_at_kill = read_rows(tmp_path / "resumed" / "metrics.jsonl")
    assert max(r["step"] for r in rows_at_kill) <= 20  # it really stopped part-way
    resumed = _child(tmp_path, tmp_path / "resumed", -1)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    timing = json.loads((tmp_path / "resumed" / "timing.json").read_text())
    assert timing["steps"] < 40  # it resumed from a checkpoint rather than starting over
    a = (tmp_path / "full" / "metrics.jsonl").read_bytes()
    b = (tmp_path / "resumed" / "metrics.jsonl").read_bytes()
    assert a == b and len(a.splitlines()) == 3 * (1 + 40 // 5)


def test_run_files_skip_when_complete_and_refuse_other_configs(tmp_path, tiny):
    cfg, tcfg, task = tiny
    members = members_grid([0, 1], [3e-3])
    r = train_sweep(
        tmp_path / "run",
        SweepSpec(model=cfg, train=tcfg, task=task, data={}, members=members),
        progress=False,
    )
    assert not r.skipped and r.steps == 20 and r.diverged_at == [-1, -1]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["config"]["train"]["steps"] == 20 and stored["provenance"]["packages"]["jax"]
    rows = read_rows(tmp_path / "run" / "metrics.jsonl")
    # step 0 eval, then a train row every 5 steps (with val at 10 and 20), per member
    assert [r["step"] for r in rows if r["member"] == 0] == [0, 5, 10, 15, 20]
    assert {"loss", "grad_norm", "lr", "val_loss", "val_accuracy"} <= set(rows[-1])
    assert r.final_val_loss == [x["val_loss"] for x in rows[-2:]]
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    again = train_sweep(
        tmp_path / "run",
        SweepSpec(model=cfg, train=tcfg, task=task, data={}, members=members),
        progress=False,
    )
    assert again.skipped and (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    with pytest.raises(CheckpointError, match=r"different config \(model.n_layers: 1 vs 2"):
        train_sweep(
            tmp_path / "run",
            SweepSpec(model=cfg.replace(n_layers=2), train=tcfg, task=task, data={}, members=members),
            progress=False,
        )
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10", "20"]


RESTORE_CHILD = textwrap.dedent(
    """
    import sys
    from lab.runtime import init_jax
    init_jax(1)
    import jax
    from lab.data.tasks import Sort
    from lab.model import ModelConfig
    from lab.train import TrainConfig, members_grid
    from lab.train.loop import latest_state

    task = Sort(n_items=4, n_symbols=6)
    cfg = ModelConfig(vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=1, d_model=16, n_heads=2)
    tcfg = TrainConfig(steps=20, batch_size=4, warmup_steps=2, log_every=5, eval_every=10, eval_batches=2,
                       ckpt_every=10)
    step, state = latest_state(sys.argv[1], cfg, tcfg, members_grid(range(8), [3e-3]))
    assert len(jax.devices()) == 1 and step == 20
    import numpy as np
    np.save(sys.argv[2], np.asarray(jax.device_get(state.params["wte"])))
    """
)


@pytest.mark.slow
def test_a_checkpoint_of_a_sharded_sweep_restores_on_one_device(tmp_path, tiny):
    import jax
    import numpy as np

    cfg, tcfg, task = tiny
    members = members_grid(range(8), [3e-3])
    train_sweep(
        tmp_path / "run",
        SweepSpec(model=cfg, train=tcfg, task=task, data={}, members=members),
        progress=False,
        strategy="shard",
    )
    assert json.loads((tmp_path / "run" / "timing.json").read_text())["devices"] == 8
    script = tmp_path / "restore.py"
    script.write_text(RESTORE_CHILD)
    p = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), str(tmp_path / "wte.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    from lab.train.loop import latest_state

    _, state = latest_state(tmp_path / "run", cfg, tcfg, members)
    np.testing.assert_array_equal(
        np.load(tmp_path / "wte.npy"), np.asarray(jax.device_get(state.params["wte"]))
    )


def test_a_task_longer_than_the_learned_position_table_is_refused_before_compiling(tiny, tmp_path):
    cfg, tcfg, task = tiny
    short = cfg.replace(max_len=task.seq_len - 1)
    with pytest.raises(ConfigError, match="learned positions exist only for 0..max_len-1"):
        train_sweep(
            tmp_path / "r", SweepSpec(model=short, train=tcfg, task=task, data={}, members=[Member(0, 1e-3)])
        )
    assert not (tmp_path / "r").exists()


def test_a_run_recorded_before_a_config_field_existed_still_matches_at_that_fields_default(tiny, tmp_path):
    from lab.fileio import atomic_write_json
    from lab.runs import check_or_write_config
    from lab.train.loop import _upgrade_run_config, run_config

    cfg, tcfg, task = tiny
    members = members_grid([0], [1e-3])
    old = run_config(SweepSpec(cfg, tcfg, task, members))
    for key in ("norm_placement", "rope_theta"):  # fields added by projects 2 and 10
        del old["model"][key]
    atomic_write_json(tmp_path / "config.json", {"config": old, "provenance": {}})
    want = run_config(SweepSpec(cfg, tcfg, task, members))
    check_or_write_config(tmp_path, want, upgrade=_upgrade_run_config)  # the default reproduces the old code
    with pytest.raises(CheckpointError, match="model.rope_theta: 10000.0 vs 500.0"):
        check_or_write_config(
            tmp_path,
            run_config(SweepSpec(cfg.replace(rope_theta=500.0), tcfg, task, members)),
            upgrade=_upgrade_run_config,
        )
    with pytest.raises(CheckpointError, match="norm_placement"):  # without the upgrade it is a difference
        check_or_write_config(tmp_path, want)


def doubled_cross_entropy(params, cfg, batch, extra=None, forward=None):
    """A custom loss for the driver test: twice the next-token cross entropy."""
    from lab.train.step import loss_fn

    value, logits = loss_fn(params, cfg, batch, extra, forward)
    return 2.0 * value, logits


def test_the_driver_starts_from_given_parameters_and_trains_a_given_loss(tmp_path, tiny):
    from lab.train.loop import latest_state

    cfg, tcfg, task = tiny
    members = members_grid([0, 1], [3e-3])
    spec = SweepSpec(cfg, tcfg, task, members)
    train_sweep(tmp_path / "a", spec, progress=False)
    _, trained = latest_state(tmp_path / "a", cfg, tcfg, members)
    first = lambda run: [r for r in read_rows(tmp_path / run / "metrics.jsonl") if r["step"] == 0]
    last = [r for r in read_rows(tmp_path / "a" / "metrics.jsonl") if r["step"] == tcfg.steps]

    # Starting from a's trained parameters: b's first evaluation is a's last one, on a fresh optimizer.
    train_sweep(tmp_path / "b", spec.replace(init_params=trained.params, members=members), progress=False)
    assert [r["val_loss"] for r in first("b")] == [r["val_loss"] for r in last]
    stored = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert len(stored["init_params_sha256"]) == 64
    with pytest.raises(CheckpointError, match="init_params_sha256"):  # other starting parameters
        other = jax_tree_scale(trained.params, 0.5)
        train_sweep(tmp_path / "b", spec.replace(init_params=other), progress=False)
    with pytest.raises(ConfigError, match="one entry per member"):
        train_sweep(tmp_path / "c", spec.replace(init_params=jax_tree_scale(trained.params, 1.0, n=1)))

    # A given loss is what the step minimizes and what evaluation reports (same start as a).
    train_sweep(tmp_path / "d", spec.replace(loss=doubled_cross_entropy), progress=False)
    for x, y in zip(first("a"), first("d")):
        assert y["val_loss"] == pytest.approx(2 * x["val_loss"], rel=1e-6)
    assert json.loads((tmp_path / "d" / "config.json").read_text())["config"]["loss"].endswith(
        "doubled_cross_entropy"
    )


def jax_tree_scale(tree, factor, n=None):
    import jax

    return jax.tree_util.tree_map(lambda x: (x if n is None else x[:n]) * factor, tree)


def test_member_params_are_each_members_slice_of_the_newest_checkpoint(tmp_path, tiny):
    import numpy as np

    from lab.train.loop import latest_state, member_params

    cfg, tcfg, task = tiny
    members = members_grid([0, 1], [3e-3, 1e-2])
    train_sweep(tmp_path / "a", SweepSpec(cfg, tcfg, task, members), progress=False)
    _, state = latest_state(tmp_path / "a", cfg, tcfg, members)
    each = member_params(tmp_path / "a", cfg, tcfg, members)
    assert len(each) == 4
    for i, params in enumerate(each):
        np.testing.assert_array_equal(params["wte"], np.asarray(state.params["wte"])[i])
    assert not np.array_equal(each[0]["wte"], each[3]["wte"])


def test_seed_members_are_the_seeds_of_one_recipe_for_each_extra(tiny):
    from lab.train import seed_members

    _, tcfg, _ = tiny
    recipe = tcfg.replace(lr=2e-3, init_scale=0.5)
    got = [(m.seed, m.lr, m.init_scale, m.extra) for m in seed_members(2, recipe, [(0.0,), (3.0,)])]
    assert got == [
        (0, 2e-3, 0.5, (0.0,)),
        (1, 2e-3, 0.5, (0.0,)),
        (0, 2e-3, 0.5, (3.0,)),
        (1, 2e-3, 0.5, (3.0,)),
    ]
    assert [m.extra for m in seed_members(3, recipe)] == [(), (), ()]


def test_train_sweeps_trains_each_named_sweep_and_sweep_params_restores_its_last_checkpoint(tmp_path, tiny):
    import numpy as np

    from lab.experiment import RunOptions
    from lab.train import seed_members, sweep_params, train_sweeps
    from lab.train.step import stacked_eval

    cfg, tcfg, task = tiny
    members = seed_members(2, tcfg)
    specs = {
        "one": SweepSpec(cfg, tcfg, task, members),
        "deep/two": SweepSpec(cfg.replace(n_layers=2), tcfg, task, members),
    }
    done = train_sweeps(tmp_path / "runs", specs, "test", RunOptions(progress=False))
    assert sorted(done) == ["deep/two", "one"] and not any(r.skipped for r in done.values())
    assert {n: r.run_dir for n, r in done.items()} == {n: tmp_path / "runs" / n for n in specs}
    assert all(
        train_sweeps(tmp_path / "runs", specs, "test", RunOptions(progress=False))[n].skipped for n in specs
    )
    params = sweep_params(tmp_path / "runs" / "deep" / "two", specs["deep/two"])
    assert sorted(k for k in params if k.startswith("block_")) == ["block_0", "block_1"]
    assert params["wte"].shape[0] == 2 and not np.array_equal(params["wte"][0], params["wte"][1])  # 2 seeds
    # the parameters of the last checkpoint: evaluated again, they give the final val loss the run logged
    again = stacked_eval({}, cfg=cfg.replace(n_layers=2), tcfg=tcfg, task=task)(params)
    np.testing.assert_allclose(np.asarray(again), done["deep/two"].final_val_loss, rtol=1e-6)


class RecordedBar:
    """Stands in for tqdm: records what a bar is asked to show (no drawing, no clock)."""

    def __init__(self, events, total=None, desc="", initial=0, unit="it", **kw):
        self.events, self.desc, self.total, self.initial, self.unit = events, desc, total, initial, unit
        self.n, self.updates, self.postfix, self.kw = initial, [], {}, kw
        events.append(("open", self))

    def update(self, k=1):
        self.n += k
        self.updates.append(k)
        self.events.append(("update", self))

    def set_postfix(self, refresh=True, **kw):
        self.postfix = kw

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def close(self):
        self.events.append(("close", self))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def recorded(monkeypatch):
    """Events of every bar the driver opens (lab.progress's tqdm replaced by RecordedBar), and a
    ("compiled", kind) event each time a sweep runner really compiles a program."""
    from lab.train.sweep import SweepRunner

    events = []
    monkeypatch.setattr("lab.progress.tqdm", lambda **kw: RecordedBar(events, **kw))
    for name in ("compile_train", "compile_eval"):
        real = getattr(SweepRunner, name)

        def spy(self, *args, real=real, name=name):
            before = self.compile_seconds
            out = real(self, *args)
            if self.compile_seconds != before:
                events.append(("compiled", name))
            return out

        monkeypatch.setattr(SweepRunner, name, spy)
    return events


def _phases(events):
    """(the compile bar, the step bar, events in order) of one train_sweep's events."""
    bars = [e[1] for e in events if e[0] == "open"]
    assert len(bars) == 2, [b.desc for b in bars]
    return bars[0], bars[1], [(kind, getattr(x, "desc", x)) for kind, x in events]


def test_compilation_is_its_own_phase_then_the_bar_counts_steps(tmp_path, tiny, recorded):
    cfg, tcfg, task = tiny
    tcfg = tcfg.replace(steps=22)  # train calls of 5 steps and a last one of 2: two train programs
    train_sweep(tmp_path / "r", SweepSpec(cfg, tcfg, task, members_grid([0, 1], [3e-3])), desc="t")
    compiling, steps, order = _phases(recorded)
    assert compiling.desc == "t (compiling)" and compiling.total == compiling.n == 3
    assert "{remaining}" not in compiling.kw["bar_format"]  # no ETA for programs of unequal cost
    # every program compiles while the compile bar is open, counted as it finishes, before the step bar opens
    programs = ("compile_train", "compile_train", "compile_eval")
    counted = [e for k in programs for e in (("compiled", k), ("update", "t (compiling)"))]
    assert order[:8] == [("open", "t (compiling)"), *counted, ("close", "t (compiling)")]
    assert order[8] == ("open", "t") and not any(kind == "compiled" for kind, _ in order[8:])
    assert (steps.unit, steps.total, steps.initial) == ("step", 22, 0)
    assert steps.updates == [5, 5, 5, 5, 2] and steps.n == 22
    assert {"loss", "tok_s", "diverged", "compile"} <= set(steps.postfix)


def test_a_resumed_run_starts_its_step_bar_at_the_resumed_step(tmp_path, tiny, recorded):
    cfg, tcfg, task = tiny
    tcfg = tcfg.replace(steps=22)
    spec = SweepSpec(cfg, tcfg, task, members_grid([0], [3e-3]))

    def crash(step):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sweep(tmp_path / "r", spec, desc="t", on_checkpoint=crash)
    recorded.clear()
    train_sweep(tmp_path / "r", spec, desc="t")
    compiling, steps, _ = _phases(recorded)
    assert compiling.total == 3  # calls of 5 steps and of 2 (12 steps left), and the evaluation
    assert (steps.total, steps.initial, steps.updates, steps.n) == (22, 10, [5, 5, 2], 22)
