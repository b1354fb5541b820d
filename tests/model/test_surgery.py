"""Weight surgery equals the config switch: rewire/mix on the intact model == ModelConfig(qkv=variant)."""

import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.model import ModelConfig, transformer
from lab.model.config import QKV
from lab.model.surgery import ROUTES, VARIANTS, mix, rewire

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init, apply = (jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply))

CFG = ModelConfig(vocab_size=11, max_len=8, n_layers=2, d_model=16, n_heads=4, bias=True)


@pytest.fixture(scope="module")
def setup():
    params = init(CFG, jax.random.PRNGKey(0))
    # make the biases non-zero so that they are checked too
    params = jax.tree_util.tree_map(lambda x: x + 0.01 * jnp.arange(x.size).reshape(x.shape) / x.size, params)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 8), 0, 11)
    return params, tokens


def test_variants_cover_the_config_literal():
    assert VARIANTS == typing.get_args(QKV)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rewire_and_mix_equal_the_config_switch(setup, variant):
    params, tokens = setup
    want = np.asarray(apply(CFG.replace(qkv=variant), params, tokens))
    got_rewire = np.asarray(apply(CFG, rewire(params, variant), tokens))
    got_mix = np.asarray(apply(CFG, mix(params, jnp.asarray(ROUTES[VARIANTS.index(variant)])), tokens))
    # the same arithmetic on the same numbers (0/1 mixing is exact): bit-identical
    np.testing.assert_array_equal(got_rewire, want)
    np.testing.assert_array_equal(got_mix, want)


def test_one_head_surgery_touches_only_that_head(setup):
    params, _ = setup
    out = rewire(params, "zero_v", layer=1, head=2)
    wv0, wv1 = np.asarray(params["block_1"]["attn"]["wv"]), np.asarray(out["block_1"]["attn"]["wv"])
    assert np.all(wv1[:, 2] == 0) and np.all(np.asarray(out["block_1"]["attn"]["bv"])[2] == 0)
    mask = np.ones(wv0.shape[1], bool)
    mask[2] = False
    np.testing.assert_array_equal(wv1[:, mask], wv0[:, mask])
    np.testing.assert_array_equal(out["block_0"]["attn"]["wv"], params["block_0"]["attn"]["wv"])
    swapped = rewire(params, "swap_qk", layer=0, head=1)["block_0"]["attn"]
    np.testing.assert_array_equal(swapped["wq"][:, 1], params["block_0"]["attn"]["wk"][:, 1])
    np.testing.assert_array_equal(swapped["wq"][:, 0], params["block_0"]["attn"]["wq"][:, 0])


def test_zeroing_one_heads_value_equals_silencing_its_output():
    # without biases, wv[:, h] = 0 makes head h output exactly zero: the same as zeroing its rows of wo
    cfg = CFG.replace(bias=False)
    params = init(cfg, jax.random.PRNGKey(2))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 8), 0, 11)
    silenced = {**params, "block_0": {**params["block_0"], "attn": dict(params["block_0"]["attn"])}}
    silenced["block_0"]["attn"]["wo"] = params["block_0"]["attn"]["wo"].at[3].set(0.0)
    np.testing.assert_array_equal(
        np.asarray(apply(cfg, rewire(params, "zero_v", layer=0, head=3), tokens)),
        np.asarray(apply(cfg, silenced, tokens)),
    )


def test_surgery_refuses_bad_arguments(setup):
    params, _ = setup
    with pytest.raises(ValueError, match="unknown variant"):
        rewire(params, "swap_xy")
    with pytest.raises(ValueError, match="layer 5 out of range"):
        rewire(params, "zero_v", layer=5)


def test_ablate_head_zeroes_that_heads_output_projection_only(setup):
    from lab.model.surgery import ablate_head

    params, tokens = setup
    out = ablate_head(params, 1, 2)
    wo, before = np.asarray(out["block_1"]["attn"]["wo"]), np.asarray(params["block_1"]["attn"]["wo"])
    assert np.all(wo[2] == 0) and np.any(before[2] != 0)
    np.testing.assert_array_equal(np.delete(wo, 2, axis=0), np.delete(before, 2, axis=0))
    np.testing.assert_array_equal(out["block_0"]["attn"]["wo"], params["block_0"]["attn"]["wo"])
    # silencing every head of every block leaves only the biases of the output projections: the same
    # logits whatever the other tokens are (no information moves between positions)
    for layer in range(CFG.n_layers):
        for head in range(CFG.n_heads):
            params = ablate_head(params, layer, head)
    a = np.asarray(apply(CFG, params, tokens))
    b = np.asarray(apply(CFG, params, tokens.at[:, :-1].set((tokens[:, :-1] + 1) % 11)))
    np.testing.assert_allclose(a[:, -1], b[:, -1], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        ablate_head(params, 2, 0)
