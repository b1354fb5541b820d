"""Project 6 end to end at the smoke preset: the measurement files (cached tokens equal uncached ones,
measured cache bytes equal the formula, the timeline comes from the caches' own slot positions), verdicts
that are the toolkit's rule on those numbers, analysis that redraws the same findings from disk, verdicts
on made-up timings; bad configs are refused before anything compiles."""

import json
import math

import numpy as np
import pytest

from experiments import e06_kv_cache as e06
from lab.analysis import compare, compare_to, headline
from lab.cli import main
from lab.infer import cache_trace as ct
from lab.runs import read_measurement


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e06")
    return results, out, e06.PRESET_TABLE["smoke"]


def test_measurements_are_complete_and_exact(smoke):
    _, out, cfg = smoke
    gen = read_measurement(out / "runs" / "generation.json", cfg)["rows"]
    for b in cfg.batches:
        for n in cfg.lengths:
            cached = [r for r in gen if (r["method"], r["batch"], r["n_new"]) == ("cached", b, n)]
            assert len(cached) == 1 and len(cached[0]["seconds"]) == cfg.seeds
            if b * n <= cfg.uncached_max_tokens:
                assert cached[0]["tokens_equal_cached"] == [True] * cfg.seeds
    mem = read_measurement(out / "runs" / "memory.json", cfg)
    for r in mem["rows"]:  # independent arithmetic: 2 * layers * batch * kv_heads * head_dim * length * 4
        m = cfg.model
        assert r["measured_bytes"] == 2 * m.n_layers * r["batch"] * m.kv_heads * m.head_dim * r["length"] * 4
    tl = read_measurement(out / "runs" / "timeline.json", cfg)
    ring = tl["caches"]["sliding"]["steps"][-1]["after"]
    last = cfg.prompt_len + cfg.timeline_steps - 2  # position of the last token fed
    assert sorted(ring) == list(range(last - cfg.window + 1, last + 1))
    grid = ct.slot_states(tl["caches"]["full"]["steps"], cfg.prompt_len + cfg.timeline_steps, None)
    assert (grid == ct.COMPUTED).sum() == cfg.prompt_len + cfg.timeline_steps - 1  # each row once


def test_verdicts_are_the_rule_on_the_run_files(smoke):
    _, out, cfg = smoke
    first = json.loads((out / "findings.json").read_text())
    assert first["preset"] == "smoke" and first["seeds"] == cfg.seeds
    exact, speed, flat, memory, window = first["findings"]
    assert [exact["verdict"], memory["verdict"], window["verdict"]] == ["supported"] * 3
    assert first["verdict"] == headline(
        [exact["verdict"], speed["verdict"], flat["verdict"], memory["verdict"]]
    )
    # The per-token verdict from positions.json: ln(time) at the last position minus the first.
    pos = read_measurement(out / "runs" / "positions.json", cfg)
    t0, t1 = (str(t) for t in (min(cfg.positions), max(cfg.positions)))
    m = math.log(e06.FLAT_RATIO)
    with_cache = compare(np.log(pos["cached"][t0]), np.log(pos["cached"][t1])).verdict("equal", m)
    without = compare(np.log(pos["uncached"][t0]), np.log(pos["uncached"][t1])).verdict("greater", m)
    assert flat["verdict"] == headline([with_cache, without])


def _generation(cfg, speedups):
    """Made-up generation.json data: the cached run takes 1 ms per repeat, the uncached `speedup` times
    that."""
    rows = []
    for (b, n), sp in speedups.items():
        cached = {
            "method": "cached",
            "batch": b,
            "n_new": n,
            "seconds": [1e-3] * 3,
            "tokens_equal_cached": [True] * 3,
        }
        rows += [cached, {**cached, "method": "uncached", "seconds": list(1e-3 * np.asarray(sp))}]
    return {"prompt_len": cfg.prompt_len, "rows": rows}


@pytest.mark.parametrize(
    "short, long, verdict",
    [
        ([8.0, 8.5, 9.0], [60.0, 64.0, 70.0], "supported"),  # far above 5x, more the longer
        ([8.0, 8.5, 9.0], [8.0, 8.5, 9.0], "qualified"),  # above 5x, but no more at the longer length
        ([1.0, 1.1, 1.2], [1.0, 1.1, 1.2], "refuted"),  # below the target everywhere
    ],
)
def test_speed_verdict_follows_made_up_timings(short, long, verdict):
    cfg = e06.E06Config(lengths=(64, 1024), batches=(1,), uncached_max_tokens=4096)
    d = e06._generation_data(_generation(cfg, {(1, 64): short, (1, 1024): long}))
    finding = e06._speed_finding(cfg, d)
    assert finding.verdict == verdict, finding.evidence
    assert compare_to(d["speedup"][(1, 1024)], e06.MIN_SPEEDUP).diff == pytest.approx(np.mean(long) - 5.0)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("lengths=0", "lengths must be >= 1"),
        ("window=0", "window must be in"),
        ("model.max_len=20", "model.max_len (20) must be >= prompt_len + max(max(lengths), timeline_steps)"),
        ("uncached_max_tokens=-1", "uncached_max_tokens must be >= 0"),
        ("positions=999", "positions must be <="),
    ],
)
def test_bad_configs_are_one_line_errors(capsys, tmp_path, override, fragment):
    args = ["run", "e06", "--preset", "smoke", "--results", str(tmp_path), "--set", override]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "e06_kv_cache").exists()
