"""lab.runs: measurement files round-trip with their config, stale or corrupted files are refused, and
a set of runs trained on different corpora is refused."""

import json
from dataclasses import dataclass

import numpy as np
import pytest

from lab.errors import CheckpointError, DataError
from lab.runs import load_run, load_runs, read_measurement, write_measurement


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
    (d / "config.json").write_text(json.dumps({"config": {"members": members, "data": {"sha256": sha}}}))
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
    (d / "config.json").write_text(json.dumps({"config": {"members": members}}))
    rows = [  # member 0 learns; 1 ends above the untrained loss; 2 diverges at step 10; 3 diverges at once
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
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = load_run(d)
    assert run.failed(initial_loss=5.0).tolist() == [False, True, True, True]
    assert run.failed(initial_loss=6.0).tolist() == [False, False, True, True]
    np.testing.assert_array_equal(run.max_grad_norm, [2.5, 9.0, np.nan, np.nan])
