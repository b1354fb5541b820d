"""Cached generation (lab.infer.cached) equals full recomputation, and compiles once per call, not per token.

Exactness: with the same key, `generate_cached` (prefill + one-position decode steps over a KV cache) and
`generate` (the whole sequence recomputed every step) produce identical tokens, greedy and sampled, for
multi-head, grouped-query and multi-query attention. Their logits are not bit-identical (the cached step
sums over a fixed number of cache slots, masked ones contributing exactly 0, in a different order), so
the logits are compared with rtol = atol = 1e-5 in float32: logits here are O(1..10) and each passes
through 2 blocks of dot products of length <= 40, so roundoff is ~1e-6; a stale or misplaced cache row,
a wrong position offset or a leaked future key changes them at the 1e-2..1 level. The cached forward is
also checked against the float64 NumPy model of tests/model/test_transformer.py (1e-4, as there).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.infer import generate, generate_cached
from lab.infer.cached import decode_step, prefill
from lab.model import ModelConfig, init_cache, transformer

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init, apply, apply_cached = (
    jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply, transformer.apply_cached)
)

RTOL = ATOL = 1e-5
V = 13
BASE = ModelConfig(vocab_size=V, max_len=40, n_layers=2, d_model=16, n_heads=4)


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _params(cfg, seed=0):
    """Weights of a scale that keeps activations O(1) (the default init leaves logits near-uniform,
    where an argmax near-tie could flip on float reordering and a test would check little)."""
    params = init(cfg, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)

    def draw(path, x):
        if x.ndim < 2:
            return x
        fan_in = x.shape[0] * x.shape[1] if path[-1].key == "wo" else x.shape[0]
        scale = 1.0 if path[-1].key in ("wte", "wpe") else 1 / math.sqrt(fan_in)
        return jnp.asarray(rng.normal(size=x.shape) * scale, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, params)


def _prompt(b=3, p=5, seed=1):
    return jax.random.randint(jax.random.PRNGKey(seed), (b, p), 0, V)


@pytest.mark.parametrize("kv", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_full_recomputation(kv, temperature):
    cfg = BASE.replace(n_kv_heads=kv)
    params, prompt, key = _params(cfg), _prompt(), jax.random.PRNGKey(7)
    want = generate(cfg, params, prompt, 30, temperature=temperature, key=key)
    got, logits = generate_cached(
        cfg, params, prompt, 30, temperature=temperature, key=key, return_logits=True
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the distribution each token was drawn from = the full model on the sequence so far
    full = apply(cfg, params, got)[:, prompt.shape[1] - 1 : -1]
    np.testing.assert_allclose(np.asarray(logits), np.asarray(full), rtol=RTOL, atol=ATOL)
    if temperature > 0:  # the sampled case really sampled: another key gives other tokens
        other = generate_cached(cfg, params, prompt, 30, temperature=temperature, key=jax.random.PRNGKey(8))
        assert not np.array_equal(np.asarray(other), np.asarray(got))


def _lowest_of_top2(logits, key):
    """A sampler that greedy decoding would never match: the second most likely token."""
    return jnp.argsort(logits, axis=-1)[:, -2]


def test_a_plugged_in_sampler_is_used_by_both_generators():
    params, prompt = _params(BASE), _prompt()
    a = generate(BASE, params, prompt, 10, sample_fn=_lowest_of_top2)
    b = generate_cached(BASE, params, prompt, 10, sample_fn=_lowest_of_top2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(b), np.asarray(generate_cached(BASE, params, prompt, 10)))
    top_p = functools.partial(_lowest_of_top2)  # partials of module-level functions are fine too
    np.testing.assert_array_equal(np.asarray(generate_cached(BASE, params, prompt, 10, sample_fn=top_p)), b)


def test_cached_forward_matches_the_float64_numpy_model():
    from lab.port.numpy_ref import forward as np_forward  # the reference forward pass, one place

    cfg = BASE.replace(n_kv_heads=2, bias=True)
    params = _params(cfg, seed=3)
    tokens = np.asarray(_prompt(2, 12, seed=4))
    cache = init_cache(cfg, 2, 16)
    logits, cache = prefill(cfg, params, jnp.asarray(tokens[:, :7]), cache)
    steps = [np.asarray(logits)]
    for i in range(7, 12):
        logits, cache = decode_step(cfg, params, jnp.asarray(tokens[:, i : i + 1]), cache)
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(
        np.concatenate(steps, 1), np_forward(cfg, params, tokens), rtol=1e-4, atol=1e-4
    )
    assert int(cache.length) == 12


def test_window_larger_than_the_sequence_is_the_full_cache_and_a_small_one_slides():
    params, prompt = _params(BASE), _prompt()
    full = generate_cached(BASE, params, prompt, 20)
    np.testing.assert_array_equal(np.asarray(generate_cached(BASE, params, prompt, 20, window=25)), full)
    # One layer without positions: attending to the last W keys is exactly the model run on the last W
    # tokens (with more layers, information reaches further back through the lower layers' windows).
    cfg = BASE.replace(n_layers=1, position="none")
    params, w = _params(cfg), 6
    got = np.asarray(generate_cached(cfg, params, prompt, 20, window=w))
    seq = np.asarray(prompt)
    for _ in range(20):
        nxt = np.asarray(apply(cfg, params, jnp.asarray(seq[:, -w:])))[:, -1].argmax(-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(got, seq)


class _CompileCounter:
    """Counts XLA backend compilations (jax.monitoring's per-compile event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self):
        self.n = 0
        self._fn = lambda event, duration, **kw: setattr(self, "n", self.n + (event == self.EVENT))
        jax.monitoring.register_event_duration_secs_listener(self._fn)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._fn)


