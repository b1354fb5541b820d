"""Project 7 at the smoke preset: run measures, analyze reads files only; the tables and verdicts follow from
the run files (slopes refitted here with NumPy, the window finding recomputed with the rule), hand-made
accuracy curves give the verdicts they must, and bad sizes are refused in one line before anything is
written."""

import json
import shutil

import numpy as np
import pytest

from lab.analysis import compare, compare_to, headline, summarize
from lab.analysis.curves import change_point
from lab.cli import main
from lab.experiment import load_config, registry
from lab.runs import read_measurement, write_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run("e07")


def _cfg(out):
    import experiments

    return load_config(registry(experiments)["e07"], out)[1]


def _finding(f, needle):
    return next(x for x in f["findings"] if needle in x["claim"])


def test_tables_and_verdicts_follow_from_the_run_files(smoke):
    results, out = smoke
    cfg, f = _cfg(out), json.loads((out / "findings.json").read_text())
    scaling = read_measurement(out / "runs" / "scaling.json", cfg)
    table = (out / "tables" / "scaling.md").read_text()
    for method in ("naive", "blocked", "banded"):  # the slope column is the least-squares log-log fit
        for mode in ("forward", "forward+backward"):
            slope = np.polyfit(np.log(cfg.mem_lengths), np.log(scaling["temp_bytes"][method][mode]), 1)[0]
            row = next(r for r in table.splitlines() if r.startswith(f"| {method} | {mode} |"))
            assert f"| {slope:.3f}" in row
    naive = scaling["temp_bytes"]["naive"]["forward+backward"]
    assert naive[-1] / naive[0] > 0.8 * (cfg.mem_lengths[-1] / cfg.mem_lengths[0]) ** 2  # quadratic, measured
    # the control (naive without XLA CPU's YNNPACK fusions) is measured on CPU, tabled with its own fit
    for mode in ("forward", "forward+backward"):
        ctl = scaling["naive_plain_temp_bytes"][mode]
        assert len(ctl) == len(cfg.mem_lengths) and all(b > 0 for b in ctl)
        slope = np.polyfit(np.log(cfg.mem_lengths), np.log(ctl), 1)[0]
        row = next(
            r
            for r in table.splitlines()
            if r.startswith(f"| naive, YNNPACK fusions off (control) | {mode} |")
        )
        assert f"| {slope:.3f}" in row
    # the evidence counts the score-sized (1 x H x T x T float32) buffers XLA's plan holds at each length
    n = np.asarray(naive, float) / (4 * cfg.mem_heads * np.asarray(cfg.mem_lengths, float) ** 2)
    assert ", ".join(f"{x:.2f}" for x in n) in _finding(f, "Temporary memory")["evidence"]
    # the window finding, recomputed from the accuracy grid with the rule
    acc = read_measurement(out / "runs" / "passkey_L1_window.npz", cfg)["accuracy"]
    T, W = cfg.task.seq_len, cfg.window
    assert acc.shape == (cfg.seeds, len(cfg.eval_lengths), max(cfg.eval_lengths) * T - 1)
    assert np.isnan(acc[:, 0, T - 1 :]).all() and np.isfinite(acc[:, 0, : T - 1]).all()
    at_t, chance = acc[:, 0, : T - 1], 1 / cfg.task.n_values
    d = np.arange(1, T)
    inside = compare_to(at_t[:, d < W].mean(1), 0.95).verdict("greater")
    beyond = compare_to(at_t[:, (d >= W) & (d < T - cfg.sinks)].mean(1), chance).verdict("equal", 0.05)
    cps = []
    for row in at_t:
        where, before, after = change_point(d, row)
        cps.append(where if before - after >= 0.5 * (1 - chance) else T)  # never collapses: counted at T
    at_w = compare_to(cps, W).verdict("equal", 2.0)
    assert _finding(f, "one-layer window")["verdict"] == headline([inside, beyond, at_w])
    assert f["verdict"] == headline([x["verdict"] for x in f["findings"]])
    # the other position schemes: the same distances (d < T) in sequences of T and of 2T, by the rule
    alibi = read_measurement(out / "runs" / "passkey_L1_full_alibi.npz", cfg)["accuracy"]
    same = [alibi[:, i, : T - 1].mean(1) for i in (0, 1)]
    assert _finding(f, "Per position scheme")["verdict"] == compare(*same, True).verdict("less")  # paired
    text = (out / "tables" / "positions.md").read_text()
    assert text.count("\n| alibi |") == 2  # one row in the accuracy block, one in the answer-loss block
    loss = read_measurement(out / "runs" / "passkey_L1_full_alibi.npz", cfg)["loss"]
    assert f"| alibi | {summarize(loss[:, 0, : T - 1].mean(1)).fmt(3)} |" in text
    stream = read_measurement(out / "runs" / "streaming.npz", cfg)
    n = cfg.stream_mult * cfg.text_model.max_len
    assert all(
        stream[v].shape == (cfg.seeds, n) and np.isfinite(stream[v]).all()
        for v in ("full", "window", "sinks")
    )
    # before the window fills, window and sinks compute what full attention computes (same positions)
    np.testing.assert_allclose(
        stream["window"][:, : cfg.text_window], stream["full"][:, : cfg.text_window], atol=1e-4
    )
    for p in f["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "findings.json").read_text()
    assert main(["analyze", "e07", "--results", str(results)]) == 0
    assert (out / "findings.json").read_text() == before


@pytest.mark.parametrize(
    "shape,verdict",
    [("step at W", "supported"), ("accurate everywhere", "qualified"), ("zero everywhere", "refuted")],
)
def test_hand_made_accuracy_curves_give_the_known_verdict(smoke, tmp_path, shape, verdict):
    """The one-layer window model's accuracy curve at T, made by hand. A step from 1.0 to chance at W: inside,
    at chance beyond and collapsing at W all supported. Accurate everywhere: inside supported, beyond
    refuted, no collapse (each seed's collapse point counted at T, far from W: refuted) -> qualified. Zero everywhere: inside refuted, beyond refuted (below
    chance by more than the margin), no collapse -> refuted."""
    _, out = smoke
    copy = tmp_path / out.name
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = _cfg(copy)
    T, W, chance = cfg.task.seq_len, cfg.window, 1 / cfg.task.n_values
    path = copy / "runs" / "passkey_L1_window.npz"
    m = read_measurement(path, cfg)
    d = np.arange(1, T)
    curve = {"step at W": np.where(d < W, 1.0, chance), "accurate everywhere": np.ones(T - 1)}.get(
        shape, np.zeros(T - 1)
    )
    m["accuracy"][:, 0, : T - 1] = curve
    write_measurement(path, m, cfg)
    assert main(["analyze", "e07", "--results", str(tmp_path)]) == 0
    f = json.loads((copy / "findings.json").read_text())
    window = _finding(f, "one-layer window")
    assert window["verdict"] == verdict, window["evidence"]
    if shape == "step at W":
        assert f"collapse point {W:.1f} ± 0.0 vs W = {W}" in window["evidence"]
    else:
        assert f"{cfg.seeds} of {cfg.seeds} seeds never collapse, counted at T = {T}" in window["evidence"]


def test_each_position_scheme_is_decided_on_the_training_distances_and_its_collapse_found():
    """One scheme keeps its training distances in sequences twice as long and collapses exactly at T (the
    unseen distances); the other loses them: qualified, and supported once both lose them."""
    import dataclasses

    import experiments.e07_long_context as e07

    cfg = dataclasses.replace(e07.PRESET_TABLE["smoke"], eval_lengths=(1, 2))
    T = cfg.task.seq_len
    keeps = np.full((3, 2, 2 * T - 1), np.nan)
    keeps[:, 0, : T - 1] = 1.0
    keeps[:, 1, : T - 1] = np.array([[1.0], [0.99], [1.0]])
    keeps[:, 1, T - 1 :] = 0.0
    falls = keeps.copy()
    falls[:, 1, : T - 1] = np.array([[0.5], [0.4], [0.45]])
    np.testing.assert_array_equal(e07._at_lengths(cfg, keeps)["collapse"], [T, T, T])
    f = e07._finding_positions(cfg, {"rope": falls, "alibi": keeps})
    assert f.verdict == "qualified", f.evidence
    assert f"rope: 1.000 ± 0.000 in {T} vs 0.450 ± 0.050 in {2 * T}" in f.evidence
    assert "alibi: 1.000 ± 0.000" in f.evidence and "unseen distances 0.000 ± 0.000" in f.evidence
    assert e07._finding_positions(cfg, {"rope": falls, "alibi": falls.copy()}).verdict == "supported"


def test_the_length_finding_holds_the_distances_fixed_and_reports_unseen_ones_apart():
    """Full attention that keeps its training distances in sequences twice as long, but fails at distances it
    never saw: more context did not hurt (not supported), and the unseen distances are reported at 0. Losing
    the training distances too is a fall (supported)."""
    import dataclasses

    import experiments.e07_long_context as e07

    cfg = dataclasses.replace(e07.PRESET_TABLE["smoke"], eval_lengths=(1, 2))
    T, W, seeds = cfg.task.seq_len, cfg.window, 3
    full = np.full((seeds, 2, 2 * T - 1), np.nan)
    full[:, 0, : T - 1] = 1.0
    full[:, 1, : T - 1] = np.array([[1.0], [0.99], [1.0]])
    full[:, 1, T - 1 :] = 0.0
    window = np.zeros_like(full)
    window[:, 1, : W - 1] = 1.0
    grid = {(1, "full"): {"accuracy": full}, (1, "window"): {"accuracy": window}}
    f = e07._finding_length(cfg, grid)
    assert f.verdict != "supported", f.evidence
    assert f"at the unseen distances {T}..{2 * T - 1}: 0.000 ± 0.000" in f.evidence
    full[:, 1, : T - 1] = np.array([[0.5], [0.4], [0.45]])
    assert e07._finding_length(cfg, grid).verdict == "supported"


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["window=0"], "window must be >= 1, got 0"),
        (["sinks=5"], "sinks must be in 0..window (4), got 5"),
        (["block=0"], "block must be >= 1, got 0"),
        (["mem_block=-1"], "mem_block must be >= 1, got -1"),
        (["text_sinks=9"], "text_sinks must be in 0..text_window (8), got 9"),
        (["text_window=0", "text_sinks=0"], "text_window must be >= 1, got 0"),
        (["mem_window=0"], "mem_window must be >= 1, got 0"),
        (["model.position=learned"], "learned positions cannot run past the training length"),
        (["positions=learned"], "positions: unknown ['learned']; allowed: none, sinusoidal, rope, alibi"),
        (["positions=rope"], "positions lists model.position ('rope')"),
    ],
)
def test_bad_sizes_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys, sets, needle):
    args = ["run", "e07", "--preset", "smoke", "--results", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "e07_long_context").exists()


