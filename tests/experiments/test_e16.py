"""Project 16 end to end at the smoke preset: every data condition trains on equal tokens and is evaluated on
the same clean real validation text, the cleaning left no contamination, the realized noise and wrong-fact
rates match the stated ones, the fact probe has one true value per fact, the collapse chains ran their generations, the findings follow the rule from the files, the
analysis needs no JAX; bad settings are one-line errors before anything is written; the findings on made-up
numbers give the verdicts the rule gives."""

import json
import math

import numpy as np
import pytest

from experiments import e16_synthetic_data as e16
from lab.analysis import compare, compare_to, headline
from lab.cli import main
from lab.runs import load_run, read_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("e16")


def test_conditions_share_one_validation_text_and_equal_tokens(smoke):
    _, out = smoke
    cfg = e16.PRESET_TABLE["smoke"]
    conf = json.loads((out / "runs" / "curves" / "config.json").read_text())["config"]
    names = e16.conditions(cfg)
    assert conf["task"]["kind"] == "member_streams" and conf["task"]["n_streams"] == len(names)
    assert [m["extra"][0] for m in conf["members"]] == [
        c for c in range(len(names)) for _ in range(cfg.seeds)
    ]
    streams, record = e16.prepare(cfg)
    assert {streams[n].size for n in names} == {record["stream_tokens"]}  # equal tokens per condition
    assert record["contamination_after_dedupe"] == {"train-val": 0, "train-test": 0, "val-test": 0}
    assert sum(record["split_documents"].values()) == record["dedup"]["kept"]
    inj = record["injected"]  # the cleaning probe: every injected exact copy removed, the near ones found
    assert inj["exact_injected"] > 0 and inj["exact_removed"] == inj["exact_injected"]
    assert inj["near_J>=0.8_removed"] >= 0.95 * inj["near_J>=0.8_injected"]
    assert inj["near_J>=0.8_injected"] + inj["near_J<0.8_injected"] > 0
    for p in cfg.noise_levels:  # realized rates within 3 binomial sd of the stated level
        nz = record["noise"][f"{p:g}"]
        for k, n in (("chars_changed", "chars"), ("tokens_selected", "tokens")):
            assert abs(nz[k] - p * nz[n]) <= 3 * math.sqrt(nz[n] * p * (1 - p)) + 1e-9
    facts = [f"facts@{r:g}" for r in cfg.wrong_rates]
    assert {streams[n].size for n in facts} == {record["stream_tokens"]}
    world = e16.synthetic.FactWorld(cfg.data_seed, cfg.fact_entities)
    for r in cfg.wrong_rates:  # realized wrong-fact rates (in the stream trained on) within 3 sd of the rate
        w = record["wrong_facts"][f"{r:g}"]
        assert (w["wrong"], w["statements"]) == e16.wrong_statements(streams[f"facts@{r:g}"], world)
        assert w["statements"] > 50
        assert abs(w["wrong"] - r * w["statements"]) <= 3 * math.sqrt(w["statements"] * r * (1 - r)) + 1e-9
    probe = e16.fact_probe(cfg)  # one true candidate per fact, each row ending in its value and "."
    n_facts = cfg.fact_entities * len(e16.synthetic.ATTRIBUTES)
    assert np.bincount(probe["fact"][probe["true"]]).tolist() == [1] * n_facts
    assert probe["tokens"].shape[1] == cfg.model.max_len + 1
    for row, v, start, tail in zip(probe["tokens"], probe["value"], probe["start"], probe["tail"]):
        assert bytes(row[start - 1 : start + tail]) == f" {v}.".encode()  # the value's bytes, nothing else
    for f in range(n_facts):  # every candidate of a fact scored after the same context, at the same place
        rows = probe["fact"] == f
        assert (
            len(set(probe["start"][rows])) == 1
            and len({bytes(r[: probe["start"][rows][0]]) for r in probe["tokens"][rows]}) == 1
        )
    # the mixture is the noisy real stream's head and the synthetic stream's head, in the stated shares
    k = int(round(cfg.mix_fraction * record["stream_tokens"]))
    for p in cfg.mix_levels:
        mix = streams[f"mix@{p:g}"]
        assert np.array_equal(mix[-k:], streams["synthetic"][:k])
        assert np.array_equal(mix[:-k], streams[f"real@{p:g}"][: mix.size - k])


