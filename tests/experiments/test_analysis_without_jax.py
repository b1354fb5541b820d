"""`lab analyze all` in a process where JAX cannot compute: every number a model gives is computed by `run`
and written to files, and analysis only reads them with NumPy (DESIGN.md's layers; lab.experiment)."""

import json
import os
import subprocess
import sys
import textwrap

import experiments
from lab.experiment import registry

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

    sys.exit(main(["analyze", "all", "--results", sys.argv[1]]))
    """
)


def test_analyze_all_never_computes_with_jax_and_redraws_the_same_findings(smoke_run, tmp_path):
    outs = [smoke_run(e.id)[1] for e in registry(experiments).values() if not e.is_template]
    root = outs[0].parent
    before = {o.name: json.loads((o / "findings.json").read_text()) for o in outs}
    for o in outs:  # analysis must redraw these from the run files
        (o / "findings.json").unlink()
    env = {**os.environ, "JAX_PLATFORMS": "no_such_platform", "MPLBACKEND": "Agg"}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    r = subprocess.run(
        [sys.executable, str(script), str(root)], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    after = {o.name: json.loads((o / "findings.json").read_text()) for o in outs}
    assert after == before
    for o in outs:
        for rel in after[o.name]["plots"]:
            assert (o / rel).is_file(), f"{o.name}: {rel} is listed but missing"
