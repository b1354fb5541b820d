"""`lab compare`: two results trees side by side, on made-up trees with known differences and on the
published results/ compared with themselves; bad input is one line with exit status 2; no JAX."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab.analysis.findings import Finding, Findings
from lab.cli import main
from lab.compare import compare_trees, match_findings, render

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
CPU = {"platform": "cpu", "device_kind": "cpu", "device_count": 2, "process_count": 1}
GPU = {"platform": "gpu", "device_kind": "NVIDIA H200", "device_count": 1, "process_count": 1}


def write_experiment(root, name, verdict, findings, preset="cpu", commit="a" * 40, devices=CPU):
    d = root / name
    d.mkdir(parents=True)
    f = Findings(
        experiment=name,
        title=f"{name} title",
        claim=f"{name} claim.",
        verdict=verdict,
        summary="S.",
        findings=[Finding(*x) for x in findings],
        seeds=3,
        preset=preset,
    )
    (d / "findings.json").write_text(json.dumps(f.to_dict()))
    (d / "config.json").write_text(
        json.dumps({"config": {}, "provenance": {"git_commit": commit, "devices": devices}})
    )
    return d


@pytest.fixture
def trees(tmp_path):
    """Tree A (cpu) and tree B (gpu) with known differences: e01's verdict and one of its findings change and
    B adds a finding; e02's claims embed a size (4x, 8x) and one is reworded; e03 is only in A, e04 only in B."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_experiment(
        a,
        "e01_alpha",
        "supported",
        [("Bigger is better", "supported", "A1"), ("Depth helps", "supported", "A2")],
    )
    write_experiment(b, "e01_alpha", "qualified", [("Bigger is better", "supported", "B1"), ("Depth helps", "refuted", "B2"),
                     ("Width helps", "inconclusive", "B3")], "gpu", "b" * 40 + "+dirty", GPU)  # fmt: skip
    write_experiment(a, "e02_beta", "qualified", [("ALiBi extrapolates to 4x the length", "qualified", "4x: 1.0"),
                     ("Heads specialize", "supported", "A")])  # fmt: skip
    write_experiment(b, "e02_beta", "qualified", [("ALiBi extrapolates to 8x the length", "qualified", "8x: 2.0"),
                     ("Attention heads specialize", "supported", "B")], "gpu", devices=GPU)  # fmt: skip
    write_experiment(a, "e03_gamma", "refuted", [("Only here", "refuted", "A")])
    write_experiment(b, "e04_delta", "supported", [], "gpu", devices=GPU)
    return a, b


def test_made_up_trees_show_each_known_difference(trees):
    a, b = trees
    c = compare_trees(a, b)
    assert c.names() == ["e01_alpha", "e02_beta", "e03_gamma", "e04_delta"]
    assert c.changes() == [
        ("e01_alpha", None, "supported", "qualified"),
        ("e01_alpha", "Depth helps", "supported", "refuted"),
    ]
    e01 = c.pairs("e01_alpha")
    assert [(p.how, p.changed) for p in e01] == [("claim", False), ("claim", True), ("", False)]
    assert e01[2].a is None and e01[2].b.claim == "Width helps"  # the finding B added
    assert [p.how for p in c.pairs("e02_beta")] == ["claim up to numbers", "position"]

    text = render(c)
    assert f"- **A**: `{a}`\n- **B**: `{b}`" in text
    assert "| e01_alpha | cpu, 3 | `aaaaaaaaaaaa` | 2 × cpu | gpu, 3 | `bbbbbbbbbbbb` + uncommitted changes | 1 × NVIDIA H200 |" in text  # fmt: skip
    assert "| e03_gamma | cpu, 3 | `aaaaaaaaaaaa` | 2 × cpu | — | — | — |" in text
    assert "| e01_alpha | SUPPORTED | QUALIFIED | **yes** | 1 | 0 | 1 |" in text
    assert "| e02_beta | QUALIFIED | QUALIFIED | no | 0 | 0 | 0 |" in text
    assert (
        "| e03_gamma | REFUTED | — | only in A | | | |" in text
        and "| e04_delta | — | SUPPORTED | only in B |" in text
    )
    assert f"Only in A (`{a}`): e03_gamma." in text and f"Only in B (`{b}`): e04_delta." in text
    changed = text.split("## Verdicts that changed\n\n")[1].split("\n\n")[0]
    assert changed == (
        "- e01_alpha (the experiment's verdict): supported → **qualified**\n"
        "- e01_alpha: Depth helps: supported → **refuted**"
    )
    assert (
        "- **Depth helps** — A: *supported*, B: *refuted* **(changed)** (matched by claim)\n  - A: A2\n  - B: B2\n"
        in text
    )
    assert "- **Width helps** — only in B: *inconclusive*. B3" in text
    assert (
        "- **A: ALiBi extrapolates to 4x the length / B: ALiBi extrapolates to 8x the length** — A: *qualified*, "
        "B: *qualified* (matched by claim up to numbers)\n  - A: 4x: 1.0\n  - B: 8x: 2.0" in text
    )
    assert "(matched by position)" in text and "**Verdict.** A: *supported*, B: *qualified* (changed)" in text
    assert "## e03_gamma" not in text and "## e04_delta" not in text  # no section for a one-sided experiment


