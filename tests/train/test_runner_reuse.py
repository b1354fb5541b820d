"""train_sweep(runners=...): sweeps of the same shapes share one runner's compiled programs, and a sweep run
on a reused runner (after another sweep with other values) trains exactly what it trained on the runner
freshly compiled for it."""

from lab.runs import read_rows
from lab.train import SweepSpec, members_grid, train_sweep


def test_reused_runner_trains_the_same_numbers(tiny, tmp_path):
    cfg, tcfg, task = tiny
    first = SweepSpec(cfg, tcfg, task, members_grid([0, 1], [1e-2]))
    other = SweepSpec(cfg, tcfg, task, members_grid([5, 6], [1e-2]))
    runners = {}
    for name, spec in (("a", first), ("b", other), ("c", first)):
        train_sweep(tmp_path / name, spec, progress=False, strategy="vmap", runners=runners)
    assert len(runners) == 1
    (runner,) = runners.values()
    assert list(runner._train_cache) == [tcfg.log_every]  # one train program, compiled once
    rows = lambda d: read_rows(tmp_path / d / "metrics.jsonl")
    assert rows("c") == rows("a")
    assert rows("b") != rows("a")  # other seeds, other numbers
