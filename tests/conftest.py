"""Test session set-up: 8 host CPU devices (for the sharded-sweep tests) before JAX starts, files-only plots,
and cheaper compilation.

Every test uses tiny configs, so most of the suite's time is XLA compiling programs that then run for
milliseconds. XLA's CPU backend therefore compiles with LLVM's optimizations off
(`--xla_backend_optimization_level=0`): code generation gets about three times faster and the programs
slower, which programs this small do not notice. It also emits fused loops with XLA CPU's older loop
emitters instead of its MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`): measured in one
process each, alternating, on 2 cores, `lab run e04 --preset smoke` spent 16.3-18.0 s in XLA compilation
with the emitters and 6.9-8.8 s without (159 programs), e07's smoke run 17.3-19.5 s vs 8.0-9.0 s (63).
XLA's own graph passes (fusion decisions, layouts, sharding) still run, so the tests exercise the programs
users run, emitted by other code; `lab run` keeps the defaults. The flags go into the environment before
JAX starts, so subprocesses that tests start get them too; a flag already in XLA_FLAGS is left as set.

Many tests compile the same program (the smoke model's train step, in-process and again in the `lab`
subprocesses the README walkthrough and the CLI tests start), so the session shares one persistent JAX
compilation cache: a fresh temporary directory made by the first process (pytest's, before its xdist
workers start), inherited through the environment by workers and subprocesses, and removed at the end.
It starts empty, so every program is still compiled once per session. Measured on 2 cores, a fresh clone's
whole suite took 883 s with it and 904 s without (`JAX_ENABLE_COMPILATION_CACHE=false`), 35 minutes apart:
within that machine's drift (the same tests took 703 s an hour earlier), so no gain is shown. A
JAX_COMPILATION_CACHE_DIR already set is used as it is and kept.

`./lab.sh test` runs the suite on several processes (pytest-xdist; lab.cli.run_tests). Each experiment's
smoke run is made once per test session and shared by every process that needs it (`smoke_run`).
"""

import collections
import fcntl
import os
import shutil
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}".strip()
_OWN_COMPILE_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _OWN_COMPILE_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
        prefix="lab-test-jax-cache-"
    )
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tests' programs compile fast

import jax  # noqa: E402

# Must happen before any JAX array exists; 8 devices let the sweep tests shard a sweep axis for real. The
# backend starts here, so that a test whose first JAX work is `lab.cli.main` (its init_jax asks for one device
# per core) cannot start it with 2: test_e13.py then test_loop.py in one process did, and a test that needs 8
# devices failed.
jax.config.update("jax_num_cpu_devices", 8)
assert len(jax.devices("cpu")) == 8

import pytest  # noqa: E402

from lab.data.tasks import Sort  # noqa: E402
from lab.model import ModelConfig  # noqa: E402
from lab.train.config import TrainConfig  # noqa: E402

_MAPS = Path("/proc/self/maps")  # Linux: one line per memory mapping of this process


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """After a test file, drop JAX's caches of compiled programs if this process holds more than 30,000
    memory mappings. Every program XLA:CPU compiles keeps about six mappings while a cache holds it, and
    Linux refuses a process more than vm.max_map_count (65,530 by default): the whole suite in one process
    held 65,170 before tests/train/test_step.py and crashed there (SIGSEGV, exit 139). The most one file
    adds is about 18,000 (test_readme.py), so the count stays under 50,000. Below the threshold nothing
    is dropped (under xdist a worker may never reach it); a program needed again after a drop is read back
    from the session's persistent compilation cache, not compiled again."""
    yield
    if _MAPS.exists():
        with _MAPS.open() as maps:
            if sum(1 for _ in maps) > 30_000:
                jax.clear_caches()


@pytest.fixture(scope="session")
def tiny():
    """(model config, train config, task): a sorting task small enough to compile in about a second."""
    task = Sort(n_items=4, n_symbols=6)
    cfg = ModelConfig(vocab_size=task.vocab_size, max_len=task.seq_len, n_layers=1, d_model=16, n_heads=2)
    tcfg = TrainConfig(
        steps=20, batch_size=4, warmup_steps=2, log_every=5, eval_every=10, eval_batches=2, ckpt_every=10
    )
    return cfg, tcfg, task


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory) -> Path:
    """One results root for the whole session's smoke runs, shared by pytest-xdist's workers (their base
    temporary directories are siblings; without xdist, the session's own)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke_results"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def smoke_run(smoke_root):
    """`smoke_run("e04")` -> (results root, the experiment's directory) after `lab run e04 --preset smoke`.

    Each experiment's smoke run is made once per session: the first process to ask makes it while holding
    a lock on the experiment, and every other process (an experiment's own tests, the README walkthrough)
    waits for it and reuses it. A run is complete once its findings.json exists (written last).
    """
    import experiments
    from lab.cli import main
    from lab.experiment import registry
    from lab.progress import PlanWarning

    reg = registry(experiments)

    def run(exp_id: str):
        out = reg[exp_id].out_dir(smoke_root)
        with open(smoke_root / f".{exp_id}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (out / "findings.json").exists():
                args = ["run", exp_id, "--preset", "smoke", "--results", str(smoke_root), "--no-progress"]
                with warnings.catch_warnings():  # a progress plan whose pieces miss its total is a bug
                    warnings.simplefilter("error", PlanWarning)
                    assert main(args) == 0
        return smoke_root, out

    return run


@pytest.fixture(scope="session")
def script():
    """`script("bench_train")` -> scripts/bench_train.py loaded as a module (scripts are files, not a package),
    so a test can call its `main(argv)` in-process."""
    import importlib.util
    import sys

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"lab_script_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


def pytest_unconfigure(config):
    if _OWN_COMPILE_CACHE:  # only the process that made it (xdist's workers inherit it)
        shutil.rmtree(_OWN_COMPILE_CACHE, ignore_errors=True)


# Files whose few tests take longest (`--durations`, 2 cores): scheduled first, so that no worker starts one of
# them while the others run out of work. The README walkthrough used to come last (xdist orders files by how many
# tests they hold); first, it makes most experiments' smoke runs itself, one after another (798 s in one test on
# 2 cores, 2026-12-03), so this order moves that work onto its worker rather than saving it.
SCHEDULE_FIRST = ("test_readme.py", "test_gpu_check.py", "experiments/test_published.py")


def pytest_collection_modifyitems(session, config, items):
    """Longest-first file order for `./lab.sh test`'s workers (lab.cli._test_workers keeps it): the files in
    SCHEDULE_FIRST, then the rest by test count, largest first (xdist's own order); a file's tests stay in
    their order. Every worker collects and sorts the same way, as xdist requires."""
    here = Path(__file__).parent
    first = {here / name: i for i, name in enumerate(SCHEDULE_FIRST)}
    counts = collections.Counter(item.path for item in items)
    items.sort(key=lambda item: (first.get(item.path, len(first)), -counts[item.path], str(item.path)))
