"""Every experiment's smoke run, once per test process, and the check that its analysis needs no JAX.

Each experiment's tests take `smoke_run("eNN")`. Session fixtures live once per process, so
`./lab.sh test` distributes the suite over pytest-xdist workers a whole file at a time
(`--dist loadfile`, lab.cli.run_tests): all of one experiment's tests, and its smoke run, stay together.

`analysis_without_jax(exp_id, out)` redraws a run's findings in a child process where JAX cannot compute
(DESIGN.md's layers: every number a model gives is computed by `run` and written to files; `analyze` only
reads them with NumPy). Every experiment's test module calls it, the template's included.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest

from lab.cli import main
from lab.progress import PlanWarning

CHILD = textwrap.dedent(
    """
    import sys
    import jax.numpy as jnp

    try:  # the platform named in JAX_PLATFORMS does not exist: importing works, computing fails
        jnp.zeros(1)
    except RuntimeError:
        pass
    else:
        sys.exit("JAX could compute in this process; the test would prove nothing")
    from lab.cli import main

    sys.exit(main(["analyze", sys.argv[1], "--results", sys.argv[2]]))
    """
)


@pytest.fixture
def analysis_without_jax(tmp_path):
    def check(exp_id: str, out):
        """Copy `out` without its checkpoints, delete the findings, redraw them with JAX unable to compute,
        and require the same findings as `out` and every listed plot."""
        root = tmp_path / "results"
        copy = root / out.name
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
        (copy / "findings.json").unlink()
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        env = {**os.environ, "JAX_PLATFORMS": "no_such_platform", "MPLBACKEND": "Agg"}
        r = subprocess.run(
            [sys.executable, str(script), exp_id, str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        after = json.loads((copy / "findings.json").read_text())
        assert after == json.loads((out / "findings.json").read_text())
        for rel in after["plots"]:
            assert (copy / rel).is_file(), f"{exp_id}: {rel} is listed but missing"

    return check


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke_results")


@pytest.fixture(scope="session")
def smoke_run(smoke_root):
    import experiments
    from lab.experiment import registry

    reg = registry(experiments)
    done = {}

    def run(exp_id: str):
        """(results root, the experiment's results directory) after `lab run exp_id --preset smoke`."""
        if exp_id not in done:
            args = ["run", exp_id, "--preset", "smoke", "--results", str(smoke_root), "--no-progress"]
            with warnings.catch_warnings():  # a progress bar whose pieces miss their planned total is a bug
                warnings.simplefilter("error", PlanWarning)
                assert main(args) == 0
            done[exp_id] = reg[exp_id].out_dir(smoke_root)
        return smoke_root, done[exp_id]

    return run
