"""Project 5 end to end at the smoke preset, its analysis on hand-made samples with known verdicts, and the
dashboard serving the model it trained."""

import json

import numpy as np
import pytest

from experiments import e05_sampling as e05
from lab.analysis import compare, headline, summarize
from lab.cli import main
from lab.errors import CheckpointError, ConfigError
from lab.infer.dashboard import generate_response
from lab.infer.diversity import loop, repeated_ngram_fraction
from lab.infer.load import load_text_model
from lab.ops.sampling import knobs
from lab.runs import read_measurement, write_measurement
from lab.tokenizer.vocab import vocab_arrays

SMOKE = e05.PRESET_TABLE["smoke"]


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("e05")[1]


def test_the_loop_finding_follows_from_the_sample_files(smoke):
    """Finding 1 recomputed from runs/samples with NumPy: the repeated-4-gram comparison and its verdict."""
    found = json.loads((smoke / "findings.json").read_text())
    z = [read_measurement(smoke / "runs" / "samples" / f"seed{s}.npz", SMOKE) for s in range(SMOKE.seeds)]
    grid = e05.settings(SMOKE)
    assert [tuple(r) for r in z[0]["settings"]] == grid and z[0]["tokens"].shape == (3, len(grid), 16)

    def rep(j):
        return np.array(
            [np.mean([repeated_ngram_fraction(t, 4) for t in s["tokens"][:, j].tolist()]) for s in z]
        )

    def ends(j):  # the fraction of samples that end in a loop of period <= 32
        loops = [[loop(t, 3) for t in s["tokens"][:, j].tolist()] for s in z]
        return np.array([np.mean([lp is not None and lp[0] <= 32 for lp in seed]) for seed in loops])

    sampled = grid.index((1.0, 0, 1.0))
    c, c_loops = (compare(f(sampled), f(0), paired_by_seed=True) for f in (rep, ends))
    loops = found["findings"][0]
    assert c.fmt() in loops["evidence"] and summarize(rep(0)).fmt(3) in loops["evidence"]
    assert loops["verdict"] == headline([c.verdict("greater"), c_loops.verdict("greater")])
    # greedy draws from one token (zero entropy); every other setting from more than one
    assert (z[0]["entropy_after"][:, 0] < 1e-5).all() and (z[0]["entropy_after"][:, 1:] > 0).all()
    assert main(["analyze", "e05", "--results", str(smoke.parent)]) == 0
    assert json.loads((smoke / "findings.json").read_text()) == found
    with pytest.raises(CheckpointError, match="different config"):  # a stale file is refused
        read_measurement(
            smoke / "runs" / "samples" / "seed0.npz", SMOKE.__class__(**{**SMOKE.__dict__, "prompts": 4})
        )


def _write_samples(out, greedy, sampled, entropy):
    """Hand-made runs/samples for the smoke grid (greedy, T=1, T=1 p=0.9): the tokens of every greedy
    sample, of every sampled one, and the entropy of each setting (same in both seeds)."""
    grid = e05.settings(SMOKE)
    for s in range(SMOKE.seeds):
        toks = np.stack([[greedy, sampled, sampled]] * SMOKE.prompts).astype(np.int32)
        ent = np.broadcast_to(np.array(entropy, np.float32)[None, :, None], toks.shape)
        data = {"settings": np.array(grid), "prompts": np.zeros((3, 8), np.int32), "tokens": toks}
        data |= {"entropy_after": ent, "model_prob": np.full(toks.shape, 0.5, np.float32)}
        write_measurement(out / "runs" / "samples" / f"seed{s}.npz", data, SMOKE)
    write_measurement(out / "runs" / "vocab.npz", vocab_arrays(lambda i: bytes([i]), 256), SMOKE)


@pytest.mark.parametrize("loops_in", ["greedy", "sampled"])
def test_analysis_of_hand_made_samples_gives_the_known_verdicts(tmp_path, loops_in):
    looping, varied = np.full(16, 7), np.arange(16) * 3
    greedy, sampled = (looping, varied) if loops_in == "greedy" else (varied, looping)
    # entropy rises with diversity (distinct-2) across settings when sampled text varies, falls when it loops;
    # top-p (the third setting) lowers the entropy in the first case and raises it in the second
    _write_samples(tmp_path, greedy, sampled, [0.0, 2.0, 1.0] if loops_in == "greedy" else [0.0, 1.0, 2.0])
    f = e05.analyze(SMOKE, tmp_path)
    want = "supported" if loops_in == "greedy" else "refuted"
    assert [x.verdict for x in f.findings[:2]] == [want, want]
    # the model's log-probability is the same with and without top-p: that half of finding 3 is inconclusive
    assert f.findings[2].verdict == ("qualified" if loops_in == "greedy" else "refuted") == f.verdict
    assert (tmp_path / "tables" / "greedy.md").read_text().count("period 1 tokens from token 0") == (
        3 if loops_in == "greedy" else 0
    )


def test_the_config_refuses_a_grid_without_greedy():
    with pytest.raises(ConfigError, match="must include 0.0"):
        e05.E05Config(temperatures=(0.5, 1.0))


def test_dashboard_serves_the_trained_model(smoke):
    model = load_text_model(smoke / "runs" / "lm", member=1)
    assert model.cfg.vocab_size == 256 and "member 1" in model.description
    reply = generate_response(model, "def ", knobs(temperature=0.0), 0, 8, max_new=16)
    assert len(reply["tokens"]) == 8 and all(t["prob"] == pytest.approx(1.0) for t in reply["tokens"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_model(smoke / "runs")
    with pytest.raises(ConfigError, match="--member 5 is out of range"):
        load_text_model(smoke / "runs" / "lm", member=5)
