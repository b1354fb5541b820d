"""Progress bars for long work (tqdm), so that what `lab run` shows counts work of similar cost and its
ETA is honest.

    bar = progress_bar(total, "e09 MHA", enabled, unit="step", initial=resumed_step)  # equal units
    for job in phase(jobs, "e09 MHA compiling", enabled): job()               # a few items, no ETA
    for unit in weighted(units, cost, "e09 decode timing", enabled): ...        # units of unequal cost
    with Work(total_cost, "e06", enabled) as work: ...; work.done(cost)        # pieces inside loops

Every bar's rate is the mean since it started (tqdm's smoothing off): on a machine shared with other work
the mean gave steadier ETAs than tqdm's moving average, which follows every change of load (e04's step bars
in one run on a loaded 2-core machine: ETA / real remaining time 0.46..1.70 with the moving average shown,
0.60..1.34 recomputed from the same displays with the mean).
`phase` counts a few items whose costs differ and are not known (compiling a training call and an
evaluation) and shows the time spent, but no ETA. `Work` (and `weighted`, built on it) advances its bar by
each piece's expected cost (in any one unit, e.g. estimated seconds) once the piece has finished, and shows
the percentage of the summed cost, so a few pieces of very different size (a measurement grid) give an ETA
in expected work rather than in piece counts. Imports no JAX.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
# Percent of the expected work, elapsed < remaining, and what is running now (the postfix).
WEIGHTED_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
# Items done of all, the time spent, and what is running now: no rate, no ETA.
PHASE_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def progress_bar(total: float, desc: str, enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar to stderr that vanishes when closed, its rate the mean since it started. In a terminal it
    redraws up to ten times a second; in a log file, where every redraw is a line of noise, at most every
    10 s."""
    kw.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    kw.setdefault("smoothing", 0.0)
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False, **kw)


def phase(
    items: Iterable[T], desc: str, enabled: bool = True, label: Callable[[T], str] | None = None
) -> Iterator[T]:
    """Yield each of `items` on a line that counts them and shows the time spent, without an ETA (for a few
    items of unequal, unknown cost). `label(item)` names the running item."""
    items = list(items)
    with progress_bar(len(items), desc, enabled, bar_format=PHASE_FORMAT) as bar:
        for item in items:
            if label is not None:
                bar.set_postfix_str(label(item))
            yield item
            bar.update(1)


class PlanWarning(UserWarning):
    """The pieces of work done did not add up to the planned total: the plan (its cost model's list of
    pieces) and the loops that report them disagree, so the bar's percentage and ETA were off."""


class Work:
    """A bar over pieces of work of unequal expected cost: `total` is their summed cost, and `done(cost)`
    advances the bar by `cost` once a piece has finished. Shows the percentage of `total` done; `label`
    names what is running. Used as a context manager: leaving it without an error warns (PlanWarning) if the
    pieces done do not add up to `total`."""

    def __init__(self, total: float, desc: str, enabled: bool = True):
        self.total, self.desc, self.spent = float(total), desc, 0.0
        self.bar = progress_bar(100.0, desc, enabled, bar_format=WEIGHTED_FORMAT)

    def done(self, cost: float, result: T = None) -> T:
        """Count a finished piece of expected cost `cost`; returns `result` (to wrap a call that did it)."""
        self.spent += cost
        self.bar.update(100.0 * cost / (self.total or 1.0))
        return result

    def label(self, text: str):
        self.bar.set_postfix_str(text, refresh=False)

    def __enter__(self) -> Work:
        return self

    def __exit__(self, exc_type, *_):
        self.bar.close()
        if exc_type is None and not math.isclose(self.spent, self.total, rel_tol=1e-6):
            msg = (
                f"{self.desc}: the pieces of work done cost {self.spent:.6g}, the plan said {self.total:.6g}"
            )
            warnings.warn(msg, PlanWarning, stacklevel=2)


def weighted(
    units: Iterable[T],
    cost: Callable[[T], float],
    desc: str,
    enabled: bool = True,
    label: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield each of `units`; once the loop body is done with one, count its `cost(unit)` on a `Work` bar
    over their summed cost. `label(unit)` names the running unit on the bar."""
    units = list(units)
    costs = [float(cost(u)) for u in units]
    with Work(sum(costs), desc, enabled) as work:
        for u, c in zip(units, costs):
            if label is not None:
                work.label(label(u))
            yield u
            work.done(c)
