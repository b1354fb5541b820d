"""Token visualizer: a text with each token's span coloured and its id shown, as HTML and as a PNG.

A token is a run of bytes, and a byte-level BPE can cut a multi-byte character between two tokens. The
text of each token here is what an incremental UTF-8 decoder yields once that token's bytes arrive, so
a character is shown on the token that completes it, and a token that only starts one shows as "·".
Colours cycle through a fixed palette by position, so neighbouring tokens always differ; the id is
printed under each span.
"""

from __future__ import annotations

import html as html_lib
from pathlib import Path

from lab.fileio import atomic_write_text
from lab.tokenizer import PieceDecoder

PALETTE = ["#fde2a7", "#b9e3c6", "#b7d3f2", "#f5c0c0", "#d9c8f0", "#c8ecee"]
SHOW = {"\n": "↵", "\t": "→", " ": "␣"}


def token_pieces(tok, text: str) -> list[tuple[int, str]]:
    """(id, displayed text) of each token of `text`; `tok` has encode(text) -> ids and token_bytes(id)."""
    dec = PieceDecoder(tok.token_bytes)
    return [(int(i), dec.next(i)) for i in tok.encode(text)]


def _visible(s: str) -> str:
    return "".join(SHOW.get(c, c) for c in s) if s else "·"


def html_document(title: str, sections: list[tuple[str, list[tuple[str, list[tuple[int, str]]]]]]) -> str:
    """A self-contained HTML page: for each (heading, [(row label, pieces)]) a block of coloured spans."""
    css = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        ".row{font-family:monospace;line-height:2.6;margin:.3em 0 1em}"
        ".t{padding:2px 1px;border-radius:3px;white-space:pre;position:relative}"
        ".t sub{position:absolute;left:0;top:1.5em;font-size:60%;color:#555}"
        ".label{font-size:85%;color:#333}"
    )
    out = [f"<!doctype html><meta charset='utf-8'><title>{html_lib.escape(title)}</title><style>{css}</style>",
           f"<h1>{html_lib.escape(title)}</h1>"]  # fmt: skip
    for heading, rows in sections:
        out.append(f"<h2>{html_lib.escape(heading)}</h2>")
        for label, pieces in rows:
            n_bytes = sum(len(p.encode("utf-8")) for _, p in pieces)
            out.append(
                f"<div class='label'>{html_lib.escape(label)}: {len(pieces)} tokens, "
                f"{n_bytes / max(len(pieces), 1):.2f} bytes/token</div><div class='row'>"
            )
            for k, (i, piece) in enumerate(pieces):
                shown = html_lib.escape(piece.replace("\n", "↵\n") if piece else "·")
                out.append(
                    f"<span class='t' style='background:{PALETTE[k % len(PALETTE)]}' title='id {i}'>"
                    f"{shown}<sub>{i}</sub></span>"
                )
            out.append("</div>")
    return "\n".join(out) + "\n"


def write_html(path: str | Path, title: str, sections) -> Path:
    atomic_write_text(path, html_document(title, sections))
    return Path(path)


def draw(ax, rows: list[tuple[str, list[tuple[int, str]]]], width: int = 64) -> None:
    """Draw rows of token boxes on `ax` (one block per (label, pieces)), wrapping at `width` columns."""
    from matplotlib.patches import Rectangle

    y = 0.0
    for label, pieces in rows:
        ax.text(0, y, f"{label}  ({len(pieces)} tokens)", fontsize=8, fontweight="bold", va="top")
        y -= 1.2
        x = 0
        for k, (i, piece) in enumerate(pieces):
            shown = _visible(piece)
            w = max(len(shown), len(str(i)) * 0.6)
            if x + w > width and x > 0:
                x, y = 0, y - 2.1
            ax.add_patch(Rectangle((x, y - 1.0), w, 1.0, color=PALETTE[k % len(PALETTE)], linewidth=0))
            ax.text(x + w / 2, y - 0.5, shown, ha="center", va="center", family="monospace", fontsize=8)
            ax.text(x + w / 2, y - 1.45, str(i), ha="center", va="center", fontsize=5, color="#444")
            x += w
        y -= 2.6
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(y, 1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def write_png(path: str | Path, rows: list[tuple[str, list[tuple[int, str]]]], width: int = 72) -> Path:
    """The rows of `draw` as one PNG figure, its height growing with the number of wrapped lines."""
    from lab.viz import plots

    fig, axes = plots.figure(width=10, height=0.55 * sum(2 + len(p) // 14 for _, p in rows))
    draw(axes[0, 0], rows, width=width)
    plots.finish(axes[0, 0], "Token boundaries (colour = one token, number = its id)",
                 "position along the text (monospace columns)", "sample and tokenizer", legend=False)  # fmt: skip
    return plots.save(fig, path)
