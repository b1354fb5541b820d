"""Matplotlib helpers: one house style, mean ± sd bands over seeds, and atomic PNG writes.

Every figure gets a title, axis labels with units and a legend; `finish` refuses to save one without.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import cbook  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

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


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 3.8):
    """A new figure with the house style and a (nrows, ncols) array of axes."""
    plt.rcParams.update(STYLE)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)


def band(ax, x, ys, label: str, color=None, marker=None):
    """Mean line with a ± 1 sd band over the rows of `ys` (seeds x points); NaNs (diverged) are skipped."""
    ys = np.asarray(ys, dtype=np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (every seed diverged) are expected
        n = np.sum(np.isfinite(ys), axis=0)
        mean = np.where(n > 0, np.nanmean(np.where(np.isfinite(ys), ys, np.nan), axis=0), np.nan)
        sd = np.where(n > 1, np.nanstd(np.where(np.isfinite(ys), ys, np.nan), axis=0, ddof=1), 0.0)
    (line,) = ax.plot(
        x, mean, label=f"{label} (n={int(n.max()) if n.size else 0})", color=color, marker=marker
    )
    ax.fill_between(x, mean - sd, mean + sd, alpha=0.2, color=line.get_color(), linewidth=0)
    return line


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample sd (ddof=1) of the finite values; NaN where there are too few (0, or 1 for sd)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return (float(v.mean()) if v.size else np.nan), (float(v.std(ddof=1)) if v.size > 1 else np.nan)


def points(ax, x, groups, label: str, **style):
    """Mean ± sd (error bars) of each group of per-seed values, one point per x; `style` goes to
    matplotlib's errorbar (e.g. linestyle="--")."""
    s = [mean_sd(g) for g in groups]
    return ax.errorbar(
        x, [m for m, _ in s], yerr=[sd for _, sd in s], marker="o", capsize=3, label=label, **style
    )


def finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        handles, _ = ax.get_legend_handles_labels()
        if not handles:
            raise ValueError(f"plot {title!r} has nothing to put in its legend")
        ax.legend(loc="best", frameon=False)


def colorbar(fig, mappable, ax, label: str):
    """A colorbar with its quantity and unit as label."""
    cb = fig.colorbar(mappable, ax=ax)
    cb.set_label(label)
    return cb


def save(fig, path: str | Path) -> Path:
    """Write a PNG atomically and close the figure."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":  # matplotlib's name for colorbar axes; labelled via `colorbar`
            continue
        if (
            ax.get_visible()
            and ax.has_data()
            and not (ax.get_title() and ax.get_xlabel() and ax.get_ylabel())
        ):
            raise ValueError(f"refusing to save {path}: every plot needs a title and labelled axes")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


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
