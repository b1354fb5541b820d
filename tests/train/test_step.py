"""Train steps: learning happens, divergence is recorded per member and does not stop the others."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lab.train import init_state, init_sweep, members_grid
from lab.train.step import eval_step, eval_transformed, train_steps
from lab.train.sweep import Member, SweepRunner


def test_training_lowers_the_loss(tiny):
    cfg, tcfg, task = tiny
    tcfg = tcfg.replace(steps=120, warmup_steps=10)
    state = init_state(cfg, tcfg, 0, 1e-2, 1.0)
    ev = jax.jit(functools.partial(eval_step, cfg=cfg, tcfg=tcfg, task=task))
    before = float(ev(state.params, {})["val_loss"])
    state, m = jax.jit(functools.partial(train_steps, n_steps=120, cfg=cfg, tcfg=tcfg, task=task))(state, {})
    after = float(ev(state.params, {})["val_loss"])
    assert before > np.log(task.vocab_size) - 0.3  # an untrained model is near chance
    assert after < before - 0.4, (before, after)
    assert int(state.step) == 120 and int(state.diverged_at) == -1
    assert np.all(np.isfinite(np.asarray(m["loss"])))


def test_divergence_is_recorded_and_the_rest_of_the_sweep_goes_on(tiny):
    cfg, tcfg, task = tiny
    # member 1's learning rate blows its weights up at the first step; its next loss is not finite
    members = [Member(0, 1e-3), Member(1, 1e30)]
    runner = SweepRunner(cfg, tcfg, task, 2, "vmap")
    state = runner.place(init_sweep(cfg, tcfg, members))
    state, m = runner.train(state, {}, 10)
    loss, div = np.asarray(m["loss"]), np.asarray(m["diverged_at"])
    d = int(state.diverged_at[1])
    assert 0 <= d < 10 and int(state.diverged_at[0]) == -1
    gnorm = np.asarray(m["grad_norm"])
    assert not (np.isfinite(loss[1, d]) and np.isfinite(gnorm[1, d]))  # the step that tripped it
    assert np.all(np.isnan(loss[1, d + 1 :]))  # reported as NaN afterwards, never as a stale number
    assert np.all(div[1, d:] == d) and np.all(div[0] == -1)
    frozen = jax.tree_util.tree_map(lambda x: np.asarray(x[1]), state.params)
    state2, _ = runner.train(state, {}, 5)
    # the diverged member's parameters no longer change, its step counter still advances with the sweep
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_array_equal(a, np.asarray(b[1])), frozen, state2.params
    )
    assert int(state2.step[1]) == 15
    # the healthy member trains exactly as it would alone
    alone = SweepRunner(cfg, tcfg, task, 1, "vmap")
    s1, m1 = alone.train(alone.place(init_sweep(cfg, tcfg, members[:1])), {}, 10)
    np.testing.assert_allclose(loss[0], np.asarray(m1["loss"][0]), rtol=1e-5, atol=1e-6)


def test_members_grid_order():
    g = members_grid([0, 1], [1e-3, 1e-2], [1.0, 2.0])
    assert [(m.seed, m.lr, m.init_scale) for m in g[:3]] == [(0, 1e-3, 1.0), (1, 1e-3, 1.0), (0, 1e-2, 1.0)]
    assert len(g) == 8


def test_eval_transformed_equals_one_eval_per_member_and_transform(tiny):
    cfg, tcfg, task = tiny
    params = init_sweep(cfg, tcfg, [Member(0, 1e-3), Member(1, 1e-3)]).params
    scale = lambda k: lambda p: jax.tree_util.tree_map(lambda x: x * k, p)
    transforms = [scale(1.0), scale(0.0), scale(3.0)]  # chunk 2: the second chunk is padded
    got = eval_transformed(params, transforms, {}, cfg=cfg, tcfg=tcfg, task=task, chunk=2)
    ev = jax.jit(functools.partial(eval_step, cfg=cfg, tcfg=tcfg, task=task))
    want = [
        [float(ev(f(jax.tree_util.tree_map(lambda x, m=m: x[m], params)), {})["val_loss"]) for m in (0, 1)]
        for f in transforms
    ]
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (
        got[1, 0] == got[1, 1] and got[0, 0] != got[2, 0]
    )  # zeroed weights forget the seed; scaling matters


def test_stacked_eval_is_each_members_eval_step(tiny):
    from lab.train.step import stacked_eval

    cfg, tcfg, task = tiny
    states = [init_state(cfg, tcfg, s, 1e-3, 1.0) for s in (0, 1, 2)]
    stacked = jax.tree_util.tree_map(lambda *x: jax.numpy.stack(x), *[s.params for s in states])
    got = np.asarray(stacked_eval({}, cfg=cfg, tcfg=tcfg, task=task)(stacked))
    want = [float(eval_step(s.params, {}, cfg=cfg, tcfg=tcfg, task=task)["val_loss"]) for s in states]
    assert got.shape == (3,) and len(set(want)) == 3  # three different models
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bfloat16_compute_trains_with_float32_parameters_optimizer_state_and_loss(tiny):
    """Mixed precision (`model.dtype=bfloat16`): the matmuls run in bfloat16, while parameters, gradients,
    AdamW's moments, the logits and the loss stay float32.

    Tolerance: every step's loss, from the initial one (step 0) to the one after 19 updates, within a
    relative 2^-11 of the float32 run's: a quarter of bfloat16's unit roundoff (2^-9, ~3 significant digits),
    about 0.001 nats here. Each bfloat16 operand is off by up to 2^-9, but those errors are independent and
    average out in float32 accumulations (dot products, the log-softmax, the mean over 16 answer tokens):
    the measured gap is at most 1.3e-4 relative over the 20 steps. A loss rounded to bfloat16 anywhere
    (half an ulp is up to 2^-8 relative) misses 2^-11 on most steps."""
    cfg, tcfg, task = tiny
    tcfg = tcfg.replace(lr=3e-3, warmup_steps=5)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        c = cfg.replace(dtype=dtype)
        train = jax.jit(functools.partial(train_steps, n_steps=20, cfg=c, tcfg=tcfg, task=task))
        runs[dtype] = train(init_state(c, tcfg, 0, tcfg.lr, 1.0), {})
    state, m = runs["bfloat16"]
    kinds = lambda tree: {
        str(x.dtype) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
    }
    assert kinds(state.params) == kinds(state.opt_state) == {"float32"}
    assert m["loss"].dtype == m["grad_norm"].dtype == jnp.float32
    loss, ref = np.asarray(m["loss"]), np.asarray(runs["float32"][1]["loss"])
    assert np.isfinite(loss).all() and int(state.diverged_at) == -1
    assert not np.array_equal(loss, ref)  # the bfloat16 run really computed in bfloat16
    np.testing.assert_allclose(loss, ref, rtol=2.0**-11, atol=0)
    assert loss[-1] < loss[0] - 0.1  # and it learned, as float32 does
