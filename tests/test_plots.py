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


def test_token_visualizer_png_grows_with_the_rows_it_shows(tmp_path):
    import struct

    from lab.viz.tokens import write_png

    pieces = [(i, "ab") for i in range(40)]  # 40 two-column tokens: two lines at width 72
    short = write_png(tmp_path / "short.png", [("one", pieces)])
    tall = write_png(tmp_path / "tall.png", [("one", pieces), ("two", pieces * 3)])
    size = lambda p: struct.unpack(">II", p.read_bytes()[16:24])  # (width, height) from the PNG header
    assert size(short)[0] == size(tall)[0] and size(tall)[1] > size(short)[1]
