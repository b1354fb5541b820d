"""Project 4 end to end at the smoke preset: run, analyze from disk, report; and the reparametrized
training path equals the config switch it stands for."""

import json
import math

import jax
import numpy as np
import pytest

from experiments import e04_qkv as e04
from lab.analysis.findings import VERDICTS
from lab.cli import main
from lab.model.surgery import VARIANTS
from lab.train import Member, init_sweep
from lab.train.sweep import SweepRunner


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e04")
    return results, out


def test_findings_have_verdicts_and_numbers(smoke):
    _, out = smoke
    f = json.loads((out / "findings.json").read_text())
    assert f["verdict"] in VERDICTS and f["preset"] == "smoke" and f["seeds"] == 2
    assert len(f["findings"]) == 5 and all(x["verdict"] in VERDICTS for x in f["findings"])
    assert all("±" in x["evidence"] for x in f["findings"][:3])


def test_table_numbers_come_from_the_metrics_on_disk(smoke):
    _, out = smoke
    rows = [json.loads(line) for line in (out / "runs" / "text" / "metrics.jsonl").read_text().splitlines()]
    members = json.loads((out / "runs" / "text" / "config.json").read_text())["config"]["members"]
    intact = [i for i, m in enumerate(members) if VARIANTS[int(m["extra"][0])] == "intact"]
    last = max(r["step"] for r in rows)
    vals = [r["val_loss"] for r in rows if r["step"] == last and r["member"] in intact]
    mean, sd = np.mean(vals), np.std(vals, ddof=1)
    table = (out / "tables" / "qkv_variants.md").read_text()
    assert f"| text | intact | {mean:.3f} ± {sd:.3f} |" in table


def test_analyze_redraws_the_same_findings_from_disk(smoke):
    results, out = smoke
    before = (out / "findings.json").read_text()
    plot = out / "plots" / "lr_sweep.png"
    plot.unlink()
    assert main(["analyze", "e04", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_every_plot_and_table(smoke):
    results, out = smoke
    report = (results / "REPORT.md").read_text()
    f = json.loads((out / "findings.json").read_text())
    assert f"**{f['verdict'].upper()}**" in report
    for p in f["plots"]:
        assert f"(e04_qkv/{p})" in report
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000  # a drawn figure, not an empty canvas
    assert "### Learning-rate sweep" in report and "### Samples" in report


def test_rerun_resumes_instead_of_retraining(smoke):
    results, out = smoke
    metrics = (out / "runs" / "text" / "metrics.jsonl").read_bytes()
    assert main(["run", "e04", "--preset", "smoke", "--results", str(results), "--no-progress"]) == 0
    assert (out / "runs" / "text" / "metrics.jsonl").read_bytes() == metrics


def test_variant_forward_trains_exactly_like_the_config_switch(tiny):
    model, tcfg, task = tiny
    reparam = SweepRunner(model, tcfg, task, 3, "vmap", forward=e04.variant_forward)
    variants = ("swap_qk", "tie_qk", "zero_v")
    members = [Member(0, 1e-2, 1.0, (float(e04.VARIANT_INDEX[v]),)) for v in variants]
    b_state, b = reparam.train(reparam.place(init_sweep(model, tcfg, members)), {}, 10)
    for i, variant in enumerate(variants):
        switched = SweepRunner(model.replace(qkv=variant), tcfg, task, 1, "vmap")
        a_state, a = switched.train(switched.place(init_sweep(model, tcfg, [Member(0, 1e-2)])), {}, 10)
        # same arithmetic up to the order of summing gradient contributions (tie_qk uses wk twice)
        np.testing.assert_allclose(np.asarray(a["loss"][0]), np.asarray(b["loss"][i]), rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda x, y, i=i: np.testing.assert_allclose(x[0], y[i], rtol=1e-4, atol=1e-6),
            a_state.params,
            b_state.params,
        )
    assert not math.isnan(float(b["loss"][0, -1]))
    # and the variants really differ from each other
    assert len({round(float(x), 6) for x in np.asarray(b["loss"])[:, -1]}) == 3