def test_naive_mechanism_names_where_the_plan_changes():
    """Hand-made plans: the length pair where the count of T x T buffers changes most is named only when it
    changes by half a buffer or more; a missing control is said to be missing."""
    import experiments.e07_long_context as e07

    cfg = e07.PRESET_TABLE["cpu"]
    L = np.asarray(cfg.mem_lengths, float)
    score = 4 * cfg.mem_heads * L * L
    bent = {"temp_bytes": {"naive": {"forward+backward": list(score * [5, 5, 3, 3, 3, 3])}}}
    text = e07._naive_mechanism(cfg, bent, "forward+backward")
    assert "5.00, 5.00, 3.00, 3.00, 3.00, 3.00" in text
    assert f"between T = {cfg.mem_lengths[1]} and {cfg.mem_lengths[2]} (5.00 -> 3.00)" in text
    assert "no control" in text
    steady = {
        "temp_bytes": {"naive": {"forward+backward": list(score * 4.0)}},
        "naive_plain_temp_bytes": {"forward+backward": list(score * 4.0 + 1000 * L)},
    }
    text = e07._naive_mechanism(cfg, steady, "forward+backward")
    assert "changing most" not in text and "slope between the last two lengths 2.000" in text
    assert "4.01..4.24 buffers" in text


def test_first_seed_is_checked_and_the_cpu_preset_uses_fresh_seeds():
    import experiments.e07_long_context as e07
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match="first_seed must be >= 0"):
        e07.E07Config(first_seed=-1)
    assert e07.PRESET_TABLE["cpu"].first_seed == 5  # the seed count was chosen on seeds 0-4
