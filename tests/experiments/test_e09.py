"""Project 9 end to end at the smoke preset: run, analyze from disk, G = H conversion exact, cache bytes
equal the formula, every variant has its seeds; bad configs are refused before anything compiles."""

import json

import numpy as np
import pytest

from experiments import e09_gqa as e09
from lab.analysis.findings import VERDICTS
from lab.cli import main
from lab.runs import load_run


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e09")
    return results, out, e09.PRESET_TABLE["smoke"]


def test_findings_have_verdicts_and_analysis_is_reproducible(smoke):
    results, out, cfg = smoke
    first = json.loads((out / "findings.json").read_text())
    assert first["verdict"] in VERDICTS and first["preset"] == "smoke" and first["seeds"] == cfg.seeds
    assert len(first["findings"]) == 5 and all(f["verdict"] in VERDICTS for f in first["findings"])
    assert first["findings"][0]["verdict"] == "supported"  # G = H conversion is exact
    assert first["findings"][3]["verdict"] == "supported"  # bytes = formula
    for p in first["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["analyze", "e09", "--results", str(results)]) == 0
    assert json.loads((out / "findings.json").read_text())["findings"] == first["findings"]


def test_conversion_and_uptraining_numbers_on_disk(smoke):
    _, out, cfg = smoke
    up = json.loads((out / "runs" / "uptrain.json").read_text())["groups"]
    mha = load_run(out / "runs" / "mha").final_val_loss
    h = cfg.model.n_heads
    np.testing.assert_array_equal(np.array(up[str(h)]["val_before"]), mha)  # G = H: the same model
    for g in cfg.groups:
        assert len(up[str(g)]["val_before"]) == len(up[str(g)]["val_after"]) == cfg.seeds
        if g != h:
            assert not np.array_equal(np.array(up[str(g)]["val_before"]), mha)
            assert len(load_run(out / "runs" / "scratch" / f"G{g}").final_val_loss) == cfg.seeds
    dec = json.loads((out / "runs" / "decode.json").read_text())["rows"]
    assert len(dec) == len(cfg.groups) * len(cfg.decode_contexts) * len(cfg.decode_batches)
    for r in dec:
        m = cfg.model
        want = 2 * m.n_layers * r["batch"] * r["groups"] * m.head_dim * r["context"] * 4
        assert r["cache_bytes"] == r["formula_bytes"] == want and len(r["seconds_per_step"]) == cfg.seeds


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("groups=3", "groups must divide model.n_heads"),
        ("groups=1", "groups must include model.n_heads"),
        ("model.n_kv_heads=1", "model must be multi-head"),
        ("uptrain_steps=0", "uptrain_steps must be >= 1"),
        ("decode_steps=64", "decode_steps must be in"),
    ],
)
def test_bad_configs_are_one_line_errors(capsys, tmp_path, override, fragment):
    args = ["run", "e09", "--preset", "smoke", "--results", str(tmp_path), "--set", override]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "e09_gqa").exists()