def test_generation_compiles_once_per_call_not_per_token():
    cfg = BASE.replace(position="none")  # lengths past max_len are fine without learned positions
    params, prompt = _params(cfg), _prompt(2, 4)
    generate_cached(cfg, params, prompt, 3).block_until_ready()  # warm up the small helper programs
    counts = {}
    for n in (32, 256):
        with _CompileCounter() as c:
            generate_cached(cfg, params, prompt, n).block_until_ready()
        counts[n] = c.n
    assert counts[32] == counts[256] == 1, counts  # one program per call shape, whatever the length
    with _CompileCounter() as c:
        generate_cached(
            cfg, params, prompt, 256, temperature=0.7, key=jax.random.PRNGKey(1)
        ).block_until_ready()
    assert c.n == 0  # same shapes: temperature and key are traced, nothing recompiles


def test_bad_arguments_are_refused_before_compiling():
    params, prompt = _params(BASE), _prompt()
    with pytest.raises(ValueError, match="exceeds model.max_len"):
        generate_cached(BASE, params, prompt, 36)  # 5 + 36 > 40 learned positions
    with pytest.raises(ValueError, match="causal"):
        generate_cached(BASE.replace(mask="bidirectional"), params, prompt, 3)
    with pytest.raises(ValueError, match="window must be >= 1"):
        generate_cached(BASE, params, prompt, 3, window=0)
    with pytest.raises(ValueError, match="temperature"):
        generate_cached(BASE, params, prompt, 3, temperature=-0.1)
    with pytest.raises(ValueError, match="n_new"):
        generate_cached(BASE, params, prompt, 0)
    with pytest.raises(ValueError, match="causal"):
        init_cache(BASE.replace(mask="prefix"), 1, 4)


def test_apply_cached_in_one_chunk_equals_apply():
    params, tokens = _params(BASE), _prompt(2, 9)
    logits, cache = apply_cached(BASE, params, tokens, init_cache(BASE, 2, 9))
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(apply(BASE, params, tokens)), rtol=RTOL, atol=ATOL
    )
    assert int(cache.length) == 9 and cache.size == 9
