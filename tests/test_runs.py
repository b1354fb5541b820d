"""lab.runs: measurement files round-trip with their config, stale or corrupted files are refused, and
a set of runs trained on different corpora is refused."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lab.errors import CheckpointError, DataError
from lab.runs import (
    check_or_write_config,
    check_runs_complete,
    expected_steps,
    load_run,
    load_runs,
    lock,
    lock_path,
    read_measurement,
    write_measurement,
)


@dataclass(frozen=True)
class Cfg:
    steps: int = 3
    name: str = "x"


def test_json_and_npz_measurements_round_trip_with_config_and_commit(tmp_path):
    data = {"a": [1.0, float("nan")], "b": {"c": 2}}
    write_measurement(tmp_path / "m.json", data, Cfg())
    got = read_measurement(tmp_path / "m.json", Cfg())
    assert got["b"] == {"c": 2} and got["a"][0] == 1.0 and np.isnan(got["a"][1])
    meta = json.loads((tmp_path / "m.json").read_text())["meta"]
    assert meta["config"] == {"steps": 3, "name": "x"} and "git_commit" in meta
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.array([1, 2])}
    write_measurement(tmp_path / "m.npz", arrays, Cfg())
    got = read_measurement(tmp_path / "m.npz", Cfg())
    assert set(got) == {"w", "i"} and got["w"].dtype == np.float32
    np.testing.assert_array_equal(got["w"], arrays["w"])


def test_a_measurement_of_another_config_or_a_damaged_file_is_refused(tmp_path):
    write_measurement(tmp_path / "m.npz", {"x": np.zeros(3)}, Cfg())
    with pytest.raises(CheckpointError, match="steps: 3 vs 4"):
        read_measurement(tmp_path / "m.npz", Cfg(steps=4))
    (tmp_path / "m.npz").write_bytes((tmp_path / "m.npz").read_bytes()[:40])
    with pytest.raises(DataError, match="corrupted"):
        read_measurement(tmp_path / "m.npz")
    with pytest.raises(DataError, match="run the experiment first"):
        read_measurement(tmp_path / "absent.json")
    with pytest.raises(ValueError, match=".json or .npz"):
        write_measurement(tmp_path / "m.txt", {})


def _fake_run(d, sha):
    d.mkdir(parents=True)
    members = [{"seed": 0, "lr": 1e-3, "init_scale": 1.0, "extra": []}]
    train = {"steps": 5, "log_every": 5, "eval_every": 5}
    (d / "config.json").write_text(
        json.dumps({"config": {"members": members, "train": train, "data": {"sha256": sha}}})
    )
    rows = [{"step": 0, "member": 0, "val_loss": 3.0}, {"step": 5, "member": 0, "loss": 2.5, "val_loss": 2.0}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_runs_trained_on_different_corpora_are_refused(tmp_path):
    _fake_run(tmp_path / "a", "1" * 64)
    _fake_run(tmp_path / "b", "2" * 64)
    assert load_run(tmp_path / "a", "1" * 64).final_val_loss.tolist() == [2.0]
    with pytest.raises(CheckpointError, match="different corpus"):
        load_run(tmp_path / "a", "2" * 64)
    with pytest.raises(CheckpointError, match="2 different corpora"):
        load_runs({"a": tmp_path / "a", "b": tmp_path / "b"})
    with pytest.raises(DataError, match="run the experiment first"):
        load_run(tmp_path / "absent")


def test_failed_members_and_largest_finite_gradient_norm(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    members = [{"seed": s, "lr": 1e-3, "init_scale": 1.0, "extra": []} for s in range(4)]
    train = {"steps": 20, "log_every": 10, "eval_every": 10}
    (d / "config.json").write_text(json.dumps({"config": {"members": members, "train": train}}))
    rows = [{"step": 0, "member": m, "val_loss": 5.0} for m in range(4)]
    rows += [  # member 0 learns; 1 ends above the untrained loss; 2 diverges at step 10; 3 diverges at once
        {"step": 10, "member": m, "loss": lo, "grad_norm": g, "val_loss": v, "diverged_at": d_at}
        for m, lo, g, v, d_at in [
            (0, 2.0, 1.5, 2.5, -1),
            (1, 4.0, 9.0, 5.5, -1),
            (2, float("nan"), float("inf"), float("nan"), 10),
            (3, float("nan"), float("nan"), float("nan"), 10),
        ]
    ]
    rows += [{"step": 20, "member": 0, "loss": 1.8, "grad_norm": 2.5, "val_loss": 2.2}]
    rows += [{"step": 20, "member": 1, "loss": 4.1, "grad_norm": 0.5, "val_loss": 5.6}]
    rows += [  # a diverged member's rows go on, with null (NaN) values
        {"step": 20, "member": m, "loss": None, "grad_norm": None, "val_loss": None, "diverged_at": 10}
        for m in (2, 3)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(d)
    assert run.failed(initial_loss=5.0).tolist() == [False, True, True, True]
    assert run.failed(initial_loss=6.0).tolist() == [False, False, True, True]
    np.testing.assert_array_equal(run.max_grad_norm, [2.5, 9.0, np.nan, np.nan])


def _complete_run(d, members=2, steps=20, log_every=5, eval_every=10, diverge=None):
    """A made-up finished run: every member has a row at every logged step (val at every eval step); the
    member `diverge` has NaN (null) values from step 10 on, as train_sweep writes them."""
    d.mkdir(parents=True)
    train = {"steps": steps, "log_every": log_every, "eval_every": eval_every}
    ms = [{"seed": s, "lr": 1e-3, "init_scale": 1.0, "extra": []} for s in range(members)]
    (d / "config.json").write_text(json.dumps({"config": {"members": ms, "train": train}}))
    logged, evals = expected_steps(train)
    rows = []
    for step in sorted({*logged, *evals}):
        for m in range(members):
            dead = m == diverge and step >= 10
            row = {"step": step, "member": m}
            if step in logged:
                row.update(
                    loss=None if dead else 3.0 - step / 10, grad_norm=1.0, diverged_at=10 if dead else -1
                )
            if step in evals:
                row.update(val_loss=None if dead else 3.1 - step / 10)
            rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_expected_steps_follow_the_training_loops_chunks():
    assert expected_steps({"steps": 20, "log_every": 5, "eval_every": 10}) == ([5, 10, 15, 20], [0, 10, 20])
    # a last, shorter chunk; and the last step is always evaluated
    assert expected_steps({"steps": 23, "log_every": 5, "eval_every": 10}) == (
        [5, 10, 15, 20, 23],
        [0, 10, 20, 23],
    )


def test_a_torn_or_unfinished_run_is_refused_naming_the_member_and_steps(tmp_path):
    run = load_run(_complete_run(tmp_path / "ok", diverge=1))
    assert run.diverged_at.tolist() == [-1, 10] and np.isnan(run.final_val_loss[1])  # a real divergence
    assert run.final_val_loss[0] == pytest.approx(1.1)

    torn = _complete_run(tmp_path / "torn")  # a kill (or a reader) cut the last 40 bytes off
    data = (torn / "metrics.jsonl").read_bytes()
    (torn / "metrics.jsonl").write_bytes(data[:-40])
    with pytest.raises(DataError, match=r"torn is incomplete: member 1 has no train row at step 20 "):
        load_run(torn)

    half = _complete_run(tmp_path / "runs" / "half")  # the last checkpoint and the rows after it deleted
    lines = (half / "metrics.jsonl").read_text().splitlines(keepends=True)
    (half / "metrics.jsonl").write_text("".join(line for line in lines if json.loads(line)["step"] <= 10))
    with pytest.raises(DataError, match=r"half is incomplete: member 0 has no train row at step 15, 20 "):
        load_run(half)
    with pytest.raises(DataError, match="member 0 has no train row at step 15, 20"):
        check_runs_complete(tmp_path / "runs")  # what `lab analyze` checks before reading measurements

    twice = _complete_run(tmp_path / "twice")  # two writers appended the same rows
    (twice / "metrics.jsonl").write_text((twice / "metrics.jsonl").read_text() * 2)
    with pytest.raises(DataError, match=r"rows written more than once \(first: member 0, step 0\)"):
        load_run(twice)


HOLDER = """
import sys, time
from lab.runs import lock
with lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_writer_per_directory_and_a_killed_holder_does_not_block(tmp_path):
    d = tmp_path / "results" / "e04_qkv"
    with lock(d), lock(d):  # re-entrant within a process
        assert int(lock_path(d).read_text()) == os.getpid()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(d)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=rf"in use by another lab process \(PID {holder.pid}, "):
            with lock(d):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
        holder.wait(timeout=60)
    with lock(d):
        assert int(lock_path(d).read_text()) == os.getpid()


@pytest.mark.parametrize("content", ["[1, 2]", '{"config": 5}', '{"config": [1]}', "{", "\udcff"])
def test_a_run_config_that_is_not_a_config_is_refused_in_one_line(tmp_path, content):
    (tmp_path / "config.json").write_text(content, errors="surrogateescape")
    with pytest.raises(CheckpointError, match=r"config.json is unreadable or corrupted; pass --fresh"):
        check_or_write_config(tmp_path, {"steps": 1})
    assert (tmp_path / "config.json").read_text(errors="surrogateescape") == content  # left as it was
