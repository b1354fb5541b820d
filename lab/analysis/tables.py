"""Markdown tables and the record of what an analysis wrote.

    outs = Outputs(out)                                # out = results/<experiment>
    t = Table("Final validation loss", ["variant", "val loss"], note="3 seeds; nats/token")
    t.add("intact", summarize(x).fmt())
    outs.table("variants.md", t)                       # writes out/tables/variants.md, records it
    plots.save(fig, outs.plot("curves.png"))           # out/plots/curves.png, recorded
    return outs.findings(verdict, summary, findings)   # Findings with every table and plot listed

A table renders as

    ### title
    <blank>
    note            (if any, then a blank line)
    | a | b |
    |---|---|
    | 1 | 2 |
    <blank>         (if `after` text follows the rows)
    after
"""

from __future__ import annotations

from pathlib import Path

from lab.analysis.findings import Finding, Findings
from lab.fileio import atomic_write_text


def cell(text: str) -> str:
    """Text made safe for one Markdown table cell: newlines shown as ⏎, control characters escaped
    (\\x07), and the characters that end a cell or a code span replaced (| -> ¦, ` -> ')."""
    text = text.replace("\n", "⏎").replace("|", "¦").replace("`", "'")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class Table:
    def __init__(self, title: str, columns, note: str | None = None, after: str | None = None):
        self.title, self.columns, self.note, self.after = title, list(columns), note, after
        self.rows: list[list[str]] = []

    def add(self, *cells) -> Table:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.title!r} has {len(self.columns)} columns, got a row of {len(cells)}"
            )
        self.rows.append([str(c) for c in cells])
        return self

    def render(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.after:
            lines += ["", self.after]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.render()


class Outputs:
    """Paths under an experiment's results directory, and the list of plots and tables written there
    (relative paths, in the order written), which becomes findings.json's `plots` and `tables`."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.plots: list[str] = []
        self.tables: list[str] = []

    def _record(self, kind: list[str], rel: str) -> Path:
        if rel not in kind:
            kind.append(rel)
        return self.out / rel

    def plot(self, name: str) -> Path:
        """The path to save plot `name` to (under plots/), recorded for the report."""
        return self._record(self.plots, f"plots/{name}")

    def table(self, name: str, *blocks) -> Path:
        """Write `blocks` (Tables or Markdown strings, separated by a blank line) to tables/`name`."""
        path = self._record(self.tables, f"tables/{name}")
        atomic_write_text(path, "\n".join(str(b) for b in blocks))
        return path

    def findings(self, verdict: str, summary: str, findings: list[Finding]) -> Findings:
        return Findings(
            verdict=verdict, summary=summary, findings=list(findings), tables=self.tables, plots=self.plots
        )
