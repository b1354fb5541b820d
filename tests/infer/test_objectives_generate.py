"""Tests for lab.infer.objectives: prefix-LM generation against a plain Python loop over the model, and
masked-LM iterative unmasking (prompt kept, every mask filled, most confident position first)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.infer.objectives import generate_prefix, unmask
from lab.model import ModelConfig, apply, init

V, T = 21, 12


@pytest.fixture(scope="module")
def prompt():
    return jax.random.randint(jax.random.PRNGKey(5), (3, 5), 0, V - 1)


def test_greedy_prefix_generation_matches_a_loop(prompt):
    cfg = ModelConfig(vocab_size=V, max_len=T, n_layers=1, d_model=16, n_heads=2, mask="prefix")
    params = jax.jit(init, static_argnums=0)(cfg, jax.random.PRNGKey(0))
    got = np.asarray(generate_prefix(cfg, params, prompt, 6, key=jax.random.PRNGKey(0), n_text=V - 1))
    buf = np.asarray(prompt).tolist()
    f = jax.jit(lambda x, p: apply(cfg, params, x, p))
    for _ in range(6):
        x = np.zeros((3, 11), np.int32)
        for b in range(3):
            x[b, : len(buf[b])] = buf[b]
        lg = np.asarray(f(jnp.asarray(x), jnp.full((3,), 5, jnp.int32)))
        for b in range(3):
            buf[b].append(int(np.argmax(lg[b, len(buf[b]) - 1, : V - 1])))
    np.testing.assert_array_equal(got, np.array(buf))


def test_unmasking_keeps_the_prompt_and_fills_most_confident_first(prompt):
    cfg = ModelConfig(vocab_size=V, max_len=T, n_layers=1, d_model=16, n_heads=2, mask="bidirectional")
    params = jax.jit(init, static_argnums=0)(cfg, jax.random.PRNGKey(1))
    mask_id = V - 1
    out = np.asarray(unmask(cfg, params, prompt, 7, mask_id, key=jax.random.PRNGKey(0)))
    assert out.shape == (3, 12)
    np.testing.assert_array_equal(out[:, :5], np.asarray(prompt))
    assert (out != mask_id).all()
    # step one by hand: the first committed position is the one with the highest top probability
    buf = np.concatenate([np.asarray(prompt), np.full((3, 7), mask_id)], 1)
    p = np.asarray(jax.nn.softmax(apply(cfg, params, jnp.asarray(buf))[:, :, :mask_id], -1))
    pos = 5 + np.argmax(p[:, 5:].max(-1), axis=1)
    # committed positions never change, so the first one's greedy token is still there at the end
    np.testing.assert_array_equal(out[np.arange(3), pos], np.argmax(p[np.arange(3), pos], -1))


def test_refusals(prompt):
    causal = ModelConfig(vocab_size=V, max_len=T, n_layers=1, d_model=16, n_heads=2)
    with pytest.raises(ValueError, match="bidirectional"):
        unmask(causal, None, prompt, 2, V - 1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="exceed model.max_len"):
        generate_prefix(causal, None, prompt, 8, key=jax.random.PRNGKey(0))
