"""Progress bars for long work (tqdm), so that what `lab run` shows counts work of similar cost and its
ETA is honest.

    bar = progress_bar(total, "e09 MHA", enabled, unit="step", initial=resumed_step)  # equal units
    for job in counted(jobs, "e09 MHA compiling", enabled, unit="program"): job()
    for unit in weighted(units, cost, "e06", enabled): ...                      # units of unequal cost

`weighted` advances its bar by each unit's expected cost (in any one unit, e.g. estimated seconds) once the
loop body has finished with it, and shows the percentage of the summed cost, so a few units of very
different size (a measurement grid) give an ETA in expected work rather than in unit counts. Its rate is the
mean since the start (tqdm's smoothing off): a cost model is right on average, not unit by unit, so the
mean over the units done so far is its best estimate of the rate. Imports no JAX.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
# Percent of the expected work, elapsed < remaining, and what is running now (the postfix).
WEIGHTED_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"


def progress_bar(total: float, desc: str, enabled: bool = True, **kw) -> tqdm:
    """A tqdm bar to stderr that vanishes when closed. In a terminal it redraws up to ten times a second; in
    a log file, where every redraw is a line of noise, at most every 10 s."""
    kw.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 10.0)
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False, **kw)


def counted(items: Iterable[T], desc: str, enabled: bool = True, unit: str = "it") -> Iterator[T]:
    """Yield each of `items` on a bar that counts them (for items of similar cost)."""
    items = list(items)
    with progress_bar(len(items), desc, enabled, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def weighted(
    units: Iterable[T],
    cost: Callable[[T], float],
    desc: str,
    enabled: bool = True,
    label: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Yield each of `units`; once the loop body is done with one, advance the bar by its share of the
    summed `cost` (shown as a percentage). `label(unit)` names the running unit in the postfix."""
    units = list(units)
    costs = [float(cost(u)) for u in units]
    total = sum(costs) or 1.0
    with progress_bar(100.0, desc, enabled, bar_format=WEIGHTED_FORMAT, smoothing=0.0) as bar:
        for u, c in zip(units, costs):
            if label is not None:
                bar.set_postfix_str(label(u), refresh=False)
            yield u
            bar.update(100.0 * c / total)
