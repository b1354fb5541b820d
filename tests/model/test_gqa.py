"""MHA -> GQA conversion (lab.model.gqa): G = H is the multi-head model exactly; otherwise each group of
H/G query heads reads the mean of its group's key/value heads, in the grouping lab.ops.attention uses.

Tolerance for the grouping check: the converted GQA model and a multi-head model whose K/V heads are the
group means repeated compute the same sums through different einsum paths (grouped vs plain), so they
agree to float32 roundoff: with weights of scale 1/sqrt(fan in) (O(1) activations and logits) that is
~1e-6, so rtol = atol = 1e-5 as in tests/ops/test_attention.py (a wrong grouping changes them at ~1e-1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.model import ModelConfig, transformer
from lab.model.gqa import gqa_config, mha_to_gqa

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init, apply = (jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply))

MHA = ModelConfig(vocab_size=11, max_len=8, n_layers=2, d_model=32, n_heads=4, bias=True)


def _params(cfg, seed=0):
    """Random weights of scale 1/sqrt(fan in), biases 0.2, so heads differ visibly and activations are O(1)
    (the default init leaves attention near-uniform, where the test would check little)."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = path[-1].key
        if x.ndim == 1 or name in ("bq", "bk", "bv"):
            return jnp.asarray(
                (1.0 if name == "scale" else 0.0) + 0.2 * rng.normal(size=x.shape), jnp.float32
            )
        fan_in = x.shape[0] * x.shape[1] if name == "wo" else x.shape[0]
        scale = 1.0 if name in ("wte", "wpe") else fan_in**-0.5
        return jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, init(cfg, jax.random.PRNGKey(seed)))


TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(2, 8)), jnp.int32)


def test_g_equals_h_is_the_mha_model_exactly():
    params = _params(MHA)
    conv = mha_to_gqa(params, 4)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(conv)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(
        np.asarray(apply(gqa_config(MHA, 4), conv, TOKENS)), np.asarray(apply(MHA, params, TOKENS))
    )


@pytest.mark.parametrize("g", [1, 2])
def test_each_group_reads_the_mean_of_its_own_heads(g):
    params = _params(MHA, seed=1)
    conv = mha_to_gqa(params, g)
    # the same model written as MHA: every query head h gets its group's pooled K/V head (h // (H/G))
    dup = dict(params)
    for name in ("block_0", "block_1"):
        attn = dict(params[name]["attn"])
        for key, axis in (("wk", 1), ("wv", 1), ("bk", 0), ("bv", 0)):
            pooled = np.asarray(conv[name]["attn"][key], np.float64)
            assert pooled.shape[axis] == g
            want = np.asarray(params[name]["attn"][key], np.float64)
            groups = np.split(want, g, axis=axis)  # consecutive heads form a group
            np.testing.assert_allclose(
                pooled,
                np.concatenate([x.mean(axis, keepdims=True) for x in groups], axis),
                rtol=1e-6,
                atol=1e-7,
            )
            attn[key] = jnp.repeat(conv[name]["attn"][key], 4 // g, axis=axis)
        dup[name] = {**params[name], "attn": attn}
    got = apply(gqa_config(MHA, g), conv, TOKENS)
    np.testing.assert_allclose(np.asarray(got), np.asarray(apply(MHA, dup, TOKENS)), rtol=1e-5, atol=1e-5)
    # and it is a different model from the MHA one (the test would be vacuous otherwise)
    assert np.max(np.abs(np.asarray(got) - np.asarray(apply(MHA, params, TOKENS)))) > 1e-2


def test_stacked_parameters_convert_member_by_member():
    stacked = jax.vmap(lambda k: init(MHA, k))(jax.random.split(jax.random.PRNGKey(0), 3))
    conv = mha_to_gqa(stacked, 2)
    for i in range(3):
        one = mha_to_gqa(jax.tree_util.tree_map(lambda x, i=i: x[i], stacked), 2)
        for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(conv)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b[i]))


def test_bad_conversions_are_refused():
    params = _params(MHA)
    with pytest.raises(ValueError, match="must divide"):
        mha_to_gqa(params, 3)
    with pytest.raises(ValueError, match="not MHA"):
        mha_to_gqa(mha_to_gqa(params, 2), 1)
    with pytest.raises(ValueError, match="multi-head"):
        gqa_config(MHA.replace(n_kv_heads=2), 1)