def test_matching_pairs_repeated_claims_in_order_and_leaves_the_rest_alone():
    f = lambda claim, v="supported": Finding(claim, v, claim)
    pairs = match_findings([f("x"), f("y"), f("x", "refuted")], [f("x"), f("x", "refuted")])
    assert [(p.a and p.a.claim, p.b and p.b.claim, p.how) for p in pairs] == [
        ("x", "x", "claim"),
        ("y", None, ""),
        ("x", "x", "claim"),
    ]
    assert not any(p.changed for p in pairs)
    # masked numbers pair claims wherever they stand; position pairs only findings at the same index
    pairs = match_findings([f("4 heads beat 1 head"), f("z")], [f("q"), f("2 heads beat 1 head")])
    assert [(p.a and p.a.claim, p.b and p.b.claim, p.how) for p in pairs] == [
        ("4 heads beat 1 head", "2 heads beat 1 head", "claim up to numbers"),
        ("z", None, ""),
        (None, "q", ""),
    ]


def test_an_experiment_whose_runs_are_incomplete_is_compared_and_flagged(trees):
    a, b = trees
    run = b / "e02_beta" / "runs" / "lm"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"config": {}}')
    (run / "metrics.jsonl").write_text("")
    text = render(compare_trees(a, b))
    assert "**Warning**: e02_beta in B: " in text and "is not a training run's config" in text


def test_the_published_results_compared_with_themselves_change_nothing():
    c = compare_trees(RESULTS, RESULTS)
    names = sorted(p.parent.name for p in RESULTS.glob("*/findings.json"))
    assert c.names() == names and len(names) >= 8 and c.changes() == []
    pairs = [p for n in names for p in c.pairs(n)]
    assert pairs and all(p.how == "claim" and not p.changed for p in pairs)
    text = render(c)
    assert "None: every verdict present in both trees is the same." in text
    assert "Only in" not in text and "Warning" not in text and "**yes**" not in text
    assert text.count("  - B: the same evidence") == len(pairs)
    commit = json.loads((RESULTS / names[0] / "config.json").read_text())["provenance"]["git_commit"]
    assert f"| {names[0]} | cpu, 3 | `{commit[:12]}` |" in text


def run_cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_is_one_line_with_exit_status_2(capsys, tmp_path, trees):
    a, _ = trees
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "e01_x").mkdir()  # a directory without findings.json is not a results tree yet
    file = tmp_path / "file"
    file.write_text("x")
    torn = tmp_path / "torn"
    write_experiment(torn, "e05_torn", "supported", [])
    (torn / "e05_torn" / "findings.json").write_text('{"experiment": "e05_torn", "verdict": "supp')
    great = tmp_path / "great"
    write_experiment(great, "e06_great", "supported", [])
    (great / "e06_great" / "findings.json").write_text('{"verdict": "great", "summary": "S."}')
    for args, fragment in [
        ((tmp_path / "nope", a), f"{tmp_path / 'nope'} does not exist"),
        ((a, file), f"{file} is not a directory"),
        ((a, empty), f"{empty} holds no <experiment>/findings.json"),
        ((torn, a), f"{torn / 'e05_torn' / 'findings.json'} is corrupted"),
        ((a, great), "is corrupted (verdict 'great' is not one of"),
        ((a, a, "--out", tmp_path), "is a directory; give a file name"),
    ]:
        code, out, err = run_cli(capsys, "compare", *args)
        lines = err.splitlines()
        assert code == 2 and out == "" and len(lines) == 1, (args, err)
        assert lines[0].startswith("lab: error: ") and fragment in lines[0], lines[0]


CHILD = """
import sys
from lab.cli import main

code = main(sys.argv[1:])
assert not any(m == "jax" or m.startswith("jax.") for m in sys.modules), "lab compare imported JAX"
sys.exit(code)
"""


def test_cli_prints_or_writes_the_comparison_and_never_imports_jax(capsys, trees, tmp_path):
    a, b = trees
    expected = render(compare_trees(a, b))
    code, out, _ = run_cli(capsys, "compare", a, b)
    assert code == 0 and out == expected  # changed verdicts are not an error
    out_file = tmp_path / "out" / "compare.md"
    p = subprocess.run(
        [sys.executable, "-c", CHILD, "compare", str(a), str(b), "--out", str(out_file), "--fail-on-change"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1, p.stderr  # --fail-on-change: a verdict present in both trees changed
    assert p.stdout == f"{out_file}: 2 verdict(s) changed\n" and out_file.read_text() == expected
    assert run_cli(capsys, "compare", a, a, "--fail-on-change")[0] == 0
