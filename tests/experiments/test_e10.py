"""Project 10 end to end at the smoke preset: run, analyze from disk, report; and bad configs are refused
before anything is written or compiled."""

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
    """No-norm residual RMS made equal to the baseline's and falling with depth: the growth claim is refuted."""
    _, out = smoke
    cfg = e10.PRESET_TABLE["smoke"]
    copy = tmp_path / out.name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    acts = read_measurement(copy / "runs" / "activations.npz", cfg)
    falling = np.linspace(2.0, 1.0, acts["none-pre-gelu:rms"].shape[1])
    acts["none-pre-gelu:rms"] = acts["layernorm-pre-gelu:rms"] = np.tile(falling, (cfg.seeds * 2, 1))
    write_measurement(copy / "runs" / "activations.npz", acts, cfg)
    assert main(["analyze", "e10", "--results", str(tmp_path)]) == 0
    growth = json.loads((copy / "findings.json").read_text())["findings"][1]
    assert growth["verdict"] == "refuted" and "not monotone" in growth["evidence"]


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


def test_analysis_redraws_the_same_findings_where_jax_cannot_compute(smoke, analysis_without_jax):
    analysis_without_jax("e10", smoke[1])
