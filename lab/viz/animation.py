"""3-D animations written with matplotlib's animation writers (a GIF via PillowWriter, which needs only
Pillow, a matplotlib dependency), and a static PNG frame of the same figure for reports."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from lab.fileio import atomic_write_bytes
from lab.viz import plots


def trajectories_3d(
    path_gif: str | Path,
    path_png: str | Path,
    panels: dict[str, dict[str, np.ndarray]],
    title: str,
    axis_labels: tuple[str, str, str],
    fps: int = 6,
) -> tuple[Path, Path]:
    """Animate points moving along 3-D trajectories, one subplot per panel.

    panels: {panel title: {series label: (N, 3) array}}; frame n shows every series' path up to point n
    and a marker at point n. The PNG is the last frame (whole paths). Both files are written atomically.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    plt.rcParams.update(plots.STYLE)
    n = max(len(a) for series in panels.values() for a in series.values())
    fig = plt.figure(figsize=(5.0 * len(panels), 4.6))
    artists = []
    for i, (name, series) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        pts = np.concatenate(list(series.values()))
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.05 * (hi - lo + 1e-9)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_zlim(lo[2] - pad[2], hi[2] + pad[2])
        ax.set_title(name)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_zlabel(axis_labels[2])
        for label, xyz in series.items():
            (line,) = ax.plot([], [], [], label=label, linewidth=1.2)
            (dot,) = ax.plot([], [], [], "o", color=line.get_color(), markersize=5)
            artists.append((line, dot, np.asarray(xyz, np.float64)))
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    fig.suptitle(title)

    def draw(frame):
        for line, dot, xyz in artists:
            k = min(frame, len(xyz) - 1)
            line.set_data_3d(xyz[: k + 1, 0], xyz[: k + 1, 1], xyz[: k + 1, 2])
            dot.set_data_3d(xyz[k : k + 1, 0], xyz[k : k + 1, 1], xyz[k : k + 1, 2])
        return [a for line, dot, _ in artists for a in (line, dot)]

    anim = FuncAnimation(fig, draw, frames=n, blit=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_gif = Path(tmp) / "anim.gif"
        anim.save(tmp_gif, writer=PillowWriter(fps=fps))
        atomic_write_bytes(path_gif, tmp_gif.read_bytes())
    draw(n - 1)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path_png, buf.getvalue())
    return Path(path_gif), Path(path_png)
