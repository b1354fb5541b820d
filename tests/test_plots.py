"""Plot helpers: bands are mean ± sd over seeds, figures without titles or labels are refused."""

import numpy as np
import pytest

from lab.viz import plots


def test_band_is_mean_and_sample_sd_of_the_members_that_did_not_diverge(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    ys = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0], [5.0, 6.0, 7.0]])  # member 0 diverged after x = 1
    line = plots.band(ax, np.arange(3), ys, "runs")
    np.testing.assert_allclose(line.get_ydata(), [4.0, 5.0, 6.0])  # members 1 and 2 only, at every x
    (poly,) = ax.collections
    top = poly.get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(6.0 + np.std([5.0, 7.0], ddof=1))
    assert line.get_label() == "runs (n=2, 1 diverged: ×)"
    trace, cross = ax.lines[1:]  # the diverged member alone, and an × at its last finite point
    np.testing.assert_array_equal(trace.get_ydata(), ys[0])
    assert cross.get_marker() == "x" and (list(cross.get_xdata()), list(cross.get_ydata())) == ([1], [2.0])
    plots.finish(ax, "t", "step", "loss (nats)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["runs (n=2, 1 diverged: ×)"]
    path = plots.save(fig, tmp_path / "ok.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_member_marked_diverged_never_moves_the_band():
    _, axes = plots.figure(ncols=2)
    ok = np.array([[3.0, 4.0, 5.0], [5.0, 6.0, 7.0]])
    blown = np.array([[4.0, 1e6, 1e7]])  # finite, but marked: e.g. ended above the untrained loss
    clean = plots.band(axes[0, 0], np.arange(3), ok, "runs")
    marked = plots.band(
        axes[0, 1], np.arange(3), np.vstack([ok, blown]), "runs", diverged=[0, 0, 1], why="failed"
    )
    np.testing.assert_array_equal(marked.get_ydata(), clean.get_ydata())
    np.testing.assert_array_equal(
        axes[0, 1].collections[0].get_paths()[0].vertices, axes[0, 0].collections[0].get_paths()[0].vertices
    )
    assert marked.get_label() == "runs (n=2, 1 failed: ×)"
    assert list(axes[0, 1].lines[-1].get_ydata()) == [1e7]  # the × at its last value
    everyone = plots.band(axes[0, 1], np.arange(3), np.full((2, 3), np.nan), "gone")  # diverged at once
    assert np.isnan(everyone.get_ydata()).all() and everyone.get_label() == "gone (n=0, 2 diverged: ×)"


def test_bands_on_one_axes_take_successive_line_styles_and_say_when_they_coincide():
    _, axes = plots.figure()
    ax, x, ys = axes[0, 0], np.arange(3), np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    lines = [plots.band(ax, x, ys, "a"), plots.band(ax, x, ys + 1, "b"), plots.band(ax, x, ys.copy(), "c")]
    styles = [line.get_linestyle() for line in lines]
    assert len(set(styles)) == 3 and styles[0] == "-"
    assert [line.get_label() for line in lines] == ["a (n=2)", "b (n=2)", "c (n=2) ≡ a"]


def _shown(axis, minor=False) -> list[str]:
    """The tick label texts drawn inside the axis's view (matplotlib also keeps ticks just outside)."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_minor_ticks() if minor else axis.get_major_ticks()
    return [t.label1.get_text() for t in ticks if lo <= t.get_loc() <= hi and t.label1.get_text()]


def test_saved_log_axes_are_labelled_in_plain_numbers(tmp_path):
    fig, axes = plots.figure(ncols=3)
    few, many, sym = axes[0]
    few.plot([1e-3, 100], [2.7, 5.5], label="x")
    few.set(xscale="log", yscale="log", xlim=(1e-3, 100), ylim=(2.7, 5.5))  # y: under a decade
    many.plot([1, 1e9], [1e-6, 1], label="x")
    many.set(xscale="log", yscale="log", xlim=(1, 1e9), ylim=(1e-6, 1))
    sym.plot([0, 1], [-10, 10], label="x")
    sym.set_yscale("symlog", linthresh=0.1)
    sym.set_ylim(-10, 10)
    for ax in axes[0]:
        plots.finish(ax, "t", "x (a.u.)", "y (a.u.)")
    plots.save(fig, tmp_path / "log.png")
    assert _shown(few.xaxis) == ["0.001", "0.01", "0.1", "1", "10", "100"]
    assert _shown(few.yaxis) == [] and _shown(few.yaxis, minor=True) == ["3", "4", "5"]  # the minors
    assert _shown(many.xaxis) == ["1", "100", "10000", "1e6", "1e8"]
    assert _shown(many.yaxis)[:3] == ["1e−6", "1e−5", "0.0001"] and _shown(many.yaxis, minor=True) == []
    assert _shown(sym.yaxis) == ["−10", "−1", "−0.1", "0", "0.1", "1", "10"]  # U+2212, as on linear axes
    every = [t for ax in axes[0] for a in (ax.xaxis, ax.yaxis) for m in (False, True) for t in _shown(a, m)]
    assert not [t for t in every if "$" in t or "×" in t or "^" in t]  # no mathtext: 10^{-2}, 5×10^0


def test_tick_labels_set_by_hand_survive_save(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    ax.plot([1, 2, 4], [1.0, 10.0, 100.0], label="x")
    plots.log_axes(ax, 2, xticks=[1, 2, 4])
    plots.finish(ax, "t", "n (tokens)", "time (ms)")
    plots.save(fig, tmp_path / "fixed.png")
    assert _shown(ax.xaxis) == ["1", "2", "4"] and _shown(ax.yaxis) == ["1", "10", "100"]


def test_bars_on_a_log_value_axis_are_refused(tmp_path):
    fig, axes = plots.figure(ncols=2)
    plots.bars(axes[0, 0], ["a", "b"], [[1.0, 2.0], [3.0, 4.0]], "2 seeds")
    axes[0, 0].set_yscale("log")
    axes[0, 1].barh([0, 1], [10.0, 100.0], label="x")
    for ax in axes[0]:
        plots.finish(ax, "t", "group", "value (a.u.)")
    with pytest.raises(ValueError, match="bars on a log-scaled value axis in 't'"):
        plots.save(fig, tmp_path / "bad.png")
    axes[0, 0].set_yscale("linear")
    axes[0, 1].set_xscale("log")  # horizontal bars: their value axis is x
    with pytest.raises(ValueError, match="bars on a log-scaled value axis"):
        plots.save(fig, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    fig, axes = plots.figure()
    axes[0, 0].barh([1, 10], [10.0, 100.0], label="x")
    axes[0, 0].set_yscale("log")  # the category axis may be log: bar lengths still start at 0
    plots.finish(axes[0, 0], "t", "value (a.u.)", "group")
    assert plots.save(fig, tmp_path / "ok.png").read_bytes()[:4] == b"\x89PNG"


def test_unlabelled_plots_are_refused(tmp_path):
    fig, axes = plots.figure()
    axes[0, 0].plot([0, 1], [0, 1], label="x")
    with pytest.raises(ValueError, match="title and labelled axes"):
        plots.save(fig, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    fig, axes = plots.figure()
    with pytest.raises(ValueError, match="nothing to put in its legend"):
        plots.finish(axes[0, 0], "t", "x", "y")


def test_bars_are_mean_and_sample_sd_per_group(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    bars = plots.bars(ax, ["a", "b"], [[1.0, 3.0], [2.0, np.nan, 4.0]], "2 seeds", rotation=90)
    assert [b.get_height() for b in bars] == [2.0, 3.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert ax.get_xticklabels()[0].get_rotation() == 90
    segments = bars.errorbar.lines[2][0].get_segments()  # the error bars: ± the sample sd (ddof=1)
    assert [s[1, 1] - s[0, 1] for s in segments] == pytest.approx([2 * np.sqrt(2.0), 2 * np.sqrt(2.0)])
    plots.finish(ax, "t", "group", "value (a.u.)")
    assert plots.save(fig, tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"


def test_heatmaps_draw_every_map_with_its_title_and_ticks(tmp_path):
    maps = np.random.default_rng(0).random((2, 3, 4, 4))
    titles = [[f"r{r} c{c}" for c in range(3)] for r in range(2)]
    fig = plots.heatmaps(maps, titles, "key", "query", "weight", 2.0, 2.0, ticks=list("wxyz"), fontsize=7)
    axes = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert len(axes) == 6 and len(fig.axes) == 7  # six maps and one colorbar
    assert axes[5].get_title() == "r1 c2" and axes[5].title.get_fontsize() == 7
    np.testing.assert_array_equal(axes[4].images[0].get_array(), maps[1, 1])
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list("wxyz")
    assert plots.save(fig, tmp_path / "maps.png").read_bytes()[:4] == b"\x89PNG"


def test_log_axes_scales_and_labels_ticks_as_given():
    fig, axes = plots.figure()
    ax = axes[0, 0]
    ax.plot([1, 2, 4], [1.0, 10.0, 100.0], label="x")
    plots.log_axes(ax, 2, xticks=[1, 2, 4])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.xaxis.get_transform().base == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    fig, axes = plots.figure()
    plots.log_axes(axes[0, 0], 10, ylog=False)
    assert axes[0, 0].get_xscale() == "log" and axes[0, 0].get_yscale() == "linear"


def test_token_visualizer_png_grows_with_the_rows_it_shows(tmp_path):
    import struct

    from lab.viz.tokens import write_png

    pieces = [(i, "ab") for i in range(40)]  # 40 two-column tokens: two lines at width 72
    short = write_png(tmp_path / "short.png", [("one", pieces)])
    tall = write_png(tmp_path / "tall.png", [("one", pieces), ("two", pieces * 3)])
    size = lambda p: struct.unpack(">II", p.read_bytes()[16:24])  # (width, height) from the PNG header
    assert size(short)[0] == size(tall)[0] and size(tall)[1] > size(short)[1]


def test_violins_from_stored_statistics_draw_what_violinplot_draws_from_the_values():
    groups = np.random.default_rng(0).normal(size=(3, 200)) * np.array([[0.5], [1.0], [4.0]])
    stats = plots.violin_stats(groups)
    assert set(stats) == set(plots.VIOLIN_KEYS) and stats["coords"].shape == (3, 100)
    np.testing.assert_allclose(stats["mean"], groups.mean(axis=1))
    _, axes = plots.figure(ncols=2)
    axes[0, 0].violinplot(list(groups), positions=np.arange(3), showextrema=False)
    plots.violins(axes[0, 1], stats)
    want, got = axes[0, 0].collections, axes[0, 1].collections
    assert len(got) == len(want) == 3
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a.get_paths()[0].vertices, b.get_paths()[0].vertices)


def test_points_are_mean_and_sample_sd_and_take_a_line_style():
    fig, axes = plots.figure()
    bars = plots.points(axes[0, 0], [1, 2], [[1.0, 3.0], [2.0, np.nan, 4.0]], "2 seeds", linestyle="--")
    line, _, (errors,) = bars.lines
    assert list(line.get_ydata()) == [2.0, 3.0]
    assert line.get_linestyle() == "--" and line.get_marker() == "o" and bars.get_label() == "2 seeds"
    assert [s[1, 1] - s[0, 1] for s in errors.get_segments()] == pytest.approx([2 * np.sqrt(2.0)] * 2)
    assert len(axes[0, 0].lines) == 1 + 2  # the line and its caps; NaN not called a divergence unasked
    second = plots.points(axes[0, 0], [1, 2], [[1.0], [2.0]], "other")
    assert second.lines[0].get_marker() == plots.MARKERS[1]  # the next series: the next marker


def test_points_mark_and_count_diverged_runs_without_averaging_them(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    groups = [[1.0, 3.0, np.nan], [2.0, 4.0], [np.inf, np.nan]]
    bars = plots.points(ax, [1, 2, 3], groups, "loss", diverged=True)
    assert list(bars.lines[0].get_ydata())[:2] == [2.0, 3.0] and np.isnan(bars.lines[0].get_ydata()[2])
    (cross,) = [line for line in ax.lines if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == [1, 3] and list(cross.get_ydata()) == [1.0, 1.0]  # the top edge
    assert cross.get_label() == "loss: 3 diverged, not averaged (×, count/runs)"
    assert [t.get_text() for t in ax.texts] == ["1/3", "2/2"]
    plots.finish(ax, "t", "lr", "loss (nats)")
    assert plots.save(fig, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_finish_can_put_the_legend_beside_the_axes(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], label="x")
    plots.finish(ax, "t", "x (a.u.)", "y (a.u.)", outside=True)
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # covers no data


def test_category_maps_draw_each_category_in_its_color_with_a_legend(tmp_path):
    from matplotlib.colors import to_rgba

    colors = ["#d62728", "#2ca02c", "#ffffff"]
    maps = {"first": np.array([[0, 1], [2, 2]]), "second": np.array([[2, 0], [1, 0]])}
    fig = plots.category_maps(maps, colors, ["a", "b", "c"], "position", "step", width=2.0, height=2.0)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["first", "second"] and axes[1].get_xlabel() == "position"
    image = axes[1].images[0]
    rgba = image.cmap(image.norm(image.get_array()))  # the color each cell is drawn in
    assert tuple(rgba[0, 0]) == to_rgba(colors[2]) and tuple(rgba[0, 1]) == to_rgba(colors[0])
    assert tuple(rgba[1, 0]) == to_rgba(colors[1])
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["a", "b", "c"]
    assert axes[1].get_legend() is None
    assert plots.save(fig, tmp_path / "maps.png").read_bytes()[:4] == b"\x89PNG"


def test_panel_finishes_and_saves_its_axes_and_saves_nothing_when_the_block_fails(tmp_path):
    with plots.panel(tmp_path / "p.png", "t", "step", "loss (nats)", width=3.0, height=2.0) as ax:
        ax.plot([0, 1], [1.0, 0.5], label="run")
        fig = ax.figure
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("t", "step", "loss (nats)")
    assert ax.get_legend() is not None and tuple(fig.get_size_inches()) == (3.0, 2.0)
    with pytest.raises(ValueError, match="nothing to put in its legend"):  # finish's refusal comes through
        with plots.panel(tmp_path / "empty.png", "t", "x", "y"):
            pass
    with pytest.raises(KeyError):
        with plots.panel(tmp_path / "failed.png", "t", "x", "y", legend=False) as ax:
            ax.plot([0, 1], [0, 1])
            raise KeyError("drawing failed")
    assert not (tmp_path / "empty.png").exists() and not (tmp_path / "failed.png").exists()


def test_grouped_bars_put_each_series_side_by_side_with_mean_and_sd(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    series = {"before": [[1.0, 3.0], None, [5.0, 5.0]], "after": [[2.0, 2.0], [4.0, 6.0], [np.nan, 8.0]]}
    plots.grouped_bars(ax, ["a", "b", "c"], series, capsize=2, rotation=45)
    before, after = ax.patches[:3], ax.patches[3:]  # the bars, series by series
    assert [b.get_x() + b.get_width() / 2 for b in before] == pytest.approx([-0.2, 0.8, 1.8])
    assert [b.get_x() + b.get_width() / 2 for b in after] == pytest.approx([0.2, 1.2, 2.2])
    assert [b.get_width() for b in before] == pytest.approx([0.4] * 3)
    heights = [b.get_height() for b in before]
    assert heights[0] == 2.0 and np.isnan(heights[1]) and heights[2] == 5.0  # None: no bar
    assert [b.get_height() for b in after] == [2.0, 5.0, 8.0]  # NaN (a diverged seed) left out
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    plots.finish(ax, "t", "variant", "loss (nats)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert plots.save(fig, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_plots_of_an_experiment_whose_members_all_diverged_still_save(tmp_path):
    x = np.array([1, 10, 100])
    nan = np.full((3, 3), np.nan)  # every member non-finite from the first logged step
    with plots.panel(tmp_path / "band.png", "loss", "step", "loss (nats)") as ax:
        line = plots.band(ax, x, nan, "all", marker="o")
        plots.log_axes(ax)  # log axes with no finite value to scale
    assert line.get_label() == "all (n=0, 3 diverged: ×)"
    with plots.panel(tmp_path / "points.png", "final", "lr", "loss (nats)") as ax:
        plots.points(ax, x, list(nan.T), "all", diverged=True)
        plots.log_axes(ax)
    with plots.panel(tmp_path / "bars.png", "final", "variant", "loss (nats)") as ax:
        plots.bars(ax, ["a", "b", "c"], list(nan.T), "all")
    for name in ("band", "points", "bars"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
