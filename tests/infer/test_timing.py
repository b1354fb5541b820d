"""lab.infer.timing: a call is timed until its results are ready; decode steps are timed per repeat, and a
cache that cannot be built is refused."""

import time

import jax
import jax.numpy as jnp
import pytest

from lab.infer.timing import decode_step_seconds, timed, token_seconds
from lab.model import ModelConfig, init


def test_timed_returns_the_result_and_the_seconds_until_it_is_ready():
    def slow():
        time.sleep(0.05)
        return jnp.arange(3) * 2

    seconds, result = timed(slow)
    assert seconds >= 0.05 and result.tolist() == [0, 2, 4]


def test_decode_step_seconds_times_each_repeat_on_a_fresh_cache():
    cfg = ModelConfig(vocab_size=11, max_len=16, n_layers=1, d_model=8, n_heads=2)
    secs = decode_step_seconds(cfg, init(cfg, jax.random.PRNGKey(0)), batch=2, size=16, n=4, repeats=3)
    assert len(secs) == 3 and all(s > 0 for s in secs)
    with pytest.raises(ValueError, match="cache size"):
        decode_step_seconds(cfg, init(cfg, jax.random.PRNGKey(0)), batch=1, size=0, n=1, repeats=1)


def test_token_seconds_gives_one_median_per_position_and_parameter_set():
    cfg = ModelConfig(vocab_size=11, max_len=16, n_layers=1, d_model=8, n_heads=2)
    params = [init(cfg, jax.random.PRNGKey(s)) for s in range(2)]
    cached, uncached = token_seconds(cfg, params, jnp.arange(3), positions=(2, 8), size=16, calls=2)
    assert list(cached) == list(uncached) == [2, 8]
    assert all(len(v) == 2 and min(v) > 0 for v in (*cached.values(), *uncached.values()))
