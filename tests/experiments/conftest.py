"""The check that an experiment's analysis needs no JAX (each experiment's tests take its smoke run from
`smoke_run("eNN")`, tests/conftest.py).

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

import pytest

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


def analyze_without_jax(exp: str, root, tmp_path) -> None:
    """`lab analyze exp --results root` in a child process where JAX cannot compute."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "JAX_PLATFORMS": "no_such_platform", "MPLBACKEND": "Agg"}
    r = subprocess.run(
        [sys.executable, str(script), exp, str(root)], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture
def redraw_without_jax(tmp_path):
    """`redraw_without_jax(exp, root)`: `lab analyze exp --results root` where JAX cannot compute."""
    return lambda exp, root: analyze_without_jax(exp, root, tmp_path)


@pytest.fixture
def analysis_without_jax(tmp_path):
    def check(exp_id: str, out):
        """Copy `out` without its checkpoints, delete the findings, redraw them with JAX unable to compute,
        and require the same findings as `out` and every listed plot."""
        root = tmp_path / "results"
        copy = root / out.name
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
        (copy / "findings.json").unlink()
        analyze_without_jax(exp_id, root, tmp_path)
        after = json.loads((copy / "findings.json").read_text())
        assert after == json.loads((out / "findings.json").read_text())
        for rel in after["plots"]:
            assert (copy / rel).is_file(), f"{exp_id}: {rel} is listed but missing"

    return check
