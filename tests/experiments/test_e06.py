"""Project 6 end to end at the smoke preset: run, analyze from disk, and the numbers behind the findings
(cached tokens equal uncached ones, measured cache bytes equal the formula, the timeline comes from the
caches' own slot positions); bad configs are refused before anything compiles."""

import json

import numpy as np
import pytest

from experiments import e06_kv_cache as e06
from lab.analysis.findings import VERDICTS
from lab.cli import main


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e06")
    return results, out, e06.PRESET_TABLE["smoke"]


def test_findings_have_verdicts_and_numbers_and_analysis_is_reproducible(smoke):
    results, out, cfg = smoke
    first = json.loads((out / "findings.json").read_text())
    assert first["verdict"] in VERDICTS and first["preset"] == "smoke" and first["seeds"] == 3
    claims = {f["claim"]: f for f in first["findings"]}
    assert len(claims) == 5 and all(f["verdict"] in VERDICTS for f in claims.values())
    exact = next(f for c, f in claims.items() if c.startswith("Cached generation"))
    memory = next(f for c, f in claims.items() if c.startswith("Cache memory"))
    assert exact["verdict"] == "supported" and memory["verdict"] == "supported"
    assert "±" in next(f for c, f in claims.items() if "speeds generation" in c)["evidence"]
    for p in first["plots"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["analyze", "e06", "--results", str(results)]) == 0  # from files on disk only
    assert json.loads((out / "findings.json").read_text())["findings"] == first["findings"]


def test_every_measurement_is_repeated_and_the_grid_is_complete(smoke):
    _, out, cfg = smoke
    gen = json.loads((out / "runs" / "generation.json").read_text())["rows"]
    for b in cfg.batches:
        for n in cfg.lengths:
            cached = [r for r in gen if (r["method"], r["batch"], r["n_new"]) == ("cached", b, n)]
            assert len(cached) == 1 and len(cached[0]["seconds"]) == cfg.seeds
            if b * n <= cfg.uncached_max_tokens:
                assert cached[0]["tokens_equal_cached"] == [True] * cfg.seeds
    mem = json.loads((out / "runs" / "memory.json").read_text())
    for r in mem["rows"]:  # independent arithmetic: 2 * layers * batch * kv_heads * head_dim * length * 4
        m = cfg.model
        assert r["measured_bytes"] == 2 * m.n_layers * r["batch"] * m.kv_heads * m.head_dim * r["length"] * 4


def test_timeline_is_read_from_the_caches(smoke):
    _, out, cfg = smoke
    tl = json.loads((out / "runs" / "timeline.json").read_text())
    ring = tl["caches"]["sliding"]["steps"][-1]["after"]
    last = cfg.prompt_len + cfg.timeline_steps - 2  # position of the last token fed
    assert sorted(ring) == list(range(last - cfg.window + 1, last + 1))
    grid = e06.timeline_grid(tl["caches"]["full"]["steps"], cfg.prompt_len + cfg.timeline_steps, None)
    assert (grid == e06.COMPUTED).sum() == cfg.prompt_len + cfg.timeline_steps - 1  # each row once
    assert np.all((grid[1:] == e06.COMPUTED).sum(axis=1) == 1)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("lengths=0", "lengths must all be >= 1"),
        ("window=0", "window must be in"),
        ("model.max_len=20", "model.max_len (20) must be >= prompt_len + max(lengths)"),
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
