"""Project 2 end to end at the smoke preset: run, analyze from disk (tables, plots, the 3-D animation),
and the bad inputs the issue names are refused before anything is written."""

import json

import pytest

from lab.analysis.findings import VERDICTS
from lab.cli import main


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e02")
    return results, out


def test_findings_tables_plots_and_animation(smoke):
    results, out = smoke
    f = json.loads((out / "findings.json").read_text())
    assert f["verdict"] in VERDICTS and f["seeds"] == 2
    assert all(x["verdict"] in VERDICTS for x in f["findings"]) and len(f["findings"]) >= 3
    assert all("±" in x["evidence"] or "cannot run" in x["evidence"] for x in f["findings"])
    table = (out / "tables" / "positional.md").read_text()
    # learned positions are never evaluated past the training length: the table says so instead of a number
    learned = [r for r in table.splitlines() if "| learned |" in r]
    assert learned and all(r.count("cannot run") == 1 for r in learned)
    for p in f["plots"]:
        data = (out / p).read_bytes()
        magic = b"GIF89a" if p.endswith(".gif") else b"\x89PNG\r\n\x1a\n"
        assert data[: len(magic)] == magic and len(data) > 10_000
    assert "plots/encoding_3d.gif" in f["plots"] and "plots/encoding_3d.png" in f["plots"]
    before = (out / "findings.json").read_text()
    assert main(["analyze", "e02", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["positions=none,rotary"], "allowed: none, sinusoidal, learned, rope, alibi"),
        (["model.d_model=18", "model.n_heads=2", "positions=none,rope"], "must be even"),  # head dim 9
        (["masks=causal,prefix"], "allowed: bidirectional, causal"),
    ],
)
def test_bad_inputs_are_refused_before_anything_runs(tmp_path, capsys, sets, needle):
    args = ["run", "e02", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) != 0
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "e02_positional").exists()
