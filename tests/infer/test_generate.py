"""Generation: the fixed-buffer loop equals recomputing the model on the growing sequence, step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.infer import generate
from lab.model import ModelConfig, transformer

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init, apply = (jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply))

CFG = ModelConfig(vocab_size=13, max_len=8, n_layers=1, d_model=16, n_heads=2)


def reference_greedy(params, prompt, n_new):
    """The obvious loop: run the model on (the last max_len tokens of) the sequence, append the argmax."""
    seq = np.asarray(prompt)
    for _ in range(n_new):
        window = seq[:, -CFG.max_len :]
        logits = np.asarray(apply(CFG, params, jnp.asarray(window)))
        seq = np.concatenate([seq, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return seq


@pytest.mark.parametrize("prompt_len, n_new", [(3, 4), (2, 14)])  # the second slides past max_len
def test_greedy_matches_step_by_step_recomputation(prompt_len, n_new):
    params = init(CFG, jax.random.PRNGKey(0))
    # larger weights so that the argmax is not a near-tie that float reordering could flip
    params = jax.tree_util.tree_map(lambda x: x * 8 if x.ndim >= 2 else x, params)
    prompt = jax.random.randint(jax.random.PRNGKey(1), (3, prompt_len), 0, 13)
    got = np.asarray(generate(CFG, params, prompt, n_new))
    np.testing.assert_array_equal(got, reference_greedy(params, prompt, n_new))


def test_sampling_is_reproducible_and_temperature_matters():
    params = init(CFG, jax.random.PRNGKey(0))
    prompt = jnp.zeros((4, 2), jnp.int32)
    a = generate(CFG, params, prompt, 12, temperature=1.0, key=jax.random.PRNGKey(5))
    b = generate(CFG, params, prompt, 12, temperature=1.0, key=jax.random.PRNGKey(5))
    c = generate(CFG, params, prompt, 12, temperature=1.0, key=jax.random.PRNGKey(6))
    g = generate(CFG, params, prompt, 12, temperature=0.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, g)
    assert int(a.max()) < 13 and int(a.min()) >= 0


def test_generate_refuses_bad_arguments():
    params = init(CFG, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        generate(CFG, params, jnp.zeros((1, 2), jnp.int32), 3, temperature=-1.0)
    with pytest.raises(ValueError, match="causal"):
        generate(CFG.replace(mask="bidirectional"), params, jnp.zeros((1, 2), jnp.int32), 3)
    with pytest.raises(ValueError, match="prompt must be"):
        generate(CFG, params, jnp.zeros((2,), jnp.int32), 3)
