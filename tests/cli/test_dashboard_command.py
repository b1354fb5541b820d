"""`lab dashboard` with no checkpoint: it trains its default model (here the smoke preset, seconds) into the
scratch directory, serves it through the real command path and says on the page which model it is; a stored
default model is reused as it is, and one of a different config is refused in one line. (The server's request handling is tested
in tests/infer/test_dashboard.py, the command's refusals of bad options in tests/infer/test_load.py.)"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lab.cli import DASHBOARD_PRESETS, main, train_default_model

ROOT = Path(__file__).resolve().parents[2]


def _lines(stream, q: queue.Queue):
    for line in stream:
        q.put(line)
    q.put(None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A `lab dashboard --preset smoke` process on a free port, with its scratch directory and the lines it
    printed up to "open http://..."."""
    tmp = tmp_path_factory.mktemp("dashboard")
    cmd = [sys.executable, "-m", "lab.cli", "dashboard", "--preset", "smoke", "--port", "0",
           "--scratch", str(tmp / "scratch")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    printed, deadline = [], time.monotonic() + 120
    try:
        while not (printed and printed[-1].startswith("open http://")):
            line = q.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, (
                f"the dashboard exited ({proc.wait()}) before serving:\n{''.join(printed)}"
            )
            printed.append(line)
        yield printed[-1].split()[1].rstrip("/"), tmp / "scratch", printed
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command closes the server and exits 0
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()


def test_the_smoke_default_model_is_trained_and_served(served):
    url, scratch, printed = served
    run_dir = scratch / "dashboard" / "smoke"
    assert any(line.startswith(f"no trained model yet: training the smoke default model into {run_dir}")
               for line in printed)  # fmt: skip
    assert (run_dir / "checkpoints").is_dir() and not (scratch / "dashboard" / "cpu").exists()
    with urllib.request.urlopen(url + "/", timeout=30) as r:
        html = r.read().decode()
    # the page says which model it serves and how to get a better one
    assert "1 layer, d_model 32, context 16" in html and f"{run_dir} member 0" in html
    assert "20 steps of 8 x 16 tokens" in html and "trained on pydocs (byte tokens" in html
    assert "smoke-test model" in html and "--checkpoint RUN_DIR" in html
    assert (
        '<textarea id="prompt">Return the </textarea>' in html
    )  # a docstring's start, for a model of docstrings
    with urllib.request.urlopen(url + "/api/info", timeout=30) as r:
        assert json.loads(r.read())["note"] == DASHBOARD_PRESETS["smoke"]["note"]
    body = json.dumps({"prompt": "Return the ", "temperature": 0.8, "seed": 1, "max_tokens": 8}).encode()
    req = urllib.request.Request(
        url + "/api/generate", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = json.loads(r.read())
    assert len(reply["tokens"]) == 8 and all(0 < t["prob"] <= 1 for t in reply["tokens"])


def test_a_stored_default_model_of_another_config_is_refused_in_one_line(served, tmp_path, capsys):
    _, scratch, _ = served
    stored = tmp_path / "dashboard" / "smoke"
    stored.mkdir(parents=True)
    conf = json.loads((scratch / "dashboard" / "smoke" / "config.json").read_text())
    conf["config"]["train"]["steps"] = 10  # as if an older lab had trained it for 10 steps
    (stored / "config.json").write_text(json.dumps(conf))
    args = ["dashboard", "--preset", "smoke", "--scratch", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a default model trained with a different config" in err[0]
    assert "train.steps: 10 vs 20" in err[0] and f"rm -r {stored}" in err[0]


def test_a_stored_default_model_is_reused_without_loading_the_corpus(served, tmp_path, capsys, monkeypatch):
    _, scratch, _ = served
    stored = shutil.copytree(scratch / "dashboard" / "smoke", tmp_path / "smoke")
    monkeypatch.setattr("lab.data.pipeline.text_lm", lambda *a, **k: pytest.fail("loaded the corpus"))
    assert train_default_model(stored, "smoke") == stored
    assert capsys.readouterr().out == ""  # nothing trained, nothing said