def test_collapse_chains_and_findings_follow_the_rule_from_the_files(smoke):
    results, out = smoke
    cfg = e16.PRESET_TABLE["smoke"]
    gens = [load_run(out / "runs" / "collapse" / f"gen{g}") for g in range(cfg.generations + 1)]
    assert all(len(r.members) == 2 * cfg.seeds for r in gens)
    collapse = read_measurement(out / "runs" / "collapse.json", cfg)
    for g in range(cfg.generations + 1):
        for m in collapse[f"gen{g}"]:
            assert 0 < m["distinct"] <= 1 and 0 <= m["rare_mass"] <= 1
    run = load_run(out / "runs" / "curves")
    final = e16.final_losses(cfg, run)
    hi = cfg.noise_levels[-1]
    parts = [
        compare(final["real@0"], final["synthetic"], paired_by_seed=True).verdict("greater"),
        compare(final[f"real@{hi:g}"], final["synthetic"], paired_by_seed=True).verdict("less"),
    ]
    series = e16.collapse_series(cfg, gens, collapse)
    g = cfg.generations
    rep = series["replace"]
    rep_parts = [
        compare(rep["loss"][0], rep["loss"][g], paired_by_seed=True).verdict("greater"),
        compare(rep["rare_mass"][0], rep["rare_mass"][g], paired_by_seed=True).verdict("less"),
        compare(rep["distinct"][0], rep["distinct"][g], paired_by_seed=True).verdict("less"),
    ]
    f = json.loads((out / "findings.json").read_text())
    verdicts = [x["verdict"] for x in f["findings"]]
    assert verdicts[0] == headline(parts) and verdicts[2] == headline(rep_parts)
    assert f["verdict"] == headline(verdicts)
    assert f"synthetic {np.mean(final['synthetic']):.3f} ±" in f["findings"][0]["evidence"]
    facts = read_measurement(out / "runs" / "facts.json", cfg)
    ftab = e16.fact_table(cfg, facts, load_run(out / "runs" / "facts"))
    lo, hi = (f"{r:g}" for r in (cfg.wrong_rates[0], cfg.wrong_rates[-1]))
    learned = compare_to(ftab[lo]["p_true"], facts["chance"]).verdict("greater") == "supported"
    drop = compare(ftab[lo]["p_true"], ftab[hi]["p_true"], paired_by_seed=True).verdict("less")
    assert (
        verdicts[-1] == (drop if learned else "inconclusive") and "Wrong facts" in f["findings"][-1]["claim"]
    )
    assert all(0 < p <= 1 for p in facts["p_true"]) and facts["facts"] == cfg.fact_entities * 4
    for p in f["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "findings.json").read_text()
    assert main(["analyze", "e16", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["noise_levels=0,0.5,1.5"], "noise_levels must be a rate in [0, 1], got 1.5"),
        (["mix_fraction=-0.1"], "mix_fraction must be a rate in [0, 1], got -0.1"),
        (["dedup.lsh_threshold=1.0"], "lsh_threshold must be in (0, 1) (exclusive), got 1.0"),
        (["collapse_tokens=100"], "collapse_tokens (100) is smaller than one batch of train (8 x 17 tokens)"),
        (["noise_levels=0,0.5"], "noise_levels must be >= 3 distinct increasing rates including 0"),
        (["wrong_rates=0.2,0.4"], "wrong_rates must be >= 2 distinct increasing rates including 0"),
        (["wrong_rates=0,1.5"], "wrong_rates must be a rate in [0, 1], got 1.5"),
        (["fact_entities=0"], "n_entities must be >= 1, got 0"),
    ],
)
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, capsys, sets, needle):
    args = ["run", "e16", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "e16_synthetic_data" / "runs").exists()


@pytest.mark.parametrize(
    "gap, want",
    [
        ([-0.2, -0.1, 0.1, 0.3], 0.25 + 0.25 * 0.5),  # crosses between 0.25 and 0.5, halfway
        ([0.1, 0.2, 0.3, 0.4], 0.0),  # synthetic already better than clean real
        ([-0.3, -0.2, -0.1, -0.05], math.nan),  # never crosses
    ],
)
def test_crossing_interpolates_the_first_sign_change(gap, want):
    got = e16.crossing([0.0, 0.25, 0.5, 0.75], gap)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


def _final(cfg, synth, real_by_level):
    out = {f"real@{p:g}": np.asarray(real_by_level[i], float) for i, p in enumerate(cfg.noise_levels)}
    out["synthetic"] = np.asarray(synth, float)
    for p in cfg.mix_levels:
        out[f"mix@{p:g}"] = out[f"real@{p:g}"] - 0.1
    return out


