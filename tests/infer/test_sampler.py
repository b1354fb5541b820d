"""sample_trace: greedy equals plain generation, records are consistent with a step-by-step recomputation,
and one compiled program serves every prompt length, length and knob setting."""

import jax
import numpy as np
import pytest

from lab.infer import generate
from lab.infer.sampler import _trace, sample_trace
from lab.model import PRESETS, ModelConfig, transformer
from lab.ops.sampling import knobs

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first
# use, which costs several times one compilation of the whole program.
init, apply = (jax.jit(f, static_argnums=0) for f in (transformer.init, transformer.apply))


@pytest.fixture(scope="module")
def model():
    cfg = PRESETS["smoke"].replace(vocab_size=23, max_len=8)
    return cfg, init(cfg, jax.random.PRNGKey(0))


def test_greedy_trace_equals_generate_including_past_max_len(model):
    cfg, params = model
    prompt = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    rec = sample_trace(cfg, params, prompt, 12, knobs(temperature=0.0), max_new=16)
    want = np.asarray(generate(cfg, params, prompt, 12))[:, 3:]
    np.testing.assert_array_equal(rec["tokens"], want)
    np.testing.assert_allclose(rec["prob"], 1.0)
    np.testing.assert_allclose(rec["entropy_after"], 0.0, atol=1e-6)


def test_records_match_a_step_by_step_recomputation(model):
    cfg, params = model
    prompt = np.array([[7, 1, 9, 2]], np.int32)
    sp = knobs(temperature=0.9, top_k=5, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    rec = sample_trace(cfg, params, prompt, 6, sp, seed=3, max_new=8, top_n=4)
    seq = list(prompt[0])
    for i in range(6):
        logits = np.asarray(apply(cfg, params, np.array([seq[-cfg.max_len :]])), np.float64)[0, -1]
        seen = set(seq)
        pen = (
            np.array([(x / 1.3 if x > 0 else x * 1.3) if j in seen else x for j, x in enumerate(logits)])
            / 0.9
        )
        before = np.exp(pen - pen.max())
        before /= before.sum()
        np.testing.assert_allclose(rec["top_before"][0, i], np.sort(before)[::-1][:4], rtol=1e-4, atol=1e-6)
        tok = int(rec["tokens"][0, i])
        assert rec["top_after"][0, i].sum() <= 1 + 1e-5 and rec["prob"][0, i] > 0
        assert (
            before[tok] >= np.sort(before)[::-1][min(4, rec["kept"][0, i] - 1)] - 1e-6
        )  # drawn from kept set
        seq.append(tok)


def test_one_program_for_every_prompt_length_and_setting(model):
    cfg, params = model
    sample_trace(cfg, params, np.array([[1, 2]]), 3, knobs(temperature=0.5, top_k=2, top_p=0.9), max_new=32)
    n = _trace._cache_size()
    for p, n_new, sp in [
        (5, 30, knobs(temperature=1.5, min_p=0.1, repetition_penalty=1.4)),
        (20, 1, knobs(temperature=0.0)),
    ]:
        sample_trace(cfg, params, np.arange(1, p + 1)[None] % 23, n_new, sp, max_new=32)
    assert _trace._cache_size() == n


def test_rows_can_have_their_own_settings(model):
    cfg, params = model
    prompt = np.tile(np.array([[3, 4, 5]], np.int32), (3, 1))
    sp = knobs(temperature=np.array([0.0, 1.0, 1.0]), top_k=np.array([0, 1, 0]))
    rec = sample_trace(cfg, params, prompt, 10, sp, seed=1, max_new=10)
    greedy = np.asarray(generate(cfg, params, prompt[:1], 10))[0, 3:]
    np.testing.assert_array_equal(rec["tokens"][0], greedy)  # temperature 0
    np.testing.assert_array_equal(rec["tokens"][1], greedy)  # top-k 1 at temperature 1
    assert (rec["kept"][2] > 1).all()
    with pytest.raises(ValueError, match="n_new"):
        sample_trace(cfg, params, prompt, 11, sp, max_new=10)


def _sharp_params(cfg, seed=0):
    """Weights of a scale that keeps activations O(1), so logits are far from ties (as test_cached.py)."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        if x.ndim < 2:
            return x
        fan_in = x.shape[0] * x.shape[1] if path[-1].key == "wo" else x.shape[0]
        return np.asarray(
            rng.normal(size=x.shape) / (1 if path[-1].key in ("wte", "wpe") else fan_in**0.5), np.float32
        )

    return jax.tree_util.tree_map_with_path(draw, init(cfg, jax.random.PRNGKey(seed)))


def test_cached_trace_equals_the_recompute_including_past_the_context():
    """The KV cache serves positions < max_len and the windowed recompute the rest: same tokens, and
    records equal to float32 roundoff, for prompts shorter than, as long as and longer than the context,
    greedy, plain and filtered rows (per-row knobs), with 2 layers (where a sliding cache would differ)."""
    cfg = ModelConfig(vocab_size=23, max_len=8, n_layers=2, d_model=16, n_heads=4)  # learned positions
    params = _sharp_params(cfg)
    sp = knobs(temperature=np.array([0.0, 1.0, 0.9]), top_k=np.array([0, 0, 6]), top_p=np.array([1.0, 1.0, 0.9]),
               min_p=np.array([0.0, 0.0, 0.05]), repetition_penalty=np.array([1.0, 1.0, 1.3]))  # fmt: skip
    for p in (3, 8, 11):
        prompt = np.tile((np.arange(p) * 5 % 23)[None], (3, 1))
        for seed in (0, 1):
            want = sample_trace(cfg, params, prompt, 14, sp, seed=seed, max_new=16, cached=False)
            got = sample_trace(cfg, params, prompt, 14, sp, seed=seed, max_new=16, cached=True)
            for k in ("tokens", "kept", "top_ids"):
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{k}, prompt {p}, seed {seed}")
            for k in ("prob", "model_prob", "entropy_before", "entropy_after", "top_before", "top_after"):
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert len(set(map(tuple, want["tokens"]))) > 1  # the rows really sampled differently
