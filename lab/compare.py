"""`lab compare DIR_A DIR_B`: two results trees side by side, to see which verdicts hold in both.

A results tree is a directory holding `<experiment>/findings.json` (and `<experiment>/config.json`, whose
provenance names the commit and devices that made it): `results/` for the cpu preset, `scratch/gpu` for
the gpu preset, or a checkout of another commit. The comparison is a Markdown document: both trees with
each experiment's preset, seeds, commit and devices; a table of experiment verdicts in A and B; the
verdicts that changed; then, per experiment, each finding of A beside its match in B with both verdicts and
both evidence strings. An experiment or finding present in one tree only is listed as such.

Findings are matched in three passes, each over the findings the earlier passes left unmatched:
  1. the same claim text (repeated claims pair in order);
  2. the same claim once every number is masked: claims that embed a size ("ALiBi extrapolates to 4x the
     training length" at one preset, "8x" at another) still pair;
  3. the same position in the experiment's list of findings (a reworded claim); both claims are shown.
What is left is in one tree only (a finding added or removed). Each row says which pass matched it.

JSON only (NumPy through lab.analysis): it never imports the experiments, whose modules import JAX, so it
takes seconds like `lab analyze`. It reads findings as written; an experiment whose training runs are
unfinished or torn (which `lab report` refuses) is compared all the same and flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.analysis.findings import Finding, Findings
from lab.errors import ConfigError, DataError, LabError
from lab.report import read_findings, recorded_commit, recorded_provenance
from lab.runs import check_runs_complete


@dataclass
class Side:
    """One experiment as one tree holds it."""

    findings: Findings
    provenance: dict
    incomplete: str = ""  # why its training runs are unfinished or torn; "" when they are whole


@dataclass
class Pair:
    """A finding of A and its match in B (either None when only one tree has it), and how they matched."""

    a: Finding | None
    b: Finding | None
    how: str = ""  # "claim", "claim up to numbers", "position"; "" when one side is missing

    @property
    def changed(self) -> bool:
        return self.a is not None and self.b is not None and self.a.verdict != self.b.verdict


@dataclass
class Comparison:
    a: Path
    b: Path
    tree_a: dict[str, Side]
    tree_b: dict[str, Side]

    def names(self) -> list[str]:
        return sorted(set(self.tree_a) | set(self.tree_b))

    def pairs(self, name: str) -> list[Pair]:
        return match_findings(self.tree_a[name].findings.findings, self.tree_b[name].findings.findings)

    def changes(self) -> list[tuple[str, str | None, str, str]]:
        """(experiment, finding claim or None for the experiment's own verdict, verdict A, verdict B) for
        every verdict present in both trees that differs."""
        out = []
        for name in self.names():
            if name not in self.tree_a or name not in self.tree_b:
                continue
            va, vb = self.tree_a[name].findings.verdict, self.tree_b[name].findings.verdict
            if va != vb:
                out.append((name, None, va, vb))
            out += [(name, p.a.claim, p.a.verdict, p.b.verdict) for p in self.pairs(name) if p.changed]
        return out


def load_tree(root: Path) -> dict[str, Side]:
    """{experiment directory name: Side} for every `<name>/findings.json` under `root`. A missing root, one
    holding no findings at all, or a corrupted findings.json is a one-line LabError."""
    root = Path(root)
    try:
        is_dir = root.is_dir()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise ConfigError(f"{str(root)[:120]!r}: {getattr(e, 'strerror', None) or e}") from None
    if not is_dir:
        what = "is not a directory" if root.exists() else "does not exist"
        raise ConfigError(
            f"{root} {what}; give a results tree (a directory holding <experiment>/findings.json)"
        )
    paths = sorted(p for p in root.glob("*/findings.json") if p.is_file())
    if not paths:
        raise DataError(
            f"{root} holds no <experiment>/findings.json: not a results tree, or nothing in it was analyzed "
            "(`lab run` and `lab analyze` write them)"
        )
    tree = {}
    for path in paths:
        out = path.parent
        side = Side(read_findings(path, out.name.split("_")[0]), recorded_provenance(out))
        try:
            check_runs_complete(out / "runs")
        except LabError as e:
            side.incomplete = " ".join(str(e).split())
        tree[out.name] = side
    return tree


def compare_trees(a: Path, b: Path) -> Comparison:
    return Comparison(Path(a), Path(b), load_tree(a), load_tree(b))


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def match_findings(a: list[Finding], b: list[Finding]) -> list[Pair]:
    """Pair the findings of A with those of B (the module docstring's three passes): A's findings in order,
    each with its match or alone, then B's unmatched findings in order."""
    keys = (
        ("claim", lambda f, i: f.claim),
        ("claim up to numbers", lambda f, i: _NUMBER.sub("#", f.claim)),
        ("position", lambda f, i: i),
    )
    match: dict[int, tuple[int, str]] = {}  # index in a -> (index in b, how)
    for how, key in keys:
        free = {}  # key -> indices in b not yet matched, in order
        taken = {j for j, _ in match.values()}
        for j, f in enumerate(b):
            if j not in taken:
                free.setdefault(key(f, j), []).append(j)
        for i, f in enumerate(a):
            if i not in match and free.get(key(f, i)):
                match[i] = (free[key(f, i)].pop(0), how)
    pairs = [Pair(f, b[match[i][0]], match[i][1]) if i in match else Pair(f, None) for i, f in enumerate(a)]
    taken = {j for j, _ in match.values()}
    return pairs + [Pair(None, f) for j, f in enumerate(b) if j not in taken]


def render(c: Comparison) -> str:
    names = c.names()
    both = [n for n in names if n in c.tree_a and n in c.tree_b]
    lines = [
        "# lab: two results trees compared",
        "",
        f"- **A**: `{c.a}`",
        f"- **B**: `{c.b}`",
        "",
        "Generated by `lab compare` from each experiment's `findings.json` and `config.json`. Findings are "
        "matched by claim text, then by claim text with its numbers masked, then by position; each says which.",
        "",
        "| experiment | A: preset, seeds | A: commit | A: devices | B: preset, seeds | B: commit | B: devices |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {n} | {_provenance_cells(c.tree_a.get(n))} | {_provenance_cells(c.tree_b.get(n))} |"
            for n in names
        ),
    ]
    for side, tree in (("A", c.tree_a), ("B", c.tree_b)):
        for n, s in tree.items():
            if s.incomplete:
                lines += [
                    "",
                    f"**Warning**: {n} in {side}: {s.incomplete} (its findings.json may predate this)",
                ]
    lines += [
        "",
        "## Verdicts",
        "",
        "| experiment | A | B | changed | findings changed | findings only in A | findings only in B |",
        "|---|---|---|---|---|---|---|",
        *(_summary_row(c, n) for n in names),
        "",
        "## Verdicts that changed",
        "",
    ]
    what = lambda claim: f": {claim}" if claim else " (the experiment's verdict)"
    changes = [f"- {n}{what(claim)}: {va} → **{vb}**" for n, claim, va, vb in c.changes()]
    lines += changes or ["None: every verdict present in both trees is the same."]
    for side, root, tree, other in (("A", c.a, c.tree_a, c.tree_b), ("B", c.b, c.tree_b, c.tree_a)):
        only = [n for n in names if n in tree and n not in other]
        if only:
            lines += ["", f"Only in {side} (`{root}`): {', '.join(only)}."]
    for n in both:
        lines += ["", *_section(c, n)]
    return "\n".join(lines) + "\n"


def _provenance_cells(side: Side | None) -> str:
    if side is None:
        return "— | — | —"
    f, prov = side.findings, side.provenance
    sha, dirty = recorded_commit(prov)
    commit = "none recorded" if sha is None else f"`{sha}`" + (" + uncommitted changes" if dirty else "")
    dev = prov.get("devices") if isinstance(prov.get("devices"), dict) else {}
    devices = f"{dev.get('device_count', '?')} × {dev.get('device_kind', '?')}" if dev else "not recorded"
    return f"{f.preset or '?'}, {f.seeds} | {commit} | {devices}"


def _summary_row(c: Comparison, name: str) -> str:
    a, b = c.tree_a.get(name), c.tree_b.get(name)
    va, vb = (side.findings.verdict.upper() if side else "—" for side in (a, b))
    if a is None or b is None:
        return f"| {name} | {va} | {vb} | only in {'A' if b is None else 'B'} | | | |"
    pairs = c.pairs(name)
    counts = [sum(p.changed for p in pairs), sum(p.b is None for p in pairs), sum(p.a is None for p in pairs)]
    return f"| {name} | {va} | {vb} | {'**yes**' if va != vb else 'no'} | {' | '.join(map(str, counts))} |"


def _section(c: Comparison, name: str) -> list[str]:
    a, b = c.tree_a[name].findings, c.tree_b[name].findings
    out = [f"## {name}: {a.title or b.title}", ""]
    out += [f"**Claim.** {a.claim}"] if a.claim == b.claim else [f"**Claim.** A: {a.claim} B: {b.claim}"]
    mark = " (changed)" if a.verdict != b.verdict else ""
    out += ["", f"**Verdict.** A: *{a.verdict}*, B: *{b.verdict}*{mark}", ""]
    for p in c.pairs(name):
        out += _finding_lines(p)
    return out


def _finding_lines(p: Pair) -> list[str]:
    if p.b is None or p.a is None:
        side, f = ("A", p.a) if p.b is None else ("B", p.b)
        return [f"- **{f.claim}** — only in {side}: *{f.verdict}*. {f.evidence}"]
    claim = p.a.claim if p.a.claim == p.b.claim else f"A: {p.a.claim} / B: {p.b.claim}"
    mark = " **(changed)**" if p.changed else ""
    same = p.a.evidence == p.b.evidence
    return [
        f"- **{claim}** — A: *{p.a.verdict}*, B: *{p.b.verdict}*{mark} (matched by {p.how})",
        f"  - A: {p.a.evidence}",
        f"  - B: {'the same evidence' if same else p.b.evidence}",
    ]
