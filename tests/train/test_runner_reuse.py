"""train_sweep(runners=...): a second sweep of the same shapes reuses the first one's compiled programs and
trains exactly what a sweep with its own freshly compiled programs trains."""

from lab.runs import read_rows
from lab.train import SweepSpec, members_grid, train_sweep


def test_reused_runner_trains_the_same_numbers(tiny, tmp_path):
    cfg, tcfg, task = tiny
    first = SweepSpec(cfg, tcfg, task, members_grid([0, 1], [1e-2]))
    second = SweepSpec(cfg, tcfg, task, members_grid([5, 6], [1e-2]))
    runners = {}
    train_sweep(tmp_path / "a", first, progress=False, runners=runners)
    train_sweep(tmp_path / "b", second, progress=False, runners=runners)
    assert len(runners) == 1
    (runner,) = runners.values()
    assert list(runner._train_cache) == [tcfg.log_every]  # one train program, compiled once
    train_sweep(tmp_path / "c", second, progress=False)  # its own programs
    rows = lambda d: [{k: v for k, v in r.items()} for r in read_rows(tmp_path / d / "metrics.jsonl")]
    assert rows("b") == rows("c")
    assert rows("a") != rows("b")  # other seeds, other numbers
