"""Matplotlib helpers: one house style, mean ± sd bands over seeds, and atomic PNG writes.

Every figure gets a title, axis labels with units and a legend; `finish` refuses to save one without.
`save`, which writes every PNG, labels every log axis in plain numbers (0.01, 5, 1000, not 10^-2 or 5×10^0)
and refuses bars on a non-linear value axis (a bar's length is its value). Successive curves or point series
on one axes get successive line styles or markers, so curves that coincide stay visible; members that
diverged are drawn apart and counted, never averaged in.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import cbook  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from lab.fileio import atomic_write_bytes  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "legend.fontsize": 8,
}
# successive bands on one axes, then successive point series: equal curves still show each other
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P")
BAND = "band:"  # the gid prefix that marks a band's mean line (then its label)


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 3.8):
    """A new figure with the house style and a (nrows, ncols) array of axes."""
    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def band(ax, x, ys, label: str, color=None, marker=None, diverged=None, why: str = "diverged"):
    """Mean line with a ± 1 sd band over the members (rows of `ys`, members x points) that did not diverge.

    A member diverged if its row has a non-finite value or `diverged` (a boolean per row) marks it; it is
    drawn alone, thin, ending in an × at its last finite point, and counted in the label as `why`
    ("intact (n=2, 1 diverged: ×)"), never averaged into the band. Each band on an axes takes the next of
    LINESTYLES; a mean identical to an earlier band's says so in its label ("swap_qk (n=3) ≡ intact").
    """
    ys = np.asarray(ys, dtype=np.float64).reshape(-1, np.size(x))
    out = ~np.isfinite(ys).all(axis=1)
    if diverged is not None:
        out |= np.asarray(diverged, dtype=bool)
    kept = ys[~out]
    mean = kept.mean(axis=0) if len(kept) else np.full(ys.shape[1], np.nan)
    sd = kept.std(axis=0, ddof=1) if len(kept) > 1 else np.zeros(ys.shape[1])
    bands = _bands(ax)
    same = next((f" ≡ {k}" for k, y in bands.items() if np.array_equal(y, mean, equal_nan=True)), "")
    text = f"{label} (n={len(kept)}" + (f", {out.sum()} {why}: ×)" if out.any() else ")") + same
    style = LINESTYLES[len(bands) % len(LINESTYLES)]
    (line,) = ax.plot(x, mean, label=text, color=color, marker=marker, linestyle=style, gid=BAND + label)
    ax.fill_between(x, mean - sd, mean + sd, alpha=0.2, color=line.get_color(), linewidth=0)
    for row in ys[out]:
        _diverged_trace(ax, x, row, line.get_color())
    return line


def _bands(ax) -> dict[str, np.ndarray]:
    """The mean line of every band already on `ax`, by its label."""
    gids = [(line.get_gid() or "", line) for line in ax.lines]
    return {g[len(BAND) :]: line.get_ydata() for g, line in gids if g.startswith(BAND)}


def _diverged_trace(ax, x, row, color) -> None:
    """One diverged member: its finite values as a thin line, an × at the last of them (at the top edge
    of the axes, at the first x, when it has none)."""
    ok = np.flatnonzero(np.isfinite(row))
    if not ok.size:
        top = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot([x[0]], [1.0], "x", color=color, transform=top, clip_on=False, label="_diverged")
        return
    ax.plot(x, row, color=color, linewidth=0.7, alpha=0.6, label="_diverged")
    ax.plot([x[ok[-1]]], [row[ok[-1]]], "x", color=color, markersize=8, label="_diverged")


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample sd (ddof=1) of the finite values; NaN where there are too few (0, or 1 for sd)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return (float(v.mean()) if v.size else np.nan), (float(v.std(ddof=1)) if v.size > 1 else np.nan)


def points(ax, x, groups, label: str, diverged: bool = False, **style):
    """Mean ± sd (error bars) of the finite values of each group of per-seed values, one point per x;
    `style` goes to matplotlib's errorbar (e.g. linestyle="--"). Each series on an axes takes the next of
    MARKERS unless `style` names one. With `diverged`, the non-finite values are runs that diverged, and
    `mark_diverged` shows where and how many (otherwise they may mean "not measured")."""
    s = [mean_sd(g) for g in groups]
    k = sum(isinstance(c, ErrorbarContainer) for c in ax.containers)
    style.setdefault("marker", MARKERS[k % len(MARKERS)])
    bars = ax.errorbar(x, [m for m, _ in s], yerr=[sd for _, sd in s], capsize=3, label=label, **style)
    if diverged:
        mark_diverged(ax, x, groups, bars.lines[0].get_color(), label)
    return bars


def mark_diverged(ax, x, groups, color, label: str) -> None:
    """An × on the top edge of the axes at each x whose group has non-finite (diverged) values, with the
    count under it ("2/3": diverged/runs), and one legend entry for them; nothing when all are finite."""
    counts = [(xi, int(np.sum(~np.isfinite(np.asarray(g, float)))), np.size(g)) for xi, g in zip(x, groups)]
    marked = [(xi, k, n) for xi, k, n in counts if k]
    if not marked:
        return
    top = blended_transform_factory(ax.transData, ax.transAxes)  # x as data, y as axes fraction: 1 = top
    xs = [xi for xi, _, _ in marked]
    label = f"{label}: {sum(k for _, k, _ in marked)} diverged, not averaged (×, count/runs)"
    ax.plot(xs, [1.0] * len(xs), "x", color=color, label=label, transform=top, clip_on=False)
    text = dict(xycoords=top, xytext=(0, -12), textcoords="offset points", ha="center", fontsize=7)
    for xi, k, n in marked:
        ax.annotate(f"{k}/{n}", (xi, 1.0), color=color, **text)


def finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True, outside: bool = False):
    """Title and axis labels, and a legend of what is drawn: placed where it covers least data ("best"),
    or with `outside` to the right of the axes, where it covers none. Refuses an empty legend."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            raise ValueError(f"plot {title!r} has nothing to put in its legend")
        beside = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0}
        ax.legend(frameon=False, **(beside if outside else {"loc": "best"}))


