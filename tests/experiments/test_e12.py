"""Project 12 end to end at the smoke preset: every training went through the one driver (PPO included, with
its rollout statistics in the metrics), KL is 0 at PPO's step 0, DPO's loss is ln 2 at its step 0, the reward
model ranks held-out pairs, a PPO run resumed from a checkpoint writes the same metrics bit for bit, the
analysis needs no JAX, and the findings follow the rule on made-up numbers. Bad settings are one-line errors."""

import json
import math
import shutil

import numpy as np
import pytest

from experiments import e12_alignment as e12
from lab.cli import main
from lab.runs import read_measurement, read_rows
from lab.train import train_sweep

SWEEPS = ("pretrain", "finetune", "instruct", "reward", "ppo", "dpo")


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("e12")


def test_every_stage_trained_through_the_driver(smoke):
    _, out = smoke
    cfg = e12.PRESET_TABLE["smoke"]
    assert cfg.first_seed == e12.PRESET_TABLE["cpu"].first_seed == 3
    for name in SWEEPS:
        d = out / "runs" / name
        config = json.loads((d / "config.json").read_text())["config"]
        assert len(config["members"]) == cfg.seeds and (d / "checkpoints").is_dir()
        # fresh seeds (the instruction-tuning length was chosen on 0-2); extra[0] stays the member's index
        assert [(m["seed"], m["extra"][0]) for m in config["members"]] == [
            (cfg.first_seed + i, i) for i in range(cfg.seeds)
        ]
        assert max(r["step"] for r in read_rows(d / "metrics.jsonl")) == getattr(cfg, name).steps
        # on CPU under the default strategy every stage is one vmapped program (no padded members)
        assert json.loads((d / "timing.json").read_text())["strategy"] == "vmap", name
    task = json.loads((out / "runs" / "ppo" / "config.json").read_text())["config"]["task"]
    assert task["kind"] == "ppo" and task["kl_coef"] == cfg.kl_coef and task["epochs"] == cfg.ppo_epochs
    loss = json.loads((out / "runs" / "reward" / "config.json").read_text())["config"]["loss"]
    assert loss.endswith("reward_model_loss")
    rows = read_rows(out / "runs" / "ppo" / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert train and all(
        k in r for r in train for k in ("proxy_reward", "gold_reward", "kl_k1", "kl_k3", "bang_count")
    )
    assert all(r["kl_k3"] >= 0 for r in train)  # k3 is never negative; k1 can be


def test_kl_is_zero_at_step_0_and_dpo_starts_at_ln2(smoke):
    _, out = smoke
    first = [r for r in read_rows(out / "runs" / "ppo" / "metrics.jsonl") if r["step"] == 0]
    assert first and all(r["val_kl_k1"] == 0.0 and r["val_kl_k3"] == 0.0 for r in first)
    dpo0 = [r["val_loss"] for r in read_rows(out / "runs" / "dpo" / "metrics.jsonl") if r["step"] == 0]
    assert dpo0 and all(abs(v - math.log(2)) < 1e-6 for v in dpo0), dpo0


def test_reward_model_ranks_held_out_pairs(smoke):
    _, out = smoke
    cfg = e12.PRESET_TABLE["smoke"]
    m = read_measurement(out / "runs" / "measure.json", cfg)
    assert m["pairs"]["val"] >= 20
    assert min(m["rm_accuracy"]) >= 0.85, m["rm_accuracy"]


def test_a_resumed_ppo_run_writes_the_same_metrics(smoke, tmp_path):
    _, out = smoke
    cfg = e12.PRESET_TABLE["smoke"]
    assert cfg.ppo.ckpt_every < cfg.ppo.steps  # a checkpoint to resume from
    run_dir = tmp_path / "ppo"
    shutil.copytree(out / "runs" / "ppo", run_dir)
    shutil.rmtree(run_dir / "checkpoints" / str(cfg.ppo.steps))  # as if killed after the mid checkpoint
    sft, rm = (e12.stage_params(cfg, out, n) for n in ("instruct", "reward"))
    norm = json.loads((run_dir / "config.json").read_text())["config"]["data"]["norm"]
    strategy = json.loads((run_dir / "timing.json").read_text())["strategy"]  # resume as the run was made
    result = train_sweep(run_dir, e12.ppo_spec(cfg, sft, rm, norm), progress=False, strategy=strategy)
    assert result.resumed_from == cfg.ppo.ckpt_every
    assert (run_dir / "metrics.jsonl").read_text() == (out / "runs" / "ppo" / "metrics.jsonl").read_text()


def test_findings_follow_the_rule_from_the_files(smoke):
    _, out = smoke
    cfg = e12.PRESET_TABLE["smoke"]
    f = json.loads((out / "findings.json").read_text())
    m = read_measurement(out / "runs" / "measure.json", cfg)
    want = [e12.finding_skills_kept(cfg, m), e12.finding_feature_moves(m)]
    assert [x["verdict"] for x in f["findings"][:2]] == [w.verdict for w in want]
    assert f["verdict"] == e12.headline(want)
    assert {"plots/rlhf.png", "plots/skills.png"} <= set(f["plots"])


def _made_up(instruct_em, ppo_em, instruct_bang, ppo_bang):
    stage = lambda em, bang: {"exact_match": {k: list(em) for k in e12.D.SKILLS}, "bang_count": list(bang)}
    return {"stages": {"instruct": stage(instruct_em, instruct_bang), "ppo": stage(ppo_em, ppo_bang)}}


@pytest.mark.parametrize(
    "ppo_em, ppo_bang, skills, feature",
    [
        ([0.93, 0.90, 0.95], [2.1, 2.4, 2.2], "supported", "supported"),  # skills kept, "!" up
        ([0.50, 0.45, 0.52], [2.1, 2.4, 2.2], "refuted", "supported"),  # skills lost
        ([0.93, 0.90, 0.95], [0.70, 0.71, 0.69], "supported", "inconclusive"),  # nothing moved
        ([0.99, 0.80, 0.92], [0.2, 0.1, 0.3], "inconclusive", "refuted"),  # noisy skills, "!" down
    ],
)
def test_claim_findings_on_made_up_numbers(ppo_em, ppo_bang, skills, feature):
    cfg = e12.PRESET_TABLE["cpu"]
    m = _made_up([0.92, 0.91, 0.94], ppo_em, [0.7, 0.72, 0.69], ppo_bang)
    assert e12.finding_skills_kept(cfg, m).verdict == skills
    assert e12.finding_feature_moves(m).verdict == feature


def test_over_optimization_finding_on_made_up_curves():
    cfg = e12.PRESET_TABLE["cpu"]
    ns = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    d = np.sqrt(np.log(ns) - (ns - 1) / ns)
    bend = np.stack([d * (1.0 - s * d) for s in (0.4, 0.45, 0.5)])
    straight = np.stack([d * (1.0 + s * d) for s in (0.1, 0.12, 0.14)])
    assert e12.finding_overopt(cfg, {"d": d, "gold_gain": bend}).verdict == "supported"
    assert e12.finding_overopt(cfg, {"d": d, "gold_gain": straight}).verdict == "refuted"


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["kl_coef=-0.1"], "kl_coef must be >= 0, got -0.1"),
        (["clip=0"], "clip must be > 0, got 0.0"),
        (["ppo_epochs=0"], "ppo_epochs must be >= 1, got 0"),
        (["n_pairs=0"], "preference data cannot be empty"),
        (["first_seed=-1"], "first_seed must be >= 0, got -1"),
    ],
)
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, capsys, sets, needle):
    args = ["run", "e12", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "e12_alignment").exists()
