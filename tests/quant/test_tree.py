"""PTQ of a parameter tree: every weight quantized by the rule of its name (nothing float silently), stored
codes that dequantize to what the model computes with, bytes by the formula; and the jaxpr interception that
finds every linear layer's input, however the matmul is written."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.model import ModelConfig, apply, init
from lab.quant import tree as qt
from lab.quant import uniform as qz
from lab.quant.intercept import identity_hook, intercept
from lab.quant.qat import qat_forward

CFG = ModelConfig(vocab_size=64, max_len=8, n_layers=1, d_model=16, n_heads=2)


@pytest.fixture(scope="module")
def params():
    return init(CFG, jax.random.PRNGKey(0))


def test_every_matrix_has_a_rule_and_unknown_ones_are_refused(params):
    leaves = qt.quantized_leaves(params)
    assert set(leaves) == {f"block_0/attn/{w}" for w in ("wq", "wk", "wv", "wo")} | {
        "block_0/mlp/w1",
        "block_0/mlp/w2",
        "wte",
    }
    assert leaves["block_0/attn/wo"] == ((2, 8, 16), (0, 1)) and leaves["wte"] == ((64, 16), (1,))
    with pytest.raises(ValueError, match="no quantization rule for the matrix 'mystery'"):
        qt.quantized_leaves({"mystery": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="bits must be in 2..8, got 9"):
        qt.Scheme(bits=9)
    with pytest.raises(ValueError, match="group size 5 does not divide the input dimension 16 of block_0"):
        qt.check_scheme(params, qt.Scheme(4, True, "group", 5))


def test_to_matrix_puts_the_input_axes_first_and_round_trips():
    w = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    m = qt.to_matrix(w, (0, 1))
    np.testing.assert_array_equal(np.asarray(m), np.arange(24).reshape(6, 4))
    m1 = qt.to_matrix(w, (1,))
    np.testing.assert_array_equal(
        np.asarray(m1), np.transpose(np.arange(24).reshape(2, 3, 4), (1, 0, 2)).reshape(3, 8)
    )
    np.testing.assert_array_equal(np.asarray(qt.from_matrix(m1, w.shape, (1,))), np.asarray(w))


def test_ptq_tree_quantizes_each_weight_as_its_matrix_and_stored_codes_agree(params):
    s = qt.Scheme(4, False, "group", 8)
    q = qt.ptq_tree(params, s)
    for path, (shape, axes) in qt.quantized_leaves(params).items():
        leaf, got = params, q
        for k in path.split("/"):
            leaf, got = leaf[k], got[k]
        want = qt.from_matrix(
            qz.quant_dequant(qt.to_matrix(leaf, axes), 4, symmetric=False, granularity="group", group=8),
            shape,
            axes,
        )
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(
        np.asarray(q["block_0"]["norm1"]["scale"]), np.asarray(params["block_0"]["norm1"]["scale"])
    )
    np.testing.assert_array_equal(np.asarray(q["wpe"]), np.asarray(params["wpe"]))  # added, never multiplied
    stored = qt.quantize_tree(params, s)
    assert stored["wte"][0].dtype == jnp.uint8
    back = qt.dequantize_tree(stored, params)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(q)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_leaf_codes_times_their_scale_are_the_dequantized_weights_in_each_leafs_layout(params, granularity):
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.sin(jnp.arange(a.size).reshape(a.shape)), params)
    stored = qt.quantize_tree(params, qt.Scheme(8, True, granularity))
    back = qt.dequantize_tree(stored, params)
    codes = qt.leaf_codes(stored, params)
    assert set(codes) == set(qt.quantized_leaves(params))
    for path, (q, scale) in codes.items():
        want = back
        for k in path.split("/"):
            want = want[k]
        assert q.dtype == np.int8 and q.shape == want.shape and scale.dtype == np.float32
        # per channel: one scale per output channel, the input axes of size 1 (wte: one per vocabulary row)
        n_out = q.size // np.prod([q.shape[a] for a in qt.IN_AXES[path.split("/")[-1]]])
        assert scale.size == (n_out if granularity == "channel" else 1)
        np.testing.assert_array_equal(q.astype(np.float32) * scale, np.asarray(want))
    with pytest.raises(ValueError, match="only symmetric per-tensor or per-channel"):
        qt.leaf_codes(qt.quantize_tree(params, qt.Scheme(8, True, "group", 8)), params)
    with pytest.raises(ValueError, match="only symmetric per-tensor or per-channel"):
        qt.leaf_codes(qt.quantize_tree(params, qt.Scheme(8, False, "channel")), params)


def test_model_bytes_follow_the_formula():
    p = {"w1": np.zeros((64, 32), np.float32), "scale": np.zeros((32,), np.float32)}
    assert qt.model_bytes(p) == 4 * (64 * 32 + 32)
    assert qt.model_bytes(p, qt.Scheme(4, True, "channel")) == 64 * 32 // 2 + 32 * 4 + 32 * 4
    assert qt.model_bytes(p, qt.Scheme(3, False, "group", 16)) == 64 * 32 * 3 // 8 + 4 * 32 * 5 + 32 * 4
    assert qt.model_bytes(p, qt.Scheme(8, True, "tensor")) == 64 * 32 + 4 + 32 * 4


def test_intercept_sees_every_weight_matrix_as_a_linear_layer(params):
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 8), 0, 64)
    f = lambda p, t: apply(CFG, p, t)
    y, seen = intercept(f, identity_hook, params, tokens)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(f(params, tokens)))
    leaves = qt.quantized_leaves(params)
    assert set(seen) == set(leaves)  # no matmul with a weight is missed, none stays float silently
    for path, k in seen.items():
        shape, axes = leaves[path]
        assert k == np.prod([shape[a] for a in axes])


def test_intercept_lines_the_activation_up_with_the_weights_input_axes():
    rng = np.random.default_rng(3)
    p = {
        "wo": jnp.asarray(rng.standard_normal((2, 3, 5)), jnp.float32),
        "wte": jnp.asarray(rng.standard_normal((7, 5)), jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((4, 3, 2)), jnp.float32)  # (N, E, H): axes in the other order
    z = jnp.asarray(rng.standard_normal((4, 5)), jnp.float32)

    def fn(p, x, z):
        return jnp.einsum("neh,hed->nd", x, p["wo"]), z @ p["wte"].T

    recorded = {}

    def hook(name, a):
        recorded[name] = a
        return 2.0 * a, None

    (y1, y2), _ = intercept(fn, hook, p, x, z)
    # (N, K) with K in the weight's (H, E) order, matching to_matrix(wo, (0, 1))
    np.testing.assert_array_equal(
        np.asarray(recorded["wo"]), np.transpose(np.asarray(x), (0, 2, 1)).reshape(4, 6)
    )
    np.testing.assert_array_equal(np.asarray(recorded["wte"]), np.asarray(z))
    w_km = np.asarray(qt.to_matrix(p["wo"], (0, 1)), np.float64)
    want = 2.0 * np.transpose(np.asarray(x, np.float64), (0, 2, 1)).reshape(4, 6) @ w_km
    np.testing.assert_allclose(np.asarray(y1), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(y2),
        2.0 * np.asarray(z, np.float64) @ np.asarray(p["wte"], np.float64).T,
        rtol=1e-5,
        atol=1e-5,
    )


def test_qat_forward_is_the_float_model_at_zero_bits_and_the_ptq_model_otherwise(params):
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 8), 0, 64)
    batch = {"inputs": tokens}
    f = jax.jit(lambda p, b: qat_forward(CFG, p, batch, jnp.asarray([b])))
    float_logits = jax.jit(lambda p: apply(CFG, p, tokens))(params)
    np.testing.assert_allclose(np.asarray(f(params, 0.0)), np.asarray(float_logits), rtol=1e-6, atol=1e-6)
    q3 = jax.jit(lambda p: apply(CFG, qt.ptq_tree(p, qt.Scheme(3, True, "channel")), tokens))(params)
    np.testing.assert_allclose(np.asarray(f(params, 3.0)), np.asarray(q3), rtol=1e-5, atol=1e-6)
    g = jax.jit(jax.grad(lambda p: jnp.sum(qat_forward(CFG, p, batch, jnp.asarray([2.0])))))(params)
    assert float(jnp.abs(g["block_0"]["mlp"]["w1"]).sum()) > 0  # the straight-through gradient reaches it