def colorbar(fig, mappable, ax, label: str):
    """A colorbar with its quantity and unit as label."""
    cb = fig.colorbar(mappable, ax=ax)
    cb.set_label(label)
    return cb


def save(fig, path: str | Path) -> Path:
    """Write a PNG atomically and close the figure, every log axis labelled in plain numbers
    (`plain_log_ticks`). Refuses (ValueError) an axes with data but no title or axis labels, and bars on a
    log value axis."""
    for ax in fig.axes:
        _log_axes_without_data(ax)
        plain_log_ticks(ax)
        if ax.get_label() == "<colorbar>":  # matplotlib's name for colorbar axes; labelled via `colorbar`
            continue
        if (
            ax.get_visible()
            and ax.has_data()
            and not (ax.get_title() and ax.get_xlabel() and ax.get_ylabel())
        ):
            raise ValueError(f"refusing to save {path}: every plot needs a title and labelled axes")
        _refuse_log_bars(ax, path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _log_axes_without_data(ax) -> None:
    """Give a log axis with no positive finite value to show (every member diverged: all NaN) the range
    1..10, so the figure still draws (matplotlib cannot place log ticks without data) and shows the
    × markers of the diverged runs on an empty axes."""
    for axis, minpos, set_lim in (
        (ax.xaxis, ax.dataLim.minposx, ax.set_xlim),
        (ax.yaxis, ax.dataLim.minposy, ax.set_ylim),
    ):
        if axis.get_scale() == "log" and not (np.isfinite(minpos) and minpos > 0):
            set_lim(1, 10)


def _refuse_log_bars(ax, path) -> None:
    """ValueError if `ax` has bars whose value axis (y for vertical bars, x for horizontal) is not linear:
    a bar's length shows its value only from a zero a log axis does not have."""
    for c in ax.containers:
        if isinstance(c, BarContainer):
            axis = ax.xaxis if c.orientation == "horizontal" else ax.yaxis
            if axis.get_scale() != "linear":
                raise ValueError(
                    f"refusing to save {path}: bars on a {axis.get_scale()}-scaled value axis in "
                    f"{ax.get_title()!r}; draw points with error bars (plots.points) or use a linear axis"
                )


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain numbers: 0.01, 5, 1000 (1e-5 and 1e6 beyond), on the ticks
    matplotlib's LogFormatter labels (decades; minor ticks too when the axis spans few decades)."""

    def __call__(self, x, pos=None):
        if not super().__call__(x, pos):
            return ""
        digits, _, exponent = f"{x:g}".partition("e")
        return self.fix_minus(f"{digits}e{int(exponent)}" if exponent else digits)  # − as on linear axes


def plain_log_ticks(ax) -> None:
    """Swap matplotlib's default log-axis labels (mathtext: 10⁻², 5×10⁰) for `PlainLogFormatter` on every
    log or symlog axis of `ax`, majors and minors; tick labels set by hand (fixed formatters) are kept."""
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() not in ("log", "symlog"):
            continue
        base = axis.get_transform().base
        for get, put in (
            (axis.get_major_formatter, axis.set_major_formatter),
            (axis.get_minor_formatter, axis.set_minor_formatter),
        ):
            old = get()
            if isinstance(old, LogFormatter) and not isinstance(old, PlainLogFormatter):
                put(PlainLogFormatter(base, labelOnlyBase=old.labelOnlyBase))


def bars(ax, names, groups, label: str, capsize: float = 3, **tick_kw):
    """Mean ± sd (error bars) of each group of per-seed values, one bar per name; `tick_kw` styles the
    names (e.g. rotation=90)."""
    s = [mean_sd(g) for g in groups]
    xs = np.arange(len(names))
    bars_ = ax.bar(xs, [m for m, _ in s], yerr=[sd for _, sd in s], capsize=capsize, label=label)
    ax.set_xticks(xs, names, **tick_kw)
    return bars_


def heatmaps(
    maps,
    titles,
    xlabel: str,
    ylabel: str,
    cbar_label: str,
    width: float,
    height: float,
    ticks=None,
    **title_kw,
):
    """A figure of (rows, cols) heatmaps of values in [0, 1] (e.g. attention maps), `maps` shaped
    (rows, cols, Y, X), `titles[r][c]` each; one colorbar beside the top-right one. `ticks` labels both
    axes of every map (small, the x labels vertical); `title_kw` styles the titles (e.g. fontsize=7)."""
    rows, cols = len(maps), len(maps[0])
    fig, axes = figure(ncols=cols, nrows=rows, width=width, height=height)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            im = ax.imshow(maps[r][c], cmap="viridis", vmin=0, vmax=1)
            ax.grid(False)
            if ticks is not None:
                ax.set_xticks(range(len(ticks)), ticks, fontsize=4, rotation=90)
                ax.set_yticks(range(len(ticks)), ticks, fontsize=4)
            ax.set_title(titles[r][c], **title_kw)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    colorbar(fig, im, axes[0, -1], cbar_label)
    return fig


def log_axes(ax, xbase: float = 10, ylog: bool = True, xticks=None):
    """A log-scaled x axis (base `xbase`) and, with `ylog`, y axis (base 10); `xticks`: put ticks at these
    x values, labelled as they are (e.g. 1, 2, 4 rather than 2^0, 2^1, 2^2)."""
    ax.set_xscale("log", base=xbase)
    if ylog:
        ax.set_yscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks), [str(x) for x in xticks])


