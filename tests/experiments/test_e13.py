"""Project 13 end to end at the smoke preset: one sweep per size over seeds, the parameter and FLOP counts
against closed forms, the token budgets read from a constant-learning-rate run at each width's rate
(train.lr x lr_width / d_model), the held-out finding recomputed from the metrics by the library, analysis
where JAX cannot compute (test_smoke_redraw.py); bad settings are one-line errors before anything is written; on made-up losses the
findings give the verdicts the numbers carry."""

import json
import re

import numpy as np
import pytest

from experiments import e13_scaling_laws as e13
from lab.analysis import decide, scaling
from lab.cli import main
from lab.runs import read_measurement, read_rows


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("e13")


def test_each_size_is_one_sweep_over_seeds_with_counts_from_closed_forms(smoke):
    _, out = smoke
    cfg = e13.PRESET_TABLE["smoke"]
    assert cfg.first_seed == e13.PRESET_TABLE["cpu"].first_seed == 4
    sizes = read_measurement(out / "runs" / "sizes.json", cfg)
    for depth, width in cfg.shapes:
        s = sizes[e13.size_name(depth, width)]
        conf = json.loads((out / "runs" / e13.size_name(depth, width) / "config.json").read_text())["config"]
        # fresh seeds (the budgets and lr rule were redesigned on seeds 0-3)
        assert [m["seed"] for m in conf["members"]] == list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
        v, t = s["vocab_size"], cfg.model.max_len
        # blocks: 4 d^2 attention + 8 d^2 MLP + two norm scales; then the final norm
        assert s["params"]["non_embedding"] == depth * (12 * width**2 + 2 * width) + width
        assert s["params"]["embedding"] == v * width + t * width
        matmul = depth * 12 * width**2 + width * v
        assert s["flops_per_token_exact"] == 6 * matmul + 12 * depth * t * width
        assert s["unembedding_flops_share"] == pytest.approx(
            6 * width * v / s["flops_per_token_exact"], rel=1e-12
        )
        # params + AdamW's two moments, float32, every seed: a floor on what the compiled step holds
        assert s["peak_bytes"] >= 3 * 4 * cfg.seeds * (s["params"]["total"])
        assert s["tokens_per_second"] > 0


def test_budgets_are_read_from_a_constant_learning_rate_run_at_each_widths_rate(smoke):
    _, out = smoke
    cfg = e13.PRESET_TABLE["smoke"]
    sizes = read_measurement(out / "runs" / "sizes.json", cfg)
    for depth, width in cfg.shapes:
        rows = read_rows(out / "runs" / e13.size_name(depth, width) / "metrics.jsonl")
        lrs = {r["lr"] for r in rows if "lr" in r and r["step"] > cfg.train.warmup_steps}
        # constant after warmup (stopping at a budget is the same run as one of that length), at lr / width
        want = cfg.train.lr * cfg.lr_width / width
        assert len(lrs) == 1 and lrs.pop() == pytest.approx(want, rel=1e-6), (width, lrs)
        assert sizes[e13.size_name(depth, width)]["lr"] == pytest.approx(want, rel=1e-12)
        evals = {r["step"] for r in rows if "val_loss" in r}
        assert set(cfg.budget_steps) <= evals


def test_the_held_out_finding_follows_from_the_metrics(smoke):
    _, out = smoke
    cfg = e13.PRESET_TABLE["smoke"]
    last = []
    for size in cfg.shapes:
        rows = read_rows(out / "runs" / e13.size_name(*size) / "metrics.jsonl")
        last.append([r["val_loss"] for r in rows if "val_loss" in r and r["step"] == cfg.budget_steps[-1]])
    last = np.array(last)  # (sizes, seeds)
    sizes = read_measurement(out / "runs" / "sizes.json", cfg)
    n = np.array([sizes[e13.size_name(*s)]["params"]["non_embedding"] for s in cfg.shapes], float)
    law = scaling.fit_power_law(n[:-1], last[:-1].mean(axis=1))
    f = json.loads((out / "findings.json").read_text())["findings"][0]
    assert f"predicted {law.predict(n[-1]):.3f}" in f["evidence"]
    lo, hi = map(float, re.search(r"\[95% CI (\S+), (\S+)\]", f["evidence"]).groups())
    tol = max(2 * last[-1].std(ddof=1), 0.02 * last[-1].mean())
    assert f["verdict"] == decide((lo, hi), "equal", tol)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["sizes=1x8,1x16,1x24"], "need >= 4 sizes, got 3"),
        (["sizes=1x8,1x16,1x24,32"], "each size is <n_layers>x<d_model> (e.g. 2x64), got '32'"),
        (["budgets=64,1280,2560"], "token budget 64 is smaller than one batch"),
        (["train.min_lr_ratio=0.1"], "train.min_lr_ratio must be 1 here"),
        (["lr_width=0"], "lr_width must be >= 1"),
        (["first_seed=-1"], "first_seed must be >= 0, got -1"),
    ],
)
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, capsys, sets, needle):
    args = ["run", "e13", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "e13_scaling_laws").exists()


