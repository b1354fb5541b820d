"""Every experiment's analysis needs no JAX (DESIGN.md's layers: every number a model gives is computed by
`run` and written to files; `analyze` only reads them with NumPy). Each experiment's session smoke run
(tests/conftest.py `smoke_run`, the template's included), copied without its checkpoints and its findings, is
redrawn where JAX cannot compute and must give back the findings its run wrote and every plot they list.

One child process redraws them all: its start-up (JAX, matplotlib and every experiment's module imported) is
most of one redraw's time (measured on 2 cores: 16 s for all 17 in one child, ~5.5 s each in a child of its own).
"""

import json
import shutil
from pathlib import Path

import experiments
from lab.experiment import registry

ROOT = Path(__file__).resolve().parents[2]


def test_every_smoke_run_redraws_the_same_findings_where_jax_cannot_compute(
    tmp_path, smoke_run, redraw_without_jax
):
    root = tmp_path / "results"
    runs = {}
    for exp in registry(experiments).values():
        _, out = smoke_run(exp.id)
        shutil.copytree(out, root / out.name, ignore=shutil.ignore_patterns("checkpoints", ".*.lock"))
        (root / out.name / "findings.json").unlink()
        runs[exp.id] = out
    redraw_without_jax(list(runs), root)
    for exp_id, out in runs.items():
        after = json.loads((root / out.name / "findings.json").read_text())
        assert after == json.loads((out / "findings.json").read_text()), f"{exp_id}: the redraw differs"
        missing = [rel for rel in after["plots"] if not (root / out.name / rel).is_file()]
        assert not missing, f"{exp_id}: listed but missing: {missing}"


# The experiment whose headline is not the plain composition of its voting findings, tested in its own file:
# e08's claim has a condition (lab.analysis.conditional_headline).
NOT_PLAIN = {"e08"}


def test_every_headline_composes_exactly_the_findings_that_vote(smoke_run):
    """REPORT.md says an experiment's verdict composes the findings that test its claim and that the ones
    marked beside it do not vote: so a finding left out of the headline must be marked, in every smoke run
    and in every published result."""
    from lab.analysis import Findings, headline

    for exp in registry(experiments).values():
        if exp.id in NOT_PLAIN:
            continue
        published = ROOT / "results" / exp.name / "findings.json"
        for path in [smoke_run(exp.id)[1] / "findings.json", *([published] if published.exists() else [])]:
            f = Findings.from_dict(json.loads(path.read_text()))
            assert f.verdict == headline([x for x in f.findings if x.votes]), f"{path}: {f.verdict}"
