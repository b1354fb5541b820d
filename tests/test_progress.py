"""lab.progress: what the bars count (no drawing, no clock: tqdm replaced by a recorder)."""

import warnings

import pytest

from lab import progress


class Recorder:
    """Stands in for tqdm: records the bar's settings, updates and postfix labels."""

    def __init__(self, log, **kw):
        self.log, self.kw, self.n = log, kw, 0.0
        log.append(("open", kw["total"]))

    def update(self, k=1):
        self.n += k
        self.log.append(("update", k))

    def set_postfix_str(self, s, refresh=True):
        self.log.append(("label", s))

    def close(self):
        self.log.append(("close",))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def log(monkeypatch):
    events = []
    monkeypatch.setattr(progress, "tqdm", lambda **kw: Recorder(events, **kw))
    return events


def test_weighted_advances_by_each_units_share_of_the_cost_after_its_body(log):
    for unit in progress.weighted(["a", "b", "c"], {"a": 1, "b": 3, "c": 6}.get, "x", label=str.upper):
        log.append(("body", unit))
    assert log == [
        ("open", 100.0),
        *[
            e
            for u, pct in (("a", 10.0), ("b", 30.0), ("c", 60.0))
            for e in (("label", u.upper()), ("body", u), ("update", pytest.approx(pct)))
        ],
        ("close",),
    ]


def test_phase_counts_items_without_an_eta_and_the_bars_follow_the_house_settings(log):
    assert list(progress.phase("xy", "d", label=str.upper)) == ["x", "y"]
    assert log == [("open", 2), ("label", "X"), ("update", 1), ("label", "Y"), ("update", 1), ("close",)]
    bar = progress.progress_bar(5, "d", enabled=False, unit="step", initial=2)
    assert bar.kw["disable"] and not bar.kw["leave"] and bar.kw["initial"] == 2
    assert bar.kw["smoothing"] == 0.0  # the rate is the mean since the bar started


def test_work_warns_when_the_pieces_done_miss_the_planned_total(log):
    with pytest.warns(progress.PlanWarning, match="plan: the pieces of work done cost 4"):
        with progress.Work(10.0, "plan", enabled=False) as work:
            work.done(4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", progress.PlanWarning)
        with progress.Work(10.0, "plan", enabled=False) as work:
            assert work.done(4.0, "result") == "result"
            work.done(6.0)
        with pytest.raises(KeyError):  # leaving on an error says nothing about the plan
            with progress.Work(10.0, "plan", enabled=False) as work:
                raise KeyError
