"""Every experiment's smoke run, once per test session, in one shared results root.

Each experiment's tests take `smoke_run("eNN")`; the test that analyzes every experiment in a process where
JAX cannot compute (test_analysis_without_jax.py) reuses the same runs instead of training again.
"""

import pytest

from lab.cli import main


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
            assert main(args) == 0
            done[exp_id] = reg[exp_id].out_dir(smoke_root)
        return smoke_root, done[exp_id]

    return run
