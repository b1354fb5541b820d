"""Project 10 end to end at the smoke preset: run, analyze from disk, report; and bad configs are refused
before anything is written or compiled."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from experiments import e10_norms_activations as e10
from lab.analysis import compare, headline
from lab.cli import main
from lab.errors import ConfigError
from lab.model import ModelConfig
from lab.runs import read_measurement, write_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e10")
    return results, out


def test_every_variant_trained_with_seeds_and_both_lrs(smoke):
    _, out = smoke
    cfg = e10.PRESET_TABLE["smoke"]
    names = e10.variants(cfg)
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == sorted(names)
    for name in names:
        c = json.loads((out / "runs" / name / "config.json").read_text())["config"]
        norm, placement = name.split("-")[:2]
        assert (c["model"]["norm"], c["model"]["norm_placement"]) == (norm, placement)
        lrs = sorted({m["lr"] for m in c["members"]})
        assert lrs == sorted(cfg.lrs) and len(c["members"]) == cfg.seeds * 2


def _final_losses(run_dir, lr):
    """Final val loss per member trained at `lr`, straight from metrics.jsonl and config.json."""
    members = json.loads((run_dir / "config.json").read_text())["config"]["members"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in rows if "val_loss" in r)
    final = {r["member"]: r["val_loss"] for r in rows if r["step"] == last and "val_loss" in r}
    return np.array([final[i] for i, m in enumerate(members) if m["lr"] == lr], dtype=float)


def test_findings_and_table_come_from_disk(smoke):
    results, out = smoke
    cfg = e10.PRESET_TABLE["smoke"]
    f = json.loads((out / "findings.json").read_text())
    assert f["seeds"] == 2 and [x["claim"][:12] for x in f["findings"]] == [
        "Removing the",
        "Without a no",
        "Post-norm tr",
    ]
    vals = _final_losses(out / "runs" / "layernorm-pre-gelu", cfg.lrs[0])
    table = (out / "tables" / "variants.md").read_text()
    assert f"| 0.001 | {np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f} |" in table
    # the no-norm verdict, recomputed from the metrics files by the rule (no run failed at this size, else
    # the failed ones would count at the untrained loss)
    base, none = (out / "runs" / "layernorm-pre-gelu", out / "runs" / "none-pre-gelu")
    parts = []
    for lr in cfg.lrs:
        a, b = _final_losses(base, lr), _final_losses(none, lr)
        assert (
            np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and "0/2 failed" in f["findings"][0]["evidence"]
        )
        parts.append(compare(a, b).verdict("greater"))
    assert f["findings"][0]["verdict"] == headline(parts)
    before = (out / "findings.json").read_text()
    (out / "plots" / "residual_rms.png").unlink()
    assert main(["analyze", "e10", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before
    for p in f["plots"]:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_made_up_activations_give_the_verdict_the_rule_gives(smoke, tmp_path):
    """No-norm residual RMS falling with depth while the baseline's rises: the growth claim is refuted by its
    CI, and the per-depth means are described (not monotone growth), not tested."""
    _, out = smoke
    cfg = e10.PRESET_TABLE["smoke"]
    copy = tmp_path / out.name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    acts = read_measurement(copy / "runs" / "activations.npz", cfg)
    depth = acts["none-pre-gelu:rms"].shape[1]
    noise = 1 + 0.01 * np.random.default_rng(0).standard_normal((cfg.seeds * 2, depth))
    acts["none-pre-gelu:rms"] = np.linspace(2.0, 1.0, depth) * noise
    acts["layernorm-pre-gelu:rms"] = np.linspace(1.0, 2.0, depth) * noise[::-1]
    write_measurement(copy / "runs" / "activations.npz", acts, cfg)
    assert main(["analyze", "e10", "--results", str(tmp_path)]) == 0
    growth = json.loads((copy / "findings.json").read_text())["findings"][1]
    assert growth["verdict"] == "refuted" and "not monotone in the seed means" in growth["evidence"]


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["norms=layernorm-pre,none-post"], "none-post"),
        (["norms=layernorm-pre,batchnorm-pre"], "allowed: layernorm-pre"),
        (["activations=gelu,swish"], "allowed: gelu, gelu_tanh, relu, swiglu, geglu"),
        (["model.norm=none"], "set per variant here"),
        (["model.activation=mish"], "model.activation"),
    ],
)
def test_bad_variants_are_refused_before_anything_runs(tmp_path, capsys, sets, needle):
    args = ["run", "e10", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) != 0
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "e10_norms_activations").exists()


def test_post_norm_with_no_norm_is_a_config_error():
    with pytest.raises(ConfigError, match="norm_placement"):
        ModelConfig(norm="none", norm_placement="post")


class _FakeRun:
    """What e10's findings read of a sweep: final val loss and peak lr per member (seeds x lrs), none failed
    unless its loss is non-finite."""

    def __init__(self, by_lr: dict):
        self.lrs = np.concatenate([np.full(len(v), lr) for lr, v in by_lr.items()])
        self.final_val_loss = np.concatenate([np.asarray(v, float) for v in by_lr.values()])

    def member_values(self, key):
        assert key == "lr"
        return self.lrs

    def failed(self, initial):
        return ~np.isfinite(self.final_val_loss)


def _made_up(**variants) -> "e10._Runs":
    cfg = e10.PRESET_TABLE["cpu"]
    runs = {name.replace("_", "-"): _FakeRun(dict(zip(cfg.lrs, v))) for name, v in variants.items()}
    return e10._Runs(cfg, runs, initial=5.0)


BASE = ([3.000, 3.002, 2.998], [3.200, 3.202, 3.198])  # layernorm-pre-gelu at the normal and the high lr


@pytest.mark.parametrize(
    "rms, verdict",
    [
        # the committed cpu numbers' shape: intervals ~0.3 nats wide, 15x the ±0.02 band -> inconclusive
        (([3.13, 3.05, 3.21], [3.20, 3.14, 3.26]), "inconclusive"),
        (([3.005, 3.007, 3.003], [3.195, 3.197, 3.193]), "supported"),  # tight, inside ±0.02
        (([3.30, 3.31, 3.29], [3.50, 3.51, 3.49]), "refuted"),  # tight, wholly outside
    ],
)
def test_rmsnorm_equal_within_the_margin_only_when_the_interval_lies_inside_it(rms, verdict):
    f = e10._rmsnorm(_made_up(layernorm_pre_gelu=BASE, rmsnorm_pre_gelu=rms))
    assert f.verdict == verdict, f.evidence
    said = {"supported": "inside", "refuted": "wholly outside", "inconclusive": "across the edge of"}[verdict]
    assert f"lies {said} ±{e10.EQUAL_MARGIN:g} ({verdict}" in f.evidence


@pytest.mark.parametrize(
    "none, verdict",
    [
        (([3.20, 3.21, 3.19], [np.nan] * 3), "supported"),  # hurts at both, far more at the high lr (failed)
        (([3.50, 3.51, 3.49], [3.50, 3.51, 3.49]), "qualified"),  # hurts at both, less at the high lr
    ],
)
def test_removing_the_norm_hurts_most_at_high_lr_is_decided_not_asserted(none, verdict):
    f = e10._no_norm(_made_up(layernorm_pre_gelu=BASE, none_pre_gelu=none))
    assert f.verdict == verdict and "minus at lr" in f.evidence, f.evidence


class _StubRuns:
    """Final losses by variant (seeds,), for the activation-clause finding alone."""

    def __init__(self, cfg, losses):
        self.cfg, self.losses = cfg, losses

    def compare(self, a, b, lr, p=False):
        c = compare(self.losses[a], self.losses[b])
        return c, f"{b} vs {a} at lr {lr:g}: {c.fmt(p=p)}"


@pytest.mark.parametrize(
    "relu_shift, verdict",
    [(0.001, "supported"), (0.5, "refuted"), (0.05, "inconclusive")],
)
def test_the_activation_clause_is_an_equivalence_within_the_margin(relu_shift, verdict):
    """Every activation within ±EQUAL_MARGIN of GELU (supported), one wholly outside (refuted), one whose CI
    crosses the margin's edge (inconclusive): the claim's second clause is decided, not assumed."""
    cfg = dataclasses.replace(e10.PRESET_TABLE["cpu"], activations=("gelu", "relu"))
    base = np.array([3.000, 3.004, 2.996])
    jitter = np.array([0.0, 0.03, -0.03]) if relu_shift == 0.05 else np.zeros(3)
    losses = {e10.BASE: base, f"{e10.BASE_NORM}-relu": base + relu_shift + jitter}
    f = e10._activations_matter_less(_StubRuns(cfg, losses))
    assert f.verdict == verdict, f.evidence
    assert f"{int(verdict == 'supported')} of 1 CIs lie inside ±{e10.EQUAL_MARGIN:g}" in f.evidence
