"""Loading a run's model for the dashboard: refusals name what is wrong; the CLI checks its limits."""

import json

import pytest

from lab.cli import main
from lab.errors import CheckpointError
from lab.infer.load import load_text_model


def write_run(path, **over):
    conf = {"model": {"vocab_size": 256}, "train": {}, "task": {"kind": "text"}, "members": [],
            "forward": None, "data": {"tokenizer": {"kind": "byte"}}}  # fmt: skip
    conf.update(over)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"config": conf}))
    return path


@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"task": {"kind": "sort"}}, "trained on task 'sort', not text"),
        ({"forward": "experiments.e04_qkv.variant_forward"}, "custom forward"),
        ({"model": {"n_layerz": 2}}, "not a run config written by this version"),
    ],
)
def test_refuses_runs_it_cannot_serve(tmp_path, over, fragment):
    with pytest.raises(CheckpointError, match=fragment):
        load_text_model(write_run(tmp_path / "run", **over))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--port", "70000"], "--port must be in [0, 65535]"),
        (["--max-tokens", "0"], "--max-tokens must be in [1, 4096]"),
        (["--max-concurrent", "0"], "--max-concurrent must be in [1, 64]"),
        (["--checkpoint", "/nonexistent/run"], "does not exist"),
        (["--preset", "gpu"], "unknown preset 'gpu' for the dashboard; allowed: cpu, smoke"),
    ],
)
def test_dashboard_command_refuses_bad_options(capsys, args, fragment):
    assert main(["dashboard", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lab: error: ") and fragment in err[0]
