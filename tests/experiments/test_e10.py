"""Project 10 end to end at the smoke preset: run, analyze from disk, report; and bad configs are refused
before anything is written or compiled."""

import json

import numpy as np
import pytest

from experiments import e10_norms_activations as e10
from lab.analysis.findings import VERDICTS
from lab.cli import main
from lab.errors import ConfigError
from lab.model import ModelConfig


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e10")
    return results, out


def test_every_variant_trained_with_seeds_and_both_lrs(smoke):
    _, out = smoke
    cfg = e10.PRESET_TABLE["smoke"]
    names = [n for n, _, _ in e10.variants(cfg)]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(names)
    for name in names:
        c = json.loads((out / "runs" / name / "config.json").read_text())["config"]
        norm, placement = name.split("-")[:2]
        assert (c["model"]["norm"], c["model"]["norm_placement"]) == (norm, placement)
        lrs = sorted({m["lr"] for m in c["members"]})
        assert lrs == sorted(cfg.lrs) and len(c["members"]) == cfg.seeds * 2


def test_findings_and_table_come_from_disk(smoke):
    results, out = smoke
    f = json.loads((out / "findings.json").read_text())
    assert f["verdict"] in VERDICTS and f["seeds"] == 2
    assert len(f["findings"]) >= 3 and all(x["verdict"] in VERDICTS for x in f["findings"])
    assert all("±" in x["evidence"] or "diverged" in x["evidence"] for x in f["findings"])
    rows = [
        json.loads(line)
        for line in (out / "runs" / "layernorm-pre-gelu" / "metrics.jsonl").read_text().splitlines()
    ]
    last = max(r["step"] for r in rows)
    vals = [r["val_loss"] for r in rows if r["step"] == last and r["member"] < 2]  # lr 1e-3 members
    table = (out / "tables" / "variants.md").read_text()
    assert f"| 0.001 | {np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f} |" in table
    before = (out / "findings.json").read_text()
    (out / "plots" / "residual_rms.png").unlink()
    assert main(["analyze", "e10", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before
    for p in f["plots"]:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


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