def test_crossover_finding_on_made_up_numbers():
    cfg = e16.PRESET_TABLE["cpu"]
    n = len(cfg.noise_levels)
    # real loss rises linearly with the noise level from 3.0 to 4.0; synthetic 3.5: crossing at p = 0.4
    real = [[3.0 + p / 0.8 + d for d in (-0.01, 0.0, 0.01)] for p in cfg.noise_levels]
    f = e16.finding_crossover(cfg, _final(cfg, [3.49, 3.5, 3.51], real))
    assert f.verdict == "supported" and "crossover noise level 0.400 [95% CI" in f.evidence
    x = e16.crossover(cfg, _final(cfg, [3.49, 3.5, 3.51], real))
    assert x["per_seed"] == pytest.approx([0.4, 0.4, 0.4], abs=1e-9)
    # synthetic worse than even the noisiest real data: no crossover, and the second part is refuted
    f = e16.finding_crossover(cfg, _final(cfg, [4.5, 4.5, 4.51], real))
    assert f.verdict == "qualified" and "for 0 of 3 seeds" in f.evidence
    assert n >= 3


def test_the_wrong_facts_finding_on_made_up_numbers():
    cfg = e16.PRESET_TABLE["cpu"]
    wrong = {f"{r:g}": {"rate": r} for r in cfg.wrong_rates}
    facts = {"chance": 0.11, "facts": 32, "fewest_candidates": 8}
    row = lambda p: {"p_true": np.asarray(p), "top1": np.asarray(p), "loss": np.asarray([0.3, 0.3, 0.3])}
    learned = {"0": row([0.6, 0.62, 0.64]), "0.2": row([0.4, 0.42, 0.41]), "0.4": row([0.3, 0.29, 0.3])}
    assert e16.finding_facts(cfg, learned, facts, wrong).verdict == "supported"
    older = e16.finding_facts(
        cfg, learned, {"chance": 0.11, "facts": 32}, wrong
    )  # a measurement before the count
    assert older.evidence.startswith("32 facts of") and "true value on top" not in older.evidence
    flat = {"0": row([0.6, 0.62, 0.64]), "0.2": row([0.6, 0.63, 0.62]), "0.4": row([0.61, 0.6, 0.65])}
    assert e16.finding_facts(cfg, flat, facts, wrong).verdict == "inconclusive"
    never = {"0": row([0.1, 0.12, 0.11]), "0.2": row([0.1, 0.1, 0.1]), "0.4": row([0.05, 0.05, 0.05])}
    f = e16.finding_facts(cfg, never, facts, wrong)  # a drop, but the facts were never learned: not judged
    assert f.verdict == "inconclusive" and "did not learn the true facts" in f.evidence


def test_collapse_findings_on_made_up_numbers():
    cfg = e16.PRESET_TABLE["cpu"]
    g = cfg.generations
    gens = np.arange(g + 1)[:, None] + np.zeros((1, 3))
    noise = np.array([[-0.01, 0.0, 0.01]])
    collapse = {"loss": 3.5 + 0.3 * gens + noise, "distinct": 0.9 - 0.1 * gens + noise,
                "rare_mass": 0.1 - 0.015 * gens + noise / 10, "types": 90 - gens}  # fmt: skip
    flat = {"loss": 3.5 + 0 * gens + noise, "distinct": 0.9 + 0 * gens + noise,
            "rare_mass": 0.1 + 0 * gens + noise / 10, "types": 90 + 0 * gens}  # fmt: skip
    series = {"replace": collapse, "accumulate": flat}
    assert e16.finding_collapse(cfg, series, "replace").verdict == "supported"
    assert e16.finding_collapse(cfg, series, "accumulate").verdict == "supported"
    better = {"loss": 3.5 - 0.05 * gens + noise, "distinct": 0.5 + 0.05 * gens + noise,
              "rare_mass": 0.05 + 0.01 * gens + noise / 10, "types": 90 + gens}  # fmt: skip
    series = {"replace": better, "accumulate": collapse}
    assert e16.finding_collapse(cfg, series, "replace").verdict == "refuted"
    assert e16.finding_collapse(cfg, series, "accumulate").verdict == "refuted"


def test_the_frequency_learners_top_value_is_computed_not_assumed():
    """1 - r against r / (k - 1): the true value stays on top below r = (k - 1) / k, not above it."""
    assert e16._frequency_top(0.406, 8).startswith(" and the true value on top of every fact")
    assert e16._frequency_top(0.9, 8).startswith(", but not the true value on top")
    assert e16._frequency_top(0.6, 2).startswith(", but not")
