"""Project 3 at the smoke preset: run measures, analyze reads files only. The trained model's dependency
matrix is exactly lower-triangular, the step-by-step attention equals the batched one, the head table and
verdicts follow from the measurement file, and a hand-made non-causal dependency is refuted."""

import json
import shutil

import numpy as np
import pytest

from lab.analysis import compare, compare_to, headline, summarize
from lab.cli import main
from lab.experiment import load_config, registry
from lab.runs import load_run, read_measurement, write_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e03")
    return results, out


def _cfg(out):
    import experiments

    return load_config(registry(experiments)["e03"], out)[1]


def test_findings_follow_from_the_measurement_file(smoke):
    results, out = smoke
    cfg, f = _cfg(out), json.loads((out / "findings.json").read_text())
    m = read_measurement(out / "runs" / "heads.npz", cfg)
    by_claim = {x["claim"]: x for x in f["findings"]}
    causal = next(x for c, x in by_claim.items() if "causal" in c)
    assert causal["verdict"] == "supported" and "above the diagonal = 0 " in causal["evidence"]
    assert np.all(np.triu(m["dependency"], k=1) == 0) and np.all(np.diag(m["dependency"]) > 0)
    step = next(x for c, x in by_claim.items() if "step by step" in c)
    assert step["verdict"] == "supported" and float(m["step_diff"]) < 1e-5
    # the heads table is the measurement file, row by row
    jump = m["ablated"] - m["intact"][None, None]  # (L, H, S)
    rows = [r for r in (out / "tables" / "heads.md").read_text().splitlines() if r.startswith("| 0 |")]
    assert len(rows) == 2  # 1 layer x 2 heads at the smoke preset
    for h, row in enumerate(rows):
        cells = [summarize(x).fmt() for x in (m["prev"][:, 0, h], m["entropy"][:, 0, h], jump[0, h])]
        assert row == f"| 0 | {h} | " + " | ".join(cells) + " |"
    # specialization: the extremes of the ablation cost (paired) and the most previous-token head, by the rule
    per_head, prev = jump.reshape(-1, cfg.seeds), m["prev"].reshape(cfg.seeds, -1)
    lo, hi = per_head.mean(1).argmin(), per_head.mean(1).argmax()
    c = compare(per_head[lo], per_head[hi], paired_by_seed=True)
    p = compare_to(prev[:, prev.mean(0).argmax()], 0.5)
    spec = next(x for c_, x in by_claim.items() if c_.startswith("Heads specialize"))
    assert (
        spec["verdict"] == headline([c.verdict("greater"), p.verdict("greater")])
        and c.fmt() in spec["evidence"]
    )
    one, two = (load_run(out / "runs" / f"H{h}").final_val_loss for h in cfg.heads)
    more = by_claim["2 heads beat 1 head at the same parameter count"]
    assert more["verdict"] == compare(one, two).verdict("less")
    for p in f["plots"]:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    before = (out / "findings.json").read_text()
    assert main(["analyze", "e03", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before


def test_a_dependency_above_the_diagonal_is_refuted(smoke, tmp_path):
    _, out = smoke
    copy = tmp_path / out.name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = _cfg(copy)
    m = read_measurement(copy / "runs" / "heads.npz", cfg)
    m["dependency"][0, -1] = 1e-9  # position 0 would see the last token
    write_measurement(copy / "runs" / "heads.npz", m, cfg)
    assert main(["analyze", "e03", "--results", str(tmp_path)]) == 0
    f = json.loads((copy / "findings.json").read_text())
    causal = next(x for x in f["findings"] if "causal" in x["claim"])
    assert causal["verdict"] == "refuted" and "above the diagonal = 1e-09" in causal["evidence"]


def test_head_counts_that_change_parameters_are_refused(tmp_path, capsys):
    args = ["run", "e03", "--preset", "smoke", "--results", str(tmp_path), "--set", "heads=1,3"]
    assert main(args) != 0
    assert "must divide model.d_model" in capsys.readouterr().err


def test_analysis_redraws_the_same_findings_where_jax_cannot_compute(smoke, analysis_without_jax):
    analysis_without_jax("e03", smoke[1])
