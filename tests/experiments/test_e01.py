"""Project 1 end to end at the smoke preset: run, analyze from disk, and the links between its parts
(the tokenizers on disk are the ones the models trained with; equal compute is equal FLOPs)."""

import json

import pytest

from experiments import e01_tokenization as e01
from lab.analysis.findings import VERDICTS
from lab.cli import main
from lab.data.pipeline import load_text_data
from lab.model.flops import train_flops_per_step
from lab.tokenizer import load, truncate


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e01")
    return results, out, e01.PRESET_TABLE["smoke"]


def test_findings_have_verdicts_and_numbers_and_analysis_is_reproducible(smoke):
    results, out, _ = smoke
    first = json.loads((out / "findings.json").read_text())
    assert first["verdict"] in VERDICTS and first["preset"] == "smoke" and first["seeds"] == 2
    assert len(first["findings"]) == 4 and all(f["verdict"] in VERDICTS for f in first["findings"])
    assert all("±" in f["evidence"] for f in first["findings"][1:])
    for p in first["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["analyze", "e01", "--results", str(results)]) == 0  # from files on disk only
    again = json.loads((out / "findings.json").read_text())
    assert again["findings"] == first["findings"]
    html = (out / "plots" / "tokens.html").read_text()
    assert html.count("<span class='t'") > 100 and "title='id " in html


def test_saved_tokenizers_are_the_ones_the_models_trained_with(smoke):
    _, out, cfg = smoke
    saved = load(out / "runs" / "tokenizers" / "gpt2")
    for v in cfg.lm_bpe_sizes:
        trained_with = load_text_data(e01._data_cfg(cfg, f"bpe{v}")).tokenizer.bpe
        assert truncate(saved, v).ranks == trained_with.ranks


def test_compression_table_matches_an_independent_count(smoke):
    _, out, cfg = smoke
    _, held_out = e01._split_text(cfg)
    tok = truncate(load(out / "runs" / "tokenizers" / "gpt4"), 300)
    want = len(held_out.encode("utf-8")) / len(tok.encode(held_out, backend="python"))
    row = next(
        line
        for line in (out / "tables" / "compression.md").read_text().splitlines()
        if line.startswith("| 300 |")
    )
    assert float(row.split("|")[3]) == pytest.approx(want, abs=5e-4)


def test_equal_compute_means_equal_flops(smoke):
    _, out, cfg = smoke
    budget = None
    for variant in e01._variants(cfg):
        run_cfg = json.loads((out / "runs" / "lm" / variant / "config.json").read_text())["config"]
        _, model, tcfg, _ = e01._lm(cfg, variant)
        assert run_cfg["train"]["steps"] == tcfg.steps
        flops = train_flops_per_step(model, tcfg.batch_size) * tcfg.steps
        per_step = train_flops_per_step(model, tcfg.batch_size)
        budget = budget or flops
        assert abs(flops - budget) <= per_step * tcfg.log_every / 2 + 1e-6
