"""Bad input on the command line: one line on stderr, exit status 2, and nothing written or lost."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

import pytest

import experiments
from lab import experiment as E
from lab.cli import main


def run_cli(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lab: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "e99"], "unknown experiment 'e99'; allowed: e00 (e00_template), e01 (e01_tokenization), "),
        (["run", "e04", "--preset", "huge"], "unknown preset 'huge' for e04; allowed: smoke, cpu, gpu"),
        (
            ["run", "e04", "--set", "train.stepz=5"],
            "unknown config key 'train.stepz'; allowed keys: train.steps",
        ),
        (["run", "e04", "--set", "train.steps=many"], "train.steps='many' has the wrong type"),
        (["run", "e04", "--set", "train.lr=-1"], "train.lr must be > 0, got -1.0"),
        (
            ["run", "e04", "--set", "model.position=rotary"],
            "must be one of 'none', 'sinusoidal', 'learned', 'rope', 'alibi'",
        ),
        (["run", "e04", "--set", "train.schedule=step"], "must be one of 'cosine', 'linear', 'wsd'"),
        (
            ["run", "e04", "--set", "train.decay_fraction=1.5"],
            "train.decay_fraction must be in (0, 1], got 1.5",
        ),
        (["run", "e04", "--set", "variants=intact,swap_xy"], "variants: unknown ['swap_xy']"),
        (["run", "e04", "--seeds", "0"], "--seeds must be >= 1"),
        (["run", "e04", "--seeds", "three"], "invalid int value: 'three'"),
        (["run", "e04", "--strategy", "fastest"], "invalid choice: 'fastest'"),
        (["run", "e04", "--data", "wikipedia"], "unknown corpus 'wikipedia'"),
        (["run", "e04", "--set", "model.n_kv_heads=1"], "model.n_kv_heads must equal model.n_heads"),
        (["run", "e04", "--set", "model.mask=prefix"], "model.mask must be 'causal'"),
        (["run", "e04", "--set", "lr_sweep="], "lr_sweep must not be empty"),
        (["run", "e04", "--set", "mesh.fsdp=0"], "mesh.fsdp must be >= 1, got 0"),
        (
            ["run", "e04", "--set", "mesh.tensor=2"],
            "unknown config key 'mesh.tensor'; allowed keys: mesh.sweep",
        ),
        (
            ["run", "e04", "--set", "mesh.data=4", "--set", "mesh.fsdp=2", "--set", "train.batch_size=12"],
            "train.batch_size=12 is not divisible by mesh.data x mesh.fsdp = 4 x 2",
        ),
        (["run", "e04", "--coordinator", "localhost"], "--coordinator 'localhost' must be HOST:PORT"),
        (
            ["run", "e04", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be in 0..1, got 2",
        ),
        (["run", "e04", "--set", "variants=intact,zero_v,intact"], "variants has a repeated value"),
        (
            ["run", "e04", "--set", "model.n_heads=3"],
            "model.d_model (64) must be divisible by model.n_heads (3)",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "e04", "--set", "train.lr=inf"], "train.lr='inf' is not allowed; train.lr must be a finite"),
        (
            ["run", "e04", "--set", "model.init_std=nan"],
            "model.init_std='nan' is not allowed; model.init_std",
        ),
        (["run", "e04", "--set", "lr_sweep=0.01,inf"], "lr_sweep='inf' is not allowed"),
        (["run", "e04", "--data", "file:/dev/zero"], "is not a regular file (a device, pipe or socket)"),
        (["run", "e04", "--set", "model.d_model=1000000000"], "parameters (n_layers=2, d_model=1000000000"),
        (
            ["run", "e04", "--set", "train.steps=5", "--set", "train.steps=7"],
            "train.steps is given twice ('5', then",
        ),
        (
            ["run", "e04", "--seeds", "2", "--set", "seeds=3"],
            "--seeds and --set seeds= both set seeds; give one",
        ),
        (
            ["run", "e04", "--data", "tinyshakespeare", "--set", "data.name=x"],
            "--data and --set data.name= both",
        ),
        (
            ["run", "e04", "--set", "model.vocab_size=99"],
            "model.vocab_size is set by e04 for each run from its tokenizer or task",
        ),
        (  # refused before the corpus loads and the tokenizer trains
            [
                "tokenizer",
                "train",
                "--data",
                "file:/nonexistent",
                "--vocab-size",
                "300",
                "--out",
                "/dev/null/tok",
            ],
            "--out /dev/null/tok: /dev/null is not a directory",
        ),
        (
            ["compare", "/nonexistent/a", "/nonexistent/b", "--out", "/dev/null/c.md"],
            "/dev/null is not a directory",
        ),
        (["run", "e03", "--set", "model.n_heads=8"], "model.n_heads is set by e03 for each run from heads"),
        (["dashboard", "--host", ""], "--host must name an address"),
    ],
)
def test_bad_arguments(capsys, tmp_path, args, fragment):
    code, _, err = run_cli(capsys, *args, *(["--results", str(tmp_path / "r")] if args[0] == "run" else []))
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "env, fragment",
    [
        (
            {"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "JAX_NUM_PROCESSES='two' must be a whole number",
        ),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID must be in 0..1, got 2"),
        (
            {"JAX_COORDINATOR_ADDRESS": "localhost", "JAX_NUM_PROCESSES": "1", "JAX_PROCESS_ID": "0"},
            "JAX_COORDINATOR_ADDRESS 'localhost' must be HOST:PORT",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "", "JAX_PROCESS_ID": "0"},
            "JAX_PROCESS_ID set without JAX_COORDINATOR",
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "", "LAB_FUSED_ATTENTION": "flash"},
            "LAB_FUSED_ATTENTION='flash' is not",
        ),
    ],
)
def test_a_bad_job_in_jax_variables_is_refused_in_one_line(capsys, tmp_path, monkeypatch, env, fragment):
    """The job's environment variables (JAX's, and the lab's choice of fused attention) are checked up front."""
    for k, v in {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", **env}.items():
        monkeypatch.setenv(k, v)
    code, _, err = run_cli(capsys, "run", "e04", "--results", str(tmp_path / "r"))
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "does not exist"),
        (b"", "empty"),
        (b"   \n\t\n", "empty"),
        (b"caf\xc3\xa9 \xff\xfe broken", "not valid UTF-8"),
        (b"too short", "fewer than one window"),
    ],
)
def test_bad_corpus_files(capsys, tmp_path, content, fragment):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(
        capsys, "run", "e04", "--preset", "smoke", "--data", f"file:{path}", "--results", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()


def test_results_of_another_config_are_refused_and_kept(capsys, tmp_path):
    (exp,) = E.find(E.registry(experiments), "e04")
    results = tmp_path / "r"
    out = exp.out_dir(results)
    E.write_config(exp, E.resolve_config(exp, "smoke"), out, "smoke")
    before = (out / "config.json").read_bytes()
    code, _, err = run_cli(
        capsys, "run", "e04", "--preset", "smoke", "--seeds", "3", "--results", str(results)
    )
    assert_one_line_error(code, err, "holds a run with a different config (seeds: 2 vs 3")
    assert (out / "config.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_analyze_before_run_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "analyze", "e04", "--results", str(tmp_path))
    assert_one_line_error(code, err, "run `lab run e04` first")


def test_list_and_config(capsys):
    code, out, _ = run_cli(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("e00  e00_template") and "(template: the pattern" in lines[0]
    assert lines[1].startswith("e01  e01_tokenization") and "Tokenization silently" in lines[1]
    assert any(line.startswith("e04  e04_qkv") and "not interchangeable" in line for line in lines)
    code, out, _ = run_cli(capsys, "config", "e04", "--preset", "smoke", "--set", "train.steps=7")
    assert code == 0 and "train.steps = 7\n" in out and "model.n_layers = 1\n" in out
    assert "model.vocab_size = 256  # set for each run from its tokenizer or task" in out  # not a --set key


def test_exit_status_from_a_real_process():
    """`python -m lab.cli`, exactly as lab.sh runs it, with a thread left waiting forever as Orbax's are after
    a failed checkpoint save: the error is said, and the process ends with status 2 instead of hanging."""
    stuck = "import runpy, sys, threading; threading.Thread(target=threading.Event().wait).start(); "
    stuck += "sys.argv[1:] = ['run', 'nope']; runpy.run_module('lab.cli', run_name='__main__')"
    p = subprocess.run([sys.executable, "-c", stuck], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "unknown experiment 'nope'" in p.stderr


def test_only_the_plain_cpu_run_writes_the_published_root(capsys, monkeypatch, tmp_path):
    """`lab run` without --results: results/ for the cpu preset with nothing overridden, scratch/<preset>
    for another preset, scratch/<preset>+<hash of the overrides> otherwise; analyze finds them by --preset."""
    monkeypatch.chdir(tmp_path)
    wrote = []

    class Done:
        verdict, summary = "inconclusive", "made up"

    monkeypatch.setattr(E, "run", lambda exp, cfg, out, preset, opts: wrote.append(str(out)) or Done)
    monkeypatch.setattr(E, "analyze", lambda exp, out: wrote.append(f"analyze {out}") or Done)
    for args in (
        [],
        ["--preset", "smoke"],
        ["--preset", "smoke", "--set", "train.steps=7"],
        ["--preset", "smoke", "--set", "train.steps=8"],
        ["--seeds", "2"],
    ):
        assert run_cli(capsys, "run", "e04", *args)[0] == 0
    assert run_cli(capsys, "analyze", "e04", "--preset", "smoke")[0] == 0
    h7, h8, seeds = wrote[2].split("/")[1], wrote[3].split("/")[1], wrote[4].split("/")[1]
    assert wrote[:2] == ["results/e04_qkv", "scratch/smoke/e04_qkv"]
    assert h7.startswith("smoke+") and h8.startswith("smoke+") and h7 != h8 and seeds.startswith("cpu+")
    assert wrote[5] == "analyze scratch/smoke/e04_qkv"
    code, _, err = run_cli(capsys, "analyze", "e04", "--preset", "huge")
    assert_one_line_error(code, err, "unknown preset 'huge'; allowed: cpu, gpu, smoke")


def test_a_model_too_large_for_memory_is_refused_naming_the_estimate(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "run",
        "e04",
        "--preset",
        "smoke",
        "--set",
        "model.d_model=1000000000",
        "--results",
        str(tmp_path / "r"),
    )
    assert_one_line_error(code, err, "needs about ")
    assert "GiB (parameters, gradients and AdamW state" in err and "is available (" in err
    assert not (tmp_path / "r").exists()  # nothing written: no config.json of the experiment or its sweeps


def test_results_that_is_a_file_or_cannot_be_written_is_one_line(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("not a directory")
    for cmd in (["run", "e04", "--preset", "smoke"], ["analyze", "e04"], ["report"]):
        code, _, err = run_cli(capsys, *cmd, "--results", str(f))
        assert_one_line_error(code, err, f"--results {f} exists and is not a directory")
    code, _, err = run_cli(capsys, "run", "e04", "--preset", "smoke", "--results", str(f / "sub"))
    assert_one_line_error(code, err, "is not a directory")
    assert f.read_text() == "not a directory"
    # A directory that cannot be created (even by root: /proc takes no new entries).
    code, _, err = run_cli(capsys, "run", "e04", "--preset", "smoke", "--results", "/proc/lab-results")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "/proc" in err, err


HOLDER = """
import sys, time
from lab.runs import lock
with lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_or_an_analysis_during_a_run_is_refused_naming_the_holder(capsys, tmp_path):
    (exp,) = E.find(E.registry(experiments), "e04")
    results = tmp_path / "r"
    out = exp.out_dir(results)
    E.write_config(exp, E.resolve_config(exp, "smoke"), out, "smoke")
    before = sorted(p.name for p in out.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for cmd in (["run", "e04", "--preset", "smoke", "--no-progress"], ["analyze", "e04"]):
            code, _, err = run_cli(capsys, *cmd, "--results", str(results))
            assert_one_line_error(code, err, f"is in use by another lab process (PID {holder.pid}, ")
        assert sorted(p.name for p in out.iterdir()) == before  # the second writer wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)


def test_analyze_refuses_a_torn_or_half_trained_run(capsys, tmp_path, smoke_run):
    _, src = smoke_run("e04")
    results = tmp_path / "r"
    out = results / src.name
    shutil.copytree(src, out)
    metrics = out / "runs" / "text" / "metrics.jsonl"
    whole = metrics.read_bytes()
    metrics.write_bytes(whole[:-40])  # a torn last row
    code, _, err = run_cli(capsys, "analyze", "e04", "--results", str(results))
    assert_one_line_error(code, err, "runs/text is incomplete: member ")
    assert "has no validation row at step 20" in err or "has no train row at step 20" in err

    # The last checkpoint and the rows after it gone: a half-trained run, though measurements exist.
    lines = whole.decode().splitlines(keepends=True)
    metrics.write_text("".join(line for line in lines if '"step": 20' not in line))
    shutil.rmtree(out / "runs" / "text" / "checkpoints" / "20")
    (out / "findings.json").unlink()
    code, _, err = run_cli(capsys, "analyze", "e04", "--results", str(results))
    assert_one_line_error(code, err, "runs/text is incomplete: member 0 has no train row at step 20 ")
    assert not (out / "findings.json").exists()


def test_the_published_results_are_written_only_from_a_clean_tree(capsys, monkeypatch):
    """Into this checkout's results/, a run from a tree whose tracked code has uncommitted changes is refused
    before anything is written (so the commit config.json records is the code that ran), unless
    --allow-dirty, which config.json records; --results elsewhere is not checked."""
    import lab.cli
    import lab.provenance

    monkeypatch.chdir(lab.cli.ROOT)
    monkeypatch.setattr(lab.provenance, "changed_files", lambda: ("lab/model/layers.py", "README.md"))
    ran = []

    class Done:
        verdict, summary = "inconclusive", "made up"

    monkeypatch.setattr(E, "run", lambda exp, cfg, out, preset, opts: ran.append((str(out), opts)) or Done)
    monkeypatch.setattr("lab.report.write_report", lambda exps, root: root / "REPORT.md")  # nothing written
    code, _, err = run_cli(capsys, "run", "e04")
    assert_one_line_error(
        code, err, "2 tracked file(s) have uncommitted changes (lab/model/layers.py, README.md)"
    )
    assert ran == []
    assert run_cli(capsys, "run", "e04", "--allow-dirty")[0] == 0
    assert ran[0][0] == "results/e04_qkv" and ran[0][1].allow_dirty


def test_a_finished_experiment_run_again_is_only_analyzed(capsys, tmp_path, monkeypatch):
    """`lab run` of an experiment already trained and measured with this config skips `run` (its marker,
    lab.experiment.MEASURED) and analyzes; another config or --fresh runs it again."""
    exp = E.find(E.registry(experiments), "e04")[0]
    calls = []

    class Done:
        verdict, summary = "inconclusive", "made up"

    fake = dataclasses.replace(exp, run=lambda cfg, out, opts: calls.append(cfg.train.steps))
    monkeypatch.setattr(E, "find", lambda reg, name: [fake])
    monkeypatch.setattr(E, "analyze", lambda exp, out: Done)
    monkeypatch.setattr("lab.report.write_report", lambda exps, root: root / "REPORT.md")
    common = ("run", "e04", "--preset", "smoke", "--results", str(tmp_path))
    outs = []
    for extra in ((), (), ("--fresh",), ()):
        code, out, _ = run_cli(capsys, *common, *extra)
        assert code == 0
        outs.append("already trained and measured" in out)
    assert calls == [20, 20] and outs == [False, True, False, True]  # run, analyzed, --fresh: run, analyzed
    (tmp_path / "e04_qkv" / E.MEASURED).write_text("{torn")  # a damaged marker: measured again
    assert run_cli(capsys, *common)[0] == 0 and calls == [20, 20, 20]
