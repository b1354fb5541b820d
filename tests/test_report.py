"""REPORT.md rendering: every experiment appears, with its verdict, numbers, tables and plots."""

import json

import pytest

import experiments
from lab.analysis.findings import HOW_TO_READ, Finding, Findings, beside
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
        findings=[
            Finding("sub claim", "supported", "2.000 ± 0.010 vs 3.000 ± 0.020"),
            beside(Finding("an aside", "refuted", "1.0 vs 1.0")),
        ],
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
    assert "- **an aside** — *refuted* (beside the claim: not voting). 1.0 vs 1.0" in text
    assert "| 1.000 ± 0.100 | x |" in text and f"![p]({exp.name}/plots/p.png)" in text
    assert "3 seeds per variant" in text
    assert text.index(HOW_TO_READ) < text.index("| experiment | claim | verdict |")  # how to read, first
    (d / "findings.json").unlink()
    assert f"| {exp.id} | {exp.claim} | not run |" in render(exps, tmp_path)


def test_corrupted_findings_are_an_error(tmp_path):
    exp = next(iter(registry(experiments).values()))
    (tmp_path / exp.name / "tables").mkdir(parents=True)
    path = tmp_path / exp.name / "findings.json"
    path.write_text('{"experiment": "x", "verdict": "great"')
    with pytest.raises(DataError, match="corrupted"):
        render([exp], tmp_path)
    good = Findings(
        verdict="supported", summary="s", findings=[Finding("c", "supported", "e")], tables=["tables/t.md"]
    )
    for key, bad in (("claim", 5), ("votes", "yes"), ("evidence", None)):  # well-formed JSON, wrong types
        d = good.to_dict()
        d["findings"][0][key] = bad
        path.write_text(json.dumps(d))
        with pytest.raises(DataError, match=f"findings.json is corrupted .*{key}"):
            render([exp], tmp_path)
    path.write_text(json.dumps(good.to_dict()))
    (tmp_path / exp.name / "tables" / "t.md").write_bytes(b"| a |\n|---|\n| \xff |\n")
    with pytest.raises(DataError, match=r"t.md is not valid UTF-8 \(corrupted\); rerun `lab analyze"):
        render([exp], tmp_path)


def test_verdicts_are_restricted():
    with pytest.raises(ValueError, match="verdict"):
        Finding("c", "probably", "e")


def test_findings_of_a_run_left_unfinished_are_refused(tmp_path):
    exp = next(iter(registry(experiments).values()))
    d = tmp_path / exp.name
    run = d / "runs" / "a"
    run.mkdir(parents=True)
    (d / "findings.json").write_text(
        json.dumps(
            Findings(verdict="supported", summary="S.", experiment=exp.name, title="T", claim="C.").to_dict()
        )
    )
    members = [{"seed": 0, "lr": 1e-3, "init_scale": 1.0, "extra": []}]
    train = {"steps": 20, "log_every": 10, "eval_every": 10}
    (run / "config.json").write_text(json.dumps({"config": {"members": members, "train": train}}))
    rows = [
        {"step": 0, "member": 0, "val_loss": 3.0},
        {"step": 10, "member": 0, "loss": 2.5, "val_loss": 2.4},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="a is incomplete: member 0 has no train row at step 20"):
        render([exp], tmp_path)


@pytest.mark.parametrize(
    "provenance, shown",
    [
        ({"git_commit": "0123456789abcdef0123"}, "made by commit `0123456789ab`;"),
        (
            {"git_commit": "0123456789abcdef+dirty"},
            "made by commit `0123456789ab` **with uncommitted changes**;",
        ),
        (
            {"git_commit": "0123456789abcdef+dirty", "allow_dirty": True},
            "**with uncommitted changes** (run with --allow-dirty);",
        ),
        ({"git_commit": None}, "made outside a git checkout (no commit recorded);"),
    ],
)
def test_report_shows_the_commit_that_made_each_experiment(tmp_path, provenance, shown):
    exps = list(registry(experiments).values())
    d = tmp_path / exps[0].name
    d.mkdir()
    f = Findings(verdict="supported", summary="s", seeds=3, preset="cpu")
    (d / "findings.json").write_text(json.dumps(f.to_dict()))
    (d / "config.json").write_text(json.dumps({"config": {}, "provenance": provenance}))
    assert shown in render(exps, tmp_path)


def test_record_benchmark_replaces_only_its_own_section(tmp_path):
    from lab.report import record_benchmark

    path = tmp_path / "benchmarks.md"
    record_benchmark("a", "Bench A", "bench_a.py", ["--steps", "3"], ["| x |", "| 1 |"], path)
    record_benchmark("b", "Bench B", "bench_b.py", [], ["b line"], path)
    record_benchmark("a", "Bench A", "bench_a.py", ["--steps", "4"], ["| x |", "| 2 |"], path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count("<!-- bench:a -->") == 1 and "| 1 |" not in text and "| 2 |" in text
    assert "`python scripts/bench_a.py --steps 4`" in text and "`python scripts/bench_b.py`" in text
    assert text.index("<!-- bench:a -->") < text.index("<!-- bench:b -->")  # replaced in place, not moved
