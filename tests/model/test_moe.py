"""Mixture of experts as a model setting (model.mlp="moe"): one expert is the dense model, the KV cache and
the training driver work with it, the routers' auxiliary losses reach the gradient and only the gradient,
FLOPs count active parameters, and impossible settings are one-line config errors.

Tolerances: one expert vs the dense model is the same arithmetic with a gate of exactly 1.0 and a scatter
and gather around the MLP, 1e-6 on logits of O(1). The cached forward against the whole sequence: 1e-5, as
the dense cache tests (attention over a cache sums in another order).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.errors import ConfigError
from lab.model import ModelConfig, flops, transformer
from lab.runs import read_rows
from lab.train import SweepSpec, members_grid, train_sweep
from lab.train.step import eval_step, loss_fn

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first use,
# which costs several times one compilation of the whole program.
init, apply, apply_with_aux, apply_cached = (
    jax.jit(f, static_argnums=0)
    for f in (transformer.init, transformer.apply, transformer.apply_with_aux, transformer.apply_cached)
)
value_and_grad_loss = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=1)

B, T, V = 2, 8, 16
BASE = ModelConfig(vocab_size=V, max_len=T, n_layers=2, d_model=16, n_heads=2)


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _tokens(seed=0, b=B, t=T):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, V)


@jax.jit
def _randomized(params, seed=0):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.3 * jax.random.normal(k, x.shape) + (1.0 if x.ndim == 1 else 0.0) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("kw", [{}, {"activation": "swiglu", "bias": True}])
def test_one_expert_is_the_dense_model(kw):
    dense = BASE.replace(**kw)
    one = dense.replace(mlp="moe", moe_experts=1, moe_capacity_factor=1.0)
    p_moe = _randomized(init(one, jax.random.key(0)))
    p_dense = jax.tree_util.tree_map(lambda x: x, p_moe)
    for i in range(BASE.n_layers):
        mlp = dict(p_moe[f"block_{i}"]["mlp"])
        mlp.pop("router")
        p_dense[f"block_{i}"]["mlp"] = {k: v[0] for k, v in mlp.items()}  # expert 0's weights
    tokens = _tokens()
    want = apply(dense, p_dense, tokens)
    got, moe = apply_with_aux(one, p_moe, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    assert float(jnp.max(moe["dropped"])) == 0.0 and np.allclose(np.asarray(moe["share"]), 1.0)
    assert float(jnp.max(jnp.abs(want))) > 1.0  # randomized weights: the check is not on near-zero logits


def test_moe_every_n_th_block_and_the_parameter_tree():
    cfg = BASE.replace(n_layers=4, mlp="moe", moe_every=2, moe_experts=3)
    params = init(cfg, jax.random.key(0))
    assert cfg.moe_layers == (1, 3)
    for i in range(4):
        mlp = params[f"block_{i}"]["mlp"]
        if i in (1, 3):
            assert mlp["router"].shape == (16, 3) and mlp["w1"].shape == (3, 16, 64)
        else:
            assert set(mlp) == {"w1", "w2"} and mlp["w1"].shape == (16, 64)
    _, moe = apply_with_aux(cfg, params, _tokens())
    assert moe["share"].shape == (2, 3) and moe["top1"].shape == (2, B, T)
    np.testing.assert_allclose(np.asarray(moe["share"]).sum(-1), 1.0, rtol=1e-6)
    # the dense default has no MoE anywhere and no statistics
    assert apply_with_aux(BASE, init(BASE, jax.random.key(0)), _tokens())[1] == {}


@pytest.mark.parametrize(
    "kw", [dict(moe_dispatch="dropless", moe_top_k=2), dict(moe_capacity_factor=4.0)]
)  # capacity: 4 experts x factor 4 / top-1 = room for every token, so grouping cannot drop any
def test_cached_decoding_equals_the_whole_sequence(kw):
    cfg = BASE.replace(mlp="moe", moe_experts=4, **kw)
    params = _randomized(init(cfg, jax.random.key(1)), seed=1)
    tokens = _tokens(2)
    want = apply(cfg, params, tokens)
    cache = transformer.init_cache(cfg, B, T)
    outs = []
    for a, b in [(0, 5), (5, 6), (6, 7), (7, 8)]:  # a prefill, then one token at a time
        logits, cache = apply_cached(cfg, params, tokens[:, a:b], cache)
        outs.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(want), rtol=1e-5, atol=1e-5)


def _batch(seed=0):
    t = _tokens(seed)
    return dict(inputs=t, targets=jnp.roll(t, -1, 1), mask=jnp.ones_like(t, bool))


def test_the_aux_losses_reach_the_gradient_and_not_the_reported_loss():
    cfg = BASE.replace(mlp="moe", moe_experts=4, moe_balance_coef=0.5, moe_z_coef=0.1)
    params = _randomized(init(cfg, jax.random.key(3)), seed=3)
    batch = _batch()

    def ce(p):
        logits = apply(cfg, p, batch["inputs"])
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1))

    def aux(p):
        return transformer.moe_aux_loss(cfg, apply_with_aux(cfg, p, batch["inputs"])[1])

    (value, _), g = value_and_grad_loss(params, cfg, batch)
    assert float(value) == float(ce(params))  # exactly the cross entropy
    assert float(aux(params)) > 0.5  # the aux term is not negligible at these coefficients
    g_ce, g_aux = jax.jit(jax.grad(ce))(params), jax.jit(jax.grad(aux))(params)
    for name in ("router", "w1"):
        got = np.asarray(g["block_0"]["mlp"][name])
        want = np.asarray(g_ce["block_0"]["mlp"][name] + g_aux["block_0"]["mlp"][name])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    router_aux = np.asarray(g_aux["block_0"]["mlp"]["router"])
    assert np.abs(router_aux).max() > 1e-3  # the balance and z-losses move the router
    assert (
        np.abs(np.asarray(g["block_0"]["mlp"]["router"]) - np.asarray(g_ce["block_0"]["mlp"]["router"])).max()
        > 1e-3
    )
    # without the coefficients the gradient is the cross entropy's alone
    off = cfg.replace(moe_balance_coef=0.0, moe_z_coef=0.0)
    g_off = jax.jit(jax.grad(lambda p: loss_fn(p, off, batch)[0]))(params)
    np.testing.assert_allclose(
        np.asarray(g_off["block_1"]["mlp"]["router"]), np.asarray(g_ce["block_1"]["mlp"]["router"]), atol=1e-7
    )


def test_a_sweep_trains_an_moe_model_and_logs_routing_over_training(tmp_path, tiny):
    cfg, tcfg, task = tiny
    moe = cfg.replace(mlp="moe", moe_experts=2)
    spec = SweepSpec(
        moe, tcfg.replace(steps=10, ckpt_every=10, eval_every=5), task, members_grid([0, 1], [3e-3])
    )
    result = train_sweep(tmp_path / "run", spec, progress=False)
    assert result.diverged_at == [-1, -1] and all(np.isfinite(result.final_val_loss))
    rows = [r for r in read_rows(tmp_path / "run" / "metrics.jsonl") if "val_loss" in r]
    assert sorted({r["step"] for r in rows}) == [0, 5, 10] and len(rows) == 6
    for r in rows:
        assert r["moe_share_L0_E0"] + r["moe_share_L0_E1"] == pytest.approx(1.0, abs=1e-6)
        assert 0.0 <= r["moe_dropped_L0"] <= 1.0 and 0.0 < r["moe_entropy_L0"] <= np.log(2) + 1e-6
    # the logged statistics are eval_step's on the fixed validation batches
    evaluate = jax.jit(eval_step, static_argnames=("cfg", "tcfg", "task"))
    ev = evaluate(init(moe, jax.random.key(0)), {}, cfg=moe, tcfg=tcfg, task=task)
    assert set(ev) >= {"val_loss", "moe_share_L0_E1", "moe_balance_L0", "moe_z_L0"}


def test_flops_count_the_active_experts_and_the_router():
    moe = BASE.replace(mlp="moe", moe_experts=8)
    d, f, L = BASE.d_model, BASE.ff_dim, BASE.n_layers
    assert flops.matmul_params(moe) - flops.matmul_params(BASE) == L * d * 8  # top-1: one expert + router
    top2 = moe.replace(moe_top_k=2)
    assert flops.matmul_params(top2) - flops.matmul_params(moe) == L * 2 * d * f
    half = moe.replace(moe_every=2)
    assert flops.matmul_params(half) - flops.matmul_params(BASE) == d * 8
    total = transformer.param_count(jax.eval_shape(init, moe, jax.random.key(0)))
    dense_total = transformer.param_count(jax.eval_shape(init, BASE, jax.random.key(0)))
    assert total - dense_total == L * (7 * 2 * d * f + d * 8)  # 7 more experts and a router per block


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(moe_experts=0), "model.moe_experts must be >= 1, got 0"),
        (dict(moe_experts=2, moe_top_k=3), "model.moe_top_k must be in [1, model.moe_experts=2], got 3"),
        (dict(moe_capacity_factor=0.0), "model.moe_capacity_factor must be > 0, got 0.0"),
        (dict(moe_capacity_factor=-1.0), "model.moe_capacity_factor must be > 0"),
        (dict(moe_every=3), "makes no block of model.n_layers=2 a mixture of experts"),
        (dict(moe_balance_coef=-0.1), "model.moe_balance_coef must be >= 0"),
        (dict(mlp="sparse"), "model.mlp='sparse' is not a known variant; allowed: 'dense', 'moe'"),
    ],
)
def test_impossible_moe_settings_are_one_line_config_errors(kw, needle):
    with pytest.raises(ConfigError) as e:
        BASE.replace(mlp="moe").replace(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)
