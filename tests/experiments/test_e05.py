"""Project 5 end to end at the smoke preset, and the dashboard serving the model it trained."""

import json

import numpy as np
import pytest

from experiments import e05_sampling as e05
from lab.analysis.findings import VERDICTS
from lab.cli import main
from lab.errors import CheckpointError
from lab.infer.dashboard import generate_response
from lab.infer.load import load_text_model
from lab.ops.sampling import knobs


@pytest.fixture(scope="module")
def smoke(smoke_run):
    results, out = smoke_run("e05")
    return results, out, e05.PRESET_TABLE["smoke"]


def test_findings_and_reproducible_analysis(smoke):
    results, out, cfg = smoke
    first = json.loads((out / "findings.json").read_text())
    assert first["verdict"] in VERDICTS and len(first["findings"]) == 3
    assert all("±" in f["evidence"] for f in first["findings"])
    assert main(["analyze", "e05", "--results", str(results)]) == 0
    assert json.loads((out / "findings.json").read_text())["findings"] == first["findings"]


def test_samples_on_disk_follow_the_grid(smoke):
    _, out, cfg = smoke
    grid = e05.settings(cfg)
    with np.load(out / "runs" / "samples" / "seed0.npz") as z:
        assert z["tokens"].shape == (cfg.prompts, len(grid), cfg.new_tokens)
        np.testing.assert_array_equal(z["settings"], np.array(grid))
        g = grid.index((0.0, 0, 1.0))
        np.testing.assert_allclose(z["prob"][:, g], 1.0)  # greedy: all mass on the chosen token
        assert (z["entropy_after"][:, g] < 1e-5).all() and (z["entropy_after"][:, g + 1 :] > 0).all()


def test_dashboard_serves_the_trained_model(smoke):
    _, out, cfg = smoke
    model = load_text_model(out / "runs" / "lm", member=1)
    assert model.cfg.vocab_size == 256 and "member 1" in model.description
    reply = generate_response(model, "def ", knobs(temperature=0.0), 0, 8, max_new=16)
    assert len(reply["tokens"]) == 8 and all(t["prob"] == pytest.approx(1.0) for t in reply["tokens"])
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_model(out / "runs")
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match="--member 5 is out of range"):
        load_text_model(out / "runs" / "lm", member=5)
