"""The template end to end at the smoke preset (what a new experiment's test looks like): the run writes
sweeps and a measurement file, the table comes from them, each verdict follows its numbers by the rule."""

import json

import numpy as np
import pytest

from experiments import e00_template as e00
from lab.analysis import compare
from lab.runs import load_run, read_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e00")
    return results, out, e00.PRESET_TABLE["smoke"]


def test_table_and_verdicts_come_from_the_run_files(smoke):
    _, out, cfg = smoke
    f = json.loads((out / "findings.json").read_text())
    narrow, wide = (load_run(out / "runs" / f"D{d}").final_val_loss for d in cfg.widths)
    assert f["findings"][0]["verdict"] == compare(narrow, wide).verdict("less")
    scores = read_measurement(out / "runs" / "exact_match.json", cfg)
    n, w = (scores[str(d)] for d in cfg.widths)
    assert f["findings"][1]["verdict"] == compare(n, w).verdict("greater")
    assert all(0.0 <= s <= 1.0 for v in scores.values() for s in v) and len(w) == cfg.seeds
    table = (out / "tables" / "width.md").read_text()
    assert f"| {cfg.widths[1]} | {np.mean(wide):.3f} ± {np.std(wide, ddof=1):.3f} |" in table


@pytest.mark.parametrize("wide,want", [([0.9, 0.92, 0.91], "supported"), ([0.1, 0.12, 0.11], "refuted")])
def test_a_finding_on_made_up_numbers_gets_the_known_verdict(wide, want):
    cfg = e00.PRESET_TABLE["smoke"]
    narrow = [0.5, 0.52, 0.51]
    assert e00.finding_exact(cfg, {str(cfg.widths[0]): narrow, str(cfg.widths[1]): wide}).verdict == want
