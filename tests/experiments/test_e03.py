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
    # specialization: per seed, the extremes of the ablation cost and the most previous-token head picked on
    # the first half of the validation text, tested on the second half, by the rule
    s = np.arange(cfg.seeds)
    cost = (m["half_ablated"] - m["half_intact"][:, None, None]).reshape(2, -1, cfg.seeds)
    prev = m["half_prev"].reshape(2, cfg.seeds, -1)
    hi, lo, best = cost[0].argmax(0), cost[0].argmin(0), prev[0].argmax(1)
    c = compare(cost[1, lo, s], cost[1, hi, s], paired_by_seed=True)
    p = compare_to(prev[1, s, best], 0.5)
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


def _halves(cost_a, cost_b, prev_a, prev_b):
    """Made-up heads.npz entries for 3 seeds x 1 layer x 4 heads: ablation costs and previous-token scores
    on the half the heads are picked on (a) and the half they are tested on (b), each (seeds, heads)."""
    t = lambda x: np.asarray(x, float).T[None]  # (seeds, heads) -> (1 layer, heads, seeds)
    intact = np.full((2, 3), 2.0)
    ablated = np.stack([2.0 + t(cost_a), 2.0 + t(cost_b)])  # (2, L, H, S)
    prev = np.stack([np.asarray(prev_a, float)[:, None], np.asarray(prev_b, float)[:, None]])  # (2, S, L, H)
    return {"half_intact": intact, "half_ablated": ablated, "half_prev": prev}


# Each seed its own model: the costly head has a different number in each (head numbers do not carry over).
JOBS = [[0.40, 0.02, 0.19, 0.04], [0.01, 0.42, 0.02, 0.34], [0.09, 0.30, 0.04, 0.19]]
PREV = [[0.15, 0.12, 0.26, 0.66], [0.12, 0.70, 0.09, 0.34], [0.20, 0.68, 0.14, 0.26]]


@pytest.mark.parametrize(
    "tested_cost, tested_prev, want",
    [
        (JOBS, PREV, "supported"),  # the picks hold on the other half: both parts supported
        ((-np.asarray(JOBS)).tolist(), PREV, "qualified"),  # the costs reverse on the other half: refuted
        (JOBS, (np.asarray(PREV) * 0.4).tolist(), "qualified"),  # no previous-token head on the other half
    ],
)
def test_heads_picked_on_one_half_are_judged_on_the_other(tested_cost, tested_prev, want):
    """Picked and judged on the same numbers, the most and least costly heads always differ in the direction
    claimed; judged on the other half, a pick that does not hold is refuted."""
    import experiments.e03_attention as e03

    cfg = e03.E03Config(model=e03.PRESETS["cpu"].replace(n_layers=1))
    m = _halves(JOBS, tested_cost, PREV, tested_prev)
    names = [f"L0H{h}" for h in range(4)]
    f = e03._held_out(cfg, m, names, np.ones((4, 3)))
    assert f.verdict == want, f.evidence
    assert "(L0H0, L0H1, L0H1 for seeds 0, 1, 2)" in f.evidence  # each seed's own pick
    if tested_cost is not JOBS:
        assert ": refuted)" in f.evidence


def test_heads_measured_without_halves_are_refused_with_a_reason():
    import experiments.e03_attention as e03
    from lab.errors import DataError

    with pytest.raises(DataError, match="rerun e03"):
        e03._held_out(e03.E03Config(), {"prev": np.zeros(1)}, [], np.ones((1, 1)))


def test_head_counts_that_change_parameters_are_refused(tmp_path, capsys):
    args = ["run", "e03", "--preset", "smoke", "--results", str(tmp_path), "--set", "heads=1,3"]
    assert main(args) != 0
    assert "must divide model.d_model" in capsys.readouterr().err