VIOLIN_KEYS = ("coords", "vals", "mean", "median", "min", "max")  # what Axes.violin needs of each violin


def violin_stats(groups, points: int = 100) -> dict[str, np.ndarray]:
    """Matplotlib's violin statistics of each group of values (a Gaussian KDE at `points` points, Scott's
    bandwidth, as `Axes.violinplot` computes them), one row per group under each of VIOLIN_KEYS: what
    `violins` draws, and small enough to store in place of the values (measure in `run`, draw in
    `analyze` without the data)."""
    stats = cbook.violin_stats(list(groups), ("GaussianKDE", None), points=points)
    return {k: np.stack([s[k] for s in stats]) for k in VIOLIN_KEYS}


def violins(ax, stats: dict) -> None:
    """One violin per row of `violin_stats` output, at x = 0, 1, ..., without extrema lines."""
    n = len(stats["mean"])
    vpstats = [{k: stats[k][i] for k in VIOLIN_KEYS} | {"quantiles": []} for i in range(n)]
    ax.violin(vpstats, positions=np.arange(n), showextrema=False)


def category_maps(maps: dict, colors, names, xlabel: str, ylabel: str, width: float, height: float):
    """A row of maps of category indices (0 .. len(colors) - 1, e.g. the state of every cache row at every
    decode step), one per item of `maps` ({title: (Y, X) array}), category i drawn in colors[i]; a legend
    of the categories (`names`) on the first map."""
    fig, axes = figure(ncols=len(maps), width=width, height=height)
    cmap = ListedColormap(colors)
    for ax, (title, m) in zip(axes[0], maps.items()):
        ax.imshow(m, cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, aspect="auto", interpolation="nearest")
        ax.grid(False)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    handles = [Patch(facecolor=c, edgecolor="k", label=name) for c, name in zip(colors, names)]
    axes[0, 0].legend(handles=handles, loc="upper right", fontsize=7)
    return fig


@contextlib.contextmanager
def panel(path, title: str, xlabel: str, ylabel: str, legend: bool = True, **figure_kw):
    """A one-axes figure as a `with` block: yields the axes to draw on, then `finish`es them (title, axis
    labels, legend) and saves the PNG to `path`; `figure_kw` sizes it (width=, height=). Nothing is saved
    if the block raises."""
    fig, axes = figure(**figure_kw)
    try:
        yield axes[0, 0]
        finish(axes[0, 0], title, xlabel, ylabel, legend)
    except BaseException:
        plt.close(fig)
        raise
    save(fig, path)


def grouped_bars(ax, names, series: dict, capsize: float = 3, **tick_kw):
    """Bars side by side: for each name, one bar per series, the mean ± sd (error bars) of that name's
    per-seed values. `series` maps a label to one group of values per name (None: no bar there); bars of
    one name share 0.8 of the axis unit; `tick_kw` styles the names (e.g. rotation=45, ha="right")."""
    xs, width = np.arange(len(names)), 0.8 / len(series)
    for k, (label, groups) in enumerate(series.items()):
        s = [(np.nan, 0.0) if g is None else mean_sd(g) for g in groups]
        dx = (k - (len(series) - 1) / 2) * width
        ax.bar(xs + dx, [m for m, _ in s], width, yerr=[sd for _, sd in s], label=label, capsize=capsize)
    ax.set_xticks(xs, names, **tick_kw)
