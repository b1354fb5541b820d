"""REPORT.md rendering: every experiment appears, with its verdict, numbers, tables and plots."""

import json

import pytest

import experiments
from lab.analysis.findings import Finding, Findings
from lab.errors import DataError
from lab.experiment import registry
from lab.report import render


def test_report_renders_findings_and_lists_unrun(tmp_path):
    exps = list(registry(experiments).values())
    exp = exps[0]
    d = tmp_path / exp.name
    (d / "tables").mkdir(parents=True)
    (d / "tables" / "t.md").write_text("| a | b |\n|---|---|\n| 1.000 ± 0.100 | x |\n")
    f = Findings(
        experiment=exp.name,
        title="Title",
        claim="A claim.",
        verdict="qualified",
        summary="It depends.",
        findings=[Finding("sub claim", "supported", "2.000 ± 0.010 vs 3.000 ± 0.020")],
        tables=["tables/t.md"],
        plots=["plots/p.png"],
        seeds=3,
        preset="cpu",
    )
    (d / "findings.json").write_text(json.dumps(f.to_dict()))
    text = render(exps, tmp_path)
    assert f"| [{exp.id}](#{exp.name}) | A claim. | **QUALIFIED** |" in text
    assert "**Verdict: QUALIFIED.** It depends." in text
    assert "- **sub claim** — *supported*. 2.000 ± 0.010 vs 3.000 ± 0.020" in text
    assert "| 1.000 ± 0.100 | x |" in text and f"![p]({exp.name}/plots/p.png)" in text
    assert "3 seeds per variant" in text
    (d / "findings.json").unlink()
    assert f"| {exp.id} | {exp.claim} | not run |" in render(exps, tmp_path)


def test_corrupted_findings_are_an_error(tmp_path):
    exp = next(iter(registry(experiments).values()))
    (tmp_path / exp.name).mkdir()
    (tmp_path / exp.name / "findings.json").write_text('{"experiment": "x", "verdict": "great"')
    with pytest.raises(DataError, match="corrupted"):
        render([exp], tmp_path)


def test_verdicts_are_restricted():
    with pytest.raises(ValueError, match="verdict"):
        Finding("c", "probably", "e")
