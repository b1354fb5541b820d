"""Sweeps on 8 CPU devices: sharded == single-device vmapped == members trained one at a time.

Tolerance: the three strategies run the same float32 arithmetic, but XLA may batch and fuse the
matmuls of a vmapped program differently from a single model's, which reorders sums. Over 20 steps of
a tiny model the differences stay at the level of float32 rounding amplified by training: we allow
rtol 1e-4 on losses and 1e-4 (abs 1e-5) on parameters; in practice they are far smaller.
"""

import jax
import numpy as np
import pytest

from lab.train import TrainConfig, init_sweep, members_grid, seed_members
from lab.train.sweep import SweepRunner, padded_size, resolve

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def sweep_results(tiny):
    cfg, tcfg, task = tiny
    # 8 members: 2 seeds x 2 learning rates x 2 initial scales
    members = members_grid([0, 1], [3e-3, 1e-2], [1.0, 0.5])
    out = {}
    for strategy in ("shard", "vmap", "loop"):
        runner = SweepRunner(cfg, tcfg, task, len(members), strategy)
        state = runner.place(init_sweep(cfg, tcfg, members))
        state, m = runner.train(state, {}, 20)
        out[strategy] = (runner, jax.device_get(runner.take(state)), jax.device_get(m))
    return out


def test_sharded_sweep_really_uses_8_devices(sweep_results):
    assert len(jax.devices()) == 8
    runner, _, _ = sweep_results["shard"]
    assert runner.strategy == "shard" and len(runner.devices) == 8 and runner.n_padded == 8


@pytest.mark.parametrize("other", ["vmap", "loop"])
def test_sharded_equals_single_device_and_independent_runs(sweep_results, other):
    _, s_shard, m_shard = sweep_results["shard"]
    _, s_other, m_other = sweep_results[other]
    np.testing.assert_allclose(m_shard["loss"], m_other["loss"], rtol=RTOL, atol=ATOL)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), s_shard.params, s_other.params
    )


def test_members_really_differ(sweep_results):
    # the comparison above would be vacuous if every member computed the same thing
    _, _, m = sweep_results["shard"]
    final = m["loss"][:, -1]
    assert len(np.unique(np.round(final, 5))) == 8


def test_padding_to_the_device_count(tiny):
    cfg, tcfg, task = tiny
    members = members_grid([0, 1, 2], [3e-3])
    sharded = SweepRunner(cfg, tcfg, task, 3, "shard", devices=jax.devices()[:2])
    assert sharded.n_padded == 4 == padded_size(3, 2)
    s, m = sharded.train(sharded.place(init_sweep(cfg, tcfg, members)), {}, 10)
    single = SweepRunner(cfg, tcfg, task, 3, "vmap")
    s1, m1 = single.train(single.place(init_sweep(cfg, tcfg, members)), {}, 10)
    assert sharded.take(s).step.shape == (3,)
    np.testing.assert_allclose(np.asarray(m["loss"])[:3], np.asarray(m1["loss"]), rtol=RTOL, atol=ATOL)


def test_auto_strategy_rules():
    cpu = jax.devices()
    assert resolve("auto", 8, cpu, 1e8)[0] == "shard"  # small members: shard over host devices
    assert resolve("auto", 8, cpu, 1e10)[0] == "vmap"  # big members: one device's threads do better
    assert resolve("auto", 1, cpu, 1e8)[0] == "vmap"
    assert resolve("auto", 9, cpu, 1e8)[0] == "vmap"  # 9 -> 16 padded members: too much waste
    assert resolve("auto", 12, cpu, 1e8) == ("shard", cpu)  # 12 -> 16: a third more, still worth it
    with pytest.raises(ValueError, match="unknown sweep strategy"):
        resolve("fastest", 4)


def test_seed_members_can_start_at_a_fresh_seed():
    """first=k gives seeds k..k+n-1 of the same recipe (fresh seeds for a choice made on 0..k-1)."""
    tcfg = TrainConfig(steps=1, lr=3e-3)
    assert [m.seed for m in seed_members(3, tcfg, first=5)] == [5, 6, 7]
    assert [m.seed for m in seed_members(2, tcfg)] == [0, 1]
    assert {m.lr for m in seed_members(3, tcfg, first=5)} == {3e-3}
