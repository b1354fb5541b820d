"""Plot helpers: bands are mean ± sd over seeds, figures without titles or labels are refused."""

import numpy as np
import pytest

from lab.viz import plots


def test_band_is_mean_and_sample_sd_and_skips_diverged(tmp_path):
    fig, axes = plots.figure()
    ax = axes[0, 0]
    ys = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0], [5.0, 6.0, 7.0]])
    line = plots.band(ax, np.arange(3), ys, "runs")
    np.testing.assert_allclose(line.get_ydata(), [3.0, 4.0, 6.0])
    (poly,) = ax.collections
    top = poly.get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(6.0 + np.std([5.0, 7.0], ddof=1))
    assert line.get_label() == "runs (n=3)"
    plots.finish(ax, "t", "step", "loss (nats)")
    path = plots.save(fig, tmp_path / "ok.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_unlabelled_plots_are_refused(tmp_path):
    fig, axes = plots.figure()
    axes[0, 0].plot([0, 1], [0, 1], label="x")
    with pytest.raises(ValueError, match="title and labelled axes"):
        plots.save(fig, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    fig, axes = plots.figure()
    with pytest.raises(ValueError, match="nothing to put in its legend"):
        plots.finish(axes[0, 0], "t", "x", "y")


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
