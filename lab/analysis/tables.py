"""Markdown tables and the record of what an analysis wrote.

    outs = Outputs(out)                                # out = results/<experiment>
    t = Table("Final validation loss", ["variant", "val loss"], note="3 seeds; nats/token")
    t.add("intact", summarize(x).fmt())              # cells are escaped by the table (`cell`)
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


def escape(text: str) -> str:
    """`text` with each backslash doubled and every non-printing character (C0 and C1 controls, DEL,
    newline, tab, other invisible characters) written as in a Python string literal: \\x07, \\n, \\t,
    \\x85, \\u200b; so a newline (\\n) and a backslash before an n (\\\\n) read apart. Spaces and other
    printable characters are kept."""
    return "".join(map(_escape_char, text))


def _escape_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    return c if c.isprintable() or c == " " else repr(c)[1:-1]  # repr: '\\x07' and the like


def cell(text) -> str:
    """`text` (str()-ed) made safe for one Markdown table cell: `escape`d, and each | (which would end the
    cell) written \\|, GitHub's escape, shown as | in code spans too. `Table` applies it to every cell,
    so a cell is passed to it as it is, unescaped."""
    return escape(str(text)).replace("|", "\\|")


def code(text: str) -> str:
    """`text` as an inline code span, backticks (which would end it) shown as '. Not escaped: in a `Table`
    cell the table escapes it; elsewhere, pass it `escape`d."""
    return "`" + text.replace("`", "'") + "`"


class Table:
    def __init__(self, title: str, columns, note: str | None = None, after: str | None = None):
        self.title, self.columns, self.note, self.after = title, list(columns), note, after
        self.rows: list[list[str]] = []

    def add(self, *cells) -> Table:
        """One row; each cell is str()-ed and made safe by `cell` (control characters escaped, | as \\|)."""
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.title!r} has {len(self.columns)} columns, got a row of {len(cells)}"
            )
        self.rows.append([cell(c) for c in cells])
        return self

    def render(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
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