def test_made_up_losses_from_a_law_with_a_too_small_size_give_the_numbers_verdicts():
    """Losses drawn from E + A/N^alpha + B/D^beta with 0.1% seed noise, the smallest size raised by 0.2 nats:
    the held-out size is predicted (supported), and the smallest size is the one too small (supported)."""
    cfg = e13.E13Config(bootstrap=20)
    rng = np.random.default_rng(0)
    n = np.geomspace(1e4, 2e6, 7)
    d = np.asarray(cfg.budgets, float)
    law = scaling.Law(E=1.5, A=40.0, alpha=0.3, B=60.0, beta=0.3)
    loss = [law.predict(x, d)[None, :] * np.exp(rng.normal(0, 1e-3, (3, d.size))) for x in n]
    loss[0] = loss[0] + 0.2
    g = e13._Grid([f"s{i}" for i in range(n.size)], n, d, loss, {})
    f = e13._fits(cfg, g)
    held, small = e13.finding_held_out(g, f), e13.finding_too_small(g, f)
    assert held.verdict == "supported", held.evidence
    assert small.verdict == "supported" and "s0 (N=1e+04): the residual's CI excludes zero" in small.evidence
    assert "(the threshold, read on these seeds, not a verdict): s0 (N=" in small.evidence, small.evidence
    assert f["point"]["alpha"] == pytest.approx(0.3, abs=0.1)
    tpp = e13.finding_tokens_per_param(g, f)
    assert "not decided" not in tpp.evidence, tpp.evidence  # a determined L(N, D): the rule decides
    # the same law with its optimum moved past EXTRAPOLATION x the tokens per parameter the grid saw: not judged
    far = {**f, "point": {**f["point"], "tpp": 1.01 * e13.EXTRAPOLATION * d[-1] / n[0]}}
    tpp = e13.finding_tokens_per_param(g, far)
    assert tpp.verdict == "inconclusive" and "extrapolated, not measured" in tpp.evidence, tpp.evidence


def test_a_flat_grid_judges_no_size_too_small():
    """Losses with no trend in N (4.3 nats plus 2% seed noise): the law above each small size is not
    determined, so no residual is judged and the too-small finding is inconclusive, however large the
    extrapolated residuals; nor is the compute-optimal tokens per parameter of an undetermined L(N, D)."""
    cfg = e13.E13Config(bootstrap=20)
    rng = np.random.default_rng(1)
    n = np.geomspace(1e4, 2e6, 6)
    d = np.asarray(cfg.budgets, float)
    loss = [4.3 * np.exp(rng.normal(0, 2e-2, (4, d.size))) for _ in n]
    g = e13._Grid([f"s{i}" for i in range(n.size)], n, d, loss, {})
    f = e13._fits(cfg, g)
    small, tpp = e13.finding_too_small(g, f), e13.finding_tokens_per_param(g, f)
    assert small.verdict == "inconclusive" and "not judged" in small.evidence, small.evidence
    assert tpp.verdict == "inconclusive" and "not decided" in tpp.evidence, tpp.evidence


def test_too_small_is_decided_on_the_smallest_size_and_the_threshold_only_described():
    """The verdict is the smallest size's, fixed in advance; the largest size off the law is reported as the
    threshold, never judged (it is picked by the residuals it would be judged on). s1 is off, s0 (the smallest)
    is still noise -> inconclusive, threshold s1; s0 off as well -> supported; s0 not judged -> inconclusive."""
    n = np.asarray([1e4, 5e4, 1e5, 1e6, 2e6, 4e6])
    g = e13._Grid([f"s{i}" for i in range(n.size)], n, np.asarray([1.0]), [], {})
    res = {0: (-0.1, 0.05), 1: (-0.2, -0.05), 2: (-0.1, 0.1)}
    f = {
        "probes": [0, 1, 2],
        "ci": {f"res{i}": r for i, r in res.items()} | {f"above_alpha{i}": (0.1, 0.3) for i in res},
        "point": {f"res{i}": sum(r) / 2 for i, r in res.items()},
    }
    small = e13.finding_too_small(g, f)
    assert small.verdict == "inconclusive", small.evidence
    assert "s0 (N=1e+04): the residual's CI includes zero; the largest judged size whose" in small.evidence
    assert "not a verdict): s1 (N=5e+04);" in small.evidence
    assert "s0 (N=1e+04) -0.025 [95% CI -0.100, 0.050] (CI includes zero)" in small.evidence
    assert "s1 (N=5e+04) -0.125 [95% CI -0.200, -0.050] (off the law)" in small.evidence
    f["ci"]["res0"] = (-0.3, -0.1)  # the smallest off as well: supported
    assert e13.finding_too_small(g, f).verdict == "supported"
    f["ci"]["res2"] = (0.05, 0.2)  # off on the other side: the threshold moves up, the verdict stays
    small = e13.finding_too_small(g, f)
    assert small.verdict == "supported" and "not a verdict): s2 (N=1e+05);" in small.evidence
    f["ci"]["above_alpha2"] = (0.0, 0.3)  # s2 (off) not judged: the threshold is the largest judged size off
    small = e13.finding_too_small(g, f)
    assert small.verdict == "supported" and "not a verdict): s1 (N=5e+04);" in small.evidence
    f["ci"]["above_alpha0"] = (0.0, 0.3)  # the law above s0 not determined: s0 is not judged
    small = e13.finding_too_small(g, f)
    assert small.verdict == "inconclusive" and "s0 (N=1e+04), is not judged" in small.evidence
    small = e13.finding_too_small(g, {**f, "probes": []})  # fewer than 4 sizes: nothing to fit on
    assert small.verdict == "inconclusive" and small.evidence.startswith("no size has 3 larger ones")
