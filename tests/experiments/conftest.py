"""The check that an experiment's analysis needs no JAX (each experiment's tests take its smoke run from
`smoke_run("eNN")`, tests/conftest.py).

`redraw_without_jax(exps, root)` redraws findings in one child process where JAX cannot compute (DESIGN.md's
layers: every number a model gives is computed by `run` and written to files; `analyze` only reads them with
NumPy): every experiment's smoke run, the template's included (test_smoke_redraw.py), and the published
results (test_published.py).
"""

import os
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

    for exp in sys.argv[2:]:  # one process for them all: its start-up is most of one redraw's time
        if code := main(["analyze", exp, "--results", sys.argv[1]]):
            sys.exit(code)
    """
)


def analyze_without_jax(exps: list[str], root, tmp_path) -> None:
    """`lab analyze EXP --results root` for each of `exps`, in one child process where JAX cannot compute."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "JAX_PLATFORMS": "no_such_platform", "MPLBACKEND": "Agg"}
    r = subprocess.run(
        [sys.executable, str(script), str(root), *exps], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture
def redraw_without_jax(tmp_path):
    """`redraw_without_jax(exps, root)`: `lab analyze EXP --results root` for each of `exps` (ids, or "all"),
    in one child process where JAX cannot compute."""
    return lambda exps, root: analyze_without_jax(exps, root, tmp_path)
