"""Project 3 end to end at the smoke preset: run, analyze from disk; the trained model's dependency
matrix is exactly lower-triangular and the step-by-step attention equals the batched one."""

import json

import pytest

from lab.analysis.findings import VERDICTS
from lab.cli import main


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e03")
    return results, out


def test_findings_tables_and_plots(smoke):
    results, out = smoke
    f = json.loads((out / "findings.json").read_text())
    assert f["verdict"] in VERDICTS and f["seeds"] == 2
    by_claim = {x["claim"]: x for x in f["findings"]}
    causal = next(x for c, x in by_claim.items() if "causal" in c)
    assert causal["verdict"] == "supported" and "above the diagonal = 0 " in causal["evidence"]
    step = next(x for c, x in by_claim.items() if "step by step" in c)
    assert step["verdict"] == "supported"
    heads = (out / "tables" / "heads.md").read_text()
    assert heads.count("\n| ") == 1 + 1 * 2  # header + (1 layer x 2 heads) at the smoke preset
    for p in f["plots"]:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    before = (out / "findings.json").read_text()
    assert main(["analyze", "e03", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before


def test_head_counts_that_change_parameters_are_refused(tmp_path, capsys):
    args = ["run", "e03", "--preset", "smoke", "--results", str(tmp_path), "--set", "heads=1,3"]
    assert main(args) != 0
    assert "must divide model.d_model" in capsys.readouterr().err
