"""Tests for lab.model (config, layers, transformer): shapes, closed-form parameter counts, causality, a
NumPy float64 re-implementation of the whole forward pass from the parameter dict, the Q/K/V ablations as
parameter rewirings of the intact model, config validation, and the Literal <-> dispatch-dict sync.

Tolerances:
- float32 model vs float64 NumPy forward: rtol = atol = 1e-4. Logits are O(1..10); each passes through
  ~2 blocks of dot products of length <= 64, softmaxes and layer norms (which divide by a std of O(1) with
  the parameters used here), so float32 roundoff (6e-8) accumulates to ~1e-6 relative; 1e-4 leaves two
  orders of margin and is still far below what a real mistake (a wrong head grouping, a missing scale,
  post-norm instead of pre-norm, a dropped bias) produces.
- the Q/K/V ablations against the rewired intact model: the same arithmetic up to operand order, 1e-6.
- bfloat16 vs float32 model: bfloat16 keeps 8 significant bits (unit roundoff 2^-9 ~ 0.002) and every
  matmul, norm and residual add rounds, so we allow |diff| <= 2^-4 * max|logits| (32 bfloat16 roundoffs).
- causality / locality: exact (masked keys get probability exactly 0).
"""

import dataclasses
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.errors import ConfigError
from lab.model import PRESETS, ModelConfig, config, layers, transformer
from lab.port.numpy_ref import forward as np_forward

RTOL = ATOL = 1e-4
REWIRE_TOL = 1e-6
BF16_REL = 2.0**-4

B, T, V = 2, 8, 16
BASE = ModelConfig(vocab_size=V, max_len=T, n_layers=2, d_model=16, n_heads=2)

# Compiled whole (the config static): run eagerly, a model executes op by op and compiles each op on first use,
# which costs several times one compilation of the whole program.
_apply, _init, _capture = (
    jax.jit(f, static_argnums=0) for f in (transformer.apply, transformer.init, transformer.capture)
)


@pytest.fixture(autouse=True, scope="module")
def _true_float32_matmuls():
    # On GPU/TPU JAX may run float32 matmuls with TF32/bf16 passes by default; the tolerances above assume
    # real float32 products (which is what CPU always does).
    with jax.default_matmul_precision("highest"):
        yield


# --- helpers ----------------------------------------------------------------------------------------------
def _randomized(params, seed=0):
    """Replace every parameter by a random value of a scale that keeps activations O(1): with the default
    init (std 0.02) most of the model is near zero and a reference test would check very little."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        shape = leaf.shape
        if name == "scale":
            x = 1.0 + 0.2 * rng.normal(size=shape)
        elif name in ("wte", "wpe"):
            x = rng.normal(size=shape)
        elif name.startswith("b"):  # bq bk bv bo b1 b2 bias
            x = 0.2 * rng.normal(size=shape)
        else:  # matrices: 1/sqrt(fan in); wo (H, E, D) has fan in H*E
            fan_in = shape[0] * shape[1] if name == "wo" else shape[0]
            x = rng.normal(size=shape) / math.sqrt(fan_in)
        return jnp.asarray(x, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, params)


def _params(cfg, seed=0):
    return _randomized(jax.eval_shape(_init, cfg, jax.random.key(seed)), seed)  # only the shapes are used


def _tokens(seed, b=B, t=T):
    return np.random.default_rng(seed).integers(0, V, size=(b, t)).astype(np.int32)


def _other_tokens(tokens, rng):
    """Tokens that differ from `tokens` at every position."""
    return ((tokens + rng.integers(1, V, size=tokens.shape)) % V).astype(np.int32)


# The NumPy float64 forward pass lives in lab.port.numpy_ref (every other stack is measured against it).


# --- init / apply -----------------------------------------------------------------------------------------
def test_init_and_apply_shapes_and_dtypes():
    params = _init(BASE, jax.random.key(0))
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))
    assert params["wte"].shape == (V, BASE.d_model) and params["wpe"].shape == (T, BASE.d_model)
    for t in (T, 5):  # any length up to max_len
        logits = _apply(BASE, params, _tokens(0, t=t))
        assert logits.shape == (B, t, V) and logits.dtype == jnp.float32
        assert np.isfinite(np.asarray(logits)).all()


def test_init_is_a_pure_function_of_the_key():
    a, b = _init(BASE, jax.random.key(1)), _init(BASE, jax.random.key(1))
    c = _init(BASE, jax.random.key(2))
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert not np.array_equal(a["wte"], c["wte"])


def expected_param_count(c: ModelConfig) -> int:
    d, v, h, k, e, f = c.d_model, c.vocab_size, c.n_heads, c.kv_heads, c.head_dim, c.ff_dim
    n = v * d  # token embedding
    if c.position == "learned":
        n += c.max_len * d
    attn = d * h * e + 2 * d * k * e + h * e * d  # wq, wk + wv (kv heads), wo
    gated = c.activation in ("swiglu", "geglu")
    mlp = (3 if gated else 2) * d * f
    norm = 0 if c.norm == "none" else d
    if c.bias:
        attn += h * e + 2 * k * e + d
        mlp += (2 if gated else 1) * f + d
        norm *= 2 if c.norm == "layernorm" else 1  # RMSNorm has no bias
    final = norm if c.norm_placement == "pre" else 0
    n += c.n_layers * (attn + mlp + 2 * norm) + final  # two norms per block, one final (pre-norm)
    if not c.tie_embeddings:
        n += d * v
    return n


@pytest.mark.parametrize(
    "cfg",
    [
        BASE,
        BASE.replace(bias=True),
        BASE.replace(tie_embeddings=False),
        BASE.replace(n_heads=4, n_kv_heads=2, bias=True, tie_embeddings=False, d_ff=24),
        BASE.replace(n_heads=4, n_kv_heads=1, n_layers=3),
        BASE.replace(position="none", norm="none", bias=True),
        BASE.replace(mask="prefix", qkv="zero_v"),
        BASE.replace(norm="rmsnorm", bias=True, norm_placement="post", activation="swiglu"),
        BASE.replace(position="rope", activation="geglu", d_ff=40),
        BASE.replace(position="alibi", norm="rmsnorm"),
        BASE.replace(position="sinusoidal", norm_placement="post"),
        PRESETS["smoke"],
        PRESETS["cpu"],
    ],
    ids=lambda c: (
        f"L{c.n_layers}-D{c.d_model}-H{c.n_heads}-K{c.kv_heads}-F{c.ff_dim}-{c.position}-{c.norm}"
        f"-{c.norm_placement}-{c.activation}-bias{int(c.bias)}-tied{int(c.tie_embeddings)}"
    ),
)
def test_param_count_closed_form(cfg):
    shapes = jax.eval_shape(lambda: _init(cfg, jax.random.key(0)))
    assert transformer.param_count(shapes) == expected_param_count(cfg)


def test_param_count_nanogpt_cpu_preset():
    # nanoGPT's shakespeare_char CPU model at vocabulary 65 ("0.8M parameters"):
    # 65*128 + 64*128 + 4 * (4*128^2 + 2*128*512 + 2*128) + 128 = 804,096
    cfg = PRESETS["nanogpt-cpu"].replace(vocab_size=65)
    shapes = jax.eval_shape(lambda: _init(cfg, jax.random.key(0)))
    assert transformer.param_count(shapes) == 804_096 == expected_param_count(cfg)


# --- the NumPy reference ----------------------------------------------------------------------------------
REF_CONFIGS = {
    "causal-gqa-bias-tied-gelu": BASE.replace(n_heads=4, n_kv_heads=2, bias=True),
    "prefix-mqa-untied-relu": BASE.replace(
        n_heads=4, n_kv_heads=1, tie_embeddings=False, activation="relu", mask="prefix", d_ff=24
    ),
    "bidirectional-nopos-nonorm-gelutanh": BASE.replace(
        mask="bidirectional", activation="gelu_tanh", position="none", norm="none", n_layers=1
    ),
    "rmsnorm-post-swiglu-bias-sinusoidal": BASE.replace(
        norm="rmsnorm",
        norm_placement="post",
        activation="swiglu",
        bias=True,
        position="sinusoidal",
        norm_eps=0.25,
    ),
    "layernorm-post-geglu-rope-gqa": BASE.replace(
        norm_placement="post",
        activation="geglu",
        position="rope",
        rope_theta=100.0,
        n_heads=4,
        n_kv_heads=2,
        norm_eps=0.1,
    ),
    "alibi-3heads-bidirectional-rmsnorm": BASE.replace(
        position="alibi", n_heads=3, d_model=18, mask="bidirectional", norm="rmsnorm"
    ),
    "alibi-causal-relu": BASE.replace(position="alibi", activation="relu"),
}


@pytest.mark.parametrize("name", list(REF_CONFIGS))
def test_forward_matches_numpy_float64_reference(name):
    cfg = REF_CONFIGS[name]
    params = _params(cfg, 3)
    tokens = _tokens(3)
    prefix = np.array([3, 6], np.int32) if cfg.mask == "prefix" else None
    logits = np.asarray(_apply(cfg, params, tokens, prefix))
    want = np_forward(cfg, params, tokens, prefix)
    assert np.abs(want).max() > 1.0  # the reference is not trivially small
    np.testing.assert_allclose(logits, want, rtol=RTOL, atol=ATOL)


def test_forward_with_default_init_matches_reference():
    params = _init(BASE, jax.random.key(4))
    tokens = _tokens(4)
    np.testing.assert_allclose(
        np.asarray(_apply(BASE, params, tokens)), np_forward(BASE, params, tokens), rtol=RTOL, atol=ATOL
    )


# --- causality --------------------------------------------------------------------------------------------
def test_model_is_causal():
    params = _params(BASE, 5)
    tokens = _tokens(5)
    rng = np.random.default_rng(5)
    logits = np.asarray(_apply(BASE, params, tokens))
    for t in range(T - 1):
        changed = tokens.copy()
        changed[:, t + 1 :] = _other_tokens(tokens[:, t + 1 :], rng)
        out = np.asarray(_apply(BASE, params, changed))
        np.testing.assert_array_equal(out[:, : t + 1], logits[:, : t + 1])
        assert not np.allclose(out[:, t + 1], logits[:, t + 1])  # the change is visible where it should be


def test_bidirectional_model_sees_the_future():
    cfg = BASE.replace(mask="bidirectional")
    params = _params(cfg, 6)
    tokens = _tokens(6)
    changed = tokens.copy()
    changed[:, -1] = _other_tokens(tokens[:, -1], np.random.default_rng(6))
    a, b = np.asarray(_apply(cfg, params, tokens)), np.asarray(_apply(cfg, params, changed))
    assert np.abs(a[:, 0] - b[:, 0]).max() > 1e-3  # the first position reacts to the last token


def test_prefix_model_is_bidirectional_in_the_prefix_and_causal_after():
    cfg = REF_CONFIGS["prefix-mqa-untied-relu"]
    params = _params(cfg, 7)
    tokens = _tokens(7)
    prefix = np.array([3, 5], np.int32)
    logits = np.asarray(_apply(cfg, params, tokens, prefix))
    rng = np.random.default_rng(7)
    for b, p in enumerate(prefix):
        # the last prefix token is seen by the first position
        changed = tokens.copy()
        changed[b, p - 1] = _other_tokens(tokens[b, p - 1], rng)
        out = np.asarray(_apply(cfg, params, changed, prefix))
        assert np.abs(out[b, 0] - logits[b, 0]).max() > 1e-3
        # a token after the prefix is seen by no earlier position
        for j in range(p, T):
            changed = tokens.copy()
            changed[b, j] = _other_tokens(tokens[b, j], rng)
            out = np.asarray(_apply(cfg, params, changed, prefix))
            np.testing.assert_array_equal(out[b, :j], logits[b, :j])


def test_prefix_model_without_prefix_len_raises():
    cfg = REF_CONFIGS["prefix-mqa-untied-relu"]
    with pytest.raises(ValueError, match="prefix_len"):
        transformer.apply(cfg, _init(cfg, jax.random.key(0)), _tokens(0))


def test_learned_positions_refuse_sequences_longer_than_max_len():
    params = _init(BASE, jax.random.key(0))
    too_long = _tokens(0, t=T + 1)
    with pytest.raises(ValueError, match="max_len"):
        transformer.apply(BASE, params, too_long)
    with pytest.raises(ValueError, match="max_len"):  # at trace time under jit, too
        _apply(BASE, params, too_long)


# --- Q/K/V ablations as rewirings of the intact model ------------------------------------------------------
def _rewire(variant, params):
    """The intact model's parameters that make it compute what `variant` computes: swap_qk == intact with
    wq and wk (and bq and bk) exchanged in every block, tie_qk == intact with wq := wk, zero_x == wx := 0."""

    def attn(a):
        a = dict(a)

        def swap(x, y):
            for p in ("w", "b"):
                if p + x in a:
                    a[p + x], a[p + y] = a[p + y], a[p + x]

        def copy(dst, src):
            for p in ("w", "b"):
                if p + src in a:
                    a[p + dst] = a[p + src]

        def zero(x):
            for p in ("w", "b"):
                if p + x in a:
                    a[p + x] = jnp.zeros_like(a[p + x])

        {
            "intact": lambda: None,
            "swap_qk": lambda: swap("q", "k"),
            "swap_qv": lambda: swap("q", "v"),
            "swap_kv": lambda: swap("k", "v"),
            "tie_qk": lambda: copy("q", "k"),
            "zero_q": lambda: zero("q"),
            "zero_k": lambda: zero("k"),
            "zero_v": lambda: zero("v"),
        }[variant]()
        return a

    return {n: ({**p, "attn": attn(p["attn"])} if n.startswith("block_") else p) for n, p in params.items()}


MHA = BASE.replace(bias=True)  # n_kv_heads == n_heads: every variant is allowed
GQA = BASE.replace(bias=True, n_heads=4, n_kv_heads=2)


@pytest.mark.parametrize(
    "base,variant",
    [(MHA, v) for v in ("swap_qk", "swap_qv", "swap_kv", "tie_qk", "zero_q", "zero_k", "zero_v")]
    + [(GQA, v) for v in ("swap_kv", "zero_q", "zero_v")],
    ids=lambda x: x if isinstance(x, str) else f"H{x.n_heads}K{x.kv_heads}",
)
def test_qkv_variant_equals_rewired_intact_model(base, variant):
    params = _params(base, 8)
    tokens = _tokens(8)
    got = np.asarray(_apply(base.replace(qkv=variant), params, tokens))
    want = np.asarray(_apply(base, _rewire(variant, params), tokens))
    np.testing.assert_allclose(got, want, rtol=REWIRE_TOL, atol=REWIRE_TOL)
    assert not np.allclose(got, np.asarray(_apply(base, params, tokens)), rtol=1e-3, atol=1e-3)  # not a no-op


def test_zero_v_makes_every_position_independent_of_the_others():
    cfg = MHA.replace(qkv="zero_v")
    params = _params(cfg, 9)
    tokens = _tokens(9)
    logits = np.asarray(_apply(cfg, params, tokens))
    rng = np.random.default_rng(9)
    for t in range(T):
        changed = _other_tokens(tokens, rng)
        changed[:, t] = tokens[:, t]
        np.testing.assert_array_equal(np.asarray(_apply(cfg, params, changed))[:, t], logits[:, t])


# --- config -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(d_model=30, n_heads=4), "model.d_model"),
        (dict(n_heads=4, n_kv_heads=3), "model.n_kv_heads"),
        (dict(n_heads=4, n_kv_heads=8), "model.n_kv_heads"),
        (dict(n_heads=4, n_kv_heads=0), "model.n_kv_heads"),
        (dict(n_heads=4, n_kv_heads=-2), "model.n_kv_heads"),
        (dict(n_heads=4, n_kv_heads=2, qkv="swap_qk"), "model.qkv"),
        (dict(n_heads=4, n_kv_heads=2, qkv="swap_qv"), "model.qkv"),
        (dict(n_heads=4, n_kv_heads=1, qkv="tie_qk"), "model.qkv"),
        (dict(vocab_size=0), "model.vocab_size"),
        (dict(max_len=0), "model.max_len"),
        (dict(n_layers=0), "model.n_layers"),
        (dict(d_model=0), "model.d_model"),
        (dict(d_model=-16), "model.d_model"),
        (dict(n_heads=0), "model.n_heads"),
        (dict(n_heads=-2), "model.n_heads"),
        (dict(d_ff=0), "model.d_ff"),
        (dict(init_std=0.0), "model.init_std"),
        (dict(norm="none", norm_placement="post"), "model.norm_placement"),
        (dict(position="rope", d_model=18, n_heads=2), "model.position"),
        (dict(position="rotary"), "model.position"),
        (dict(norm="batchnorm"), "model.norm"),
        (dict(activation="swish"), "model.activation"),
        (dict(norm_placement="sandwich"), "model.norm_placement"),
        (dict(rope_theta=1.0), "model.rope_theta"),
    ],
)
def test_invalid_config_raises_config_error(kw, field):
    with pytest.raises(ConfigError) as e:
        ModelConfig(**kw)
    msg = str(e.value)
    assert "\n" not in msg and field in msg


@pytest.mark.parametrize(
    "kw",
    [
        dict(n_heads=4, n_kv_heads=1),
        dict(n_heads=4, n_kv_heads=2, qkv="swap_kv"),
        dict(n_heads=4, n_kv_heads=2, qkv="zero_q"),
        dict(n_heads=4, n_kv_heads=4, qkv="swap_qk"),
    ],
)
def test_valid_configs_construct(kw):
    ModelConfig(**kw)


@pytest.mark.parametrize(
    "alias,table,field",
    [
        (config.Position, layers.POSITIONAL, "position"),
        (config.Norm, layers.NORMS, "norm"),
        (config.NormPlacement, layers.PLACEMENTS, "norm_placement"),
        (config.Activation, layers.ACTIVATIONS, "activation"),
        (config.Mask, layers.MASKS, "mask"),
        (config.QKV, layers.QKV_VARIANTS, "qkv"),
        (config.AttentionImpl, layers.ATTENTION_IMPLS, "attention"),
        (config.MLPKind, layers.MLPS, "mlp"),
        (config.MoEDispatch, layers.MOE_DISPATCH, "moe_dispatch"),
    ],
)
def test_literal_types_match_dispatch_dicts(alias, table, field):
    values = typing.get_args(alias)
    assert len(values) == len(set(values))
    assert set(values) == set(table)
    assert typing.get_type_hints(ModelConfig)[field] == alias  # the config field really uses that type


def test_config_is_frozen_hashable_and_a_jit_static_arg():
    cfg = BASE.replace(n_layers=1)
    same = ModelConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    assert cfg == same and hash(cfg) == hash(same) and cfg is not same
    assert len({cfg, same, cfg.replace(qkv="zero_q")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 32
    traces = []

    def fwd(c, params, tokens):
        traces.append(c)
        return transformer.apply(c, params, tokens)

    fwd = jax.jit(fwd, static_argnums=0)
    params = _init(cfg, jax.random.key(0))
    a = fwd(cfg, params, _tokens(0))
    b = fwd(same, params, _tokens(0))  # an equal config is a cache hit: no retrace
    assert len(traces) == 1
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fwd(cfg.replace(qkv="zero_q"), params, _tokens(0))  # a different config compiles again
    assert len(traces) == 2


# --- bfloat16 ---------------------------------------------------------------------------------------------
def test_bfloat16_compute_is_close_to_float32():
    cfg16 = BASE.replace(dtype="bfloat16")
    init16 = _init(cfg16, jax.random.key(0))
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(init16))  # parameters stay float32
    params = _params(BASE, 10)
    tokens = _tokens(10)
    lo = _apply(cfg16, params, tokens)
    hi = np.asarray(_apply(BASE, params, tokens))
    assert lo.dtype == jnp.float32 and lo.shape == (B, T, V)  # bfloat16 compute, float32 logits
    lo = np.asarray(lo)
    assert np.isfinite(lo).all()
    assert np.abs(lo - hi).max() <= BF16_REL * np.abs(hi).max()


# --- projects 2 and 10: variants ----------------------------------------------------------------------------
def test_unknown_variant_error_names_the_allowed_values():
    with pytest.raises(ConfigError, match="'layernorm', 'rmsnorm', 'none'"):
        ModelConfig(norm="batchnorm")
    with pytest.raises(ConfigError, match="'none', 'sinusoidal', 'learned', 'rope', 'alibi'"):
        ModelConfig(position="rotary")
    with pytest.raises(ConfigError, match="layernorm, rmsnorm"):
        ModelConfig(norm="none", norm_placement="post")


@pytest.mark.parametrize("d_ff", [None, 24, 40, 100, 256])
@pytest.mark.parametrize("gated", ["swiglu", "geglu"])
def test_gated_mlp_matches_the_dense_parameter_count(d_ff, gated):
    # The rule (ModelConfig.ff_dim): hidden = round(2 d_ff / 3), so the MLP's params differ by <= d_model
    # per block from the two-matrix MLP's (bias-free); exactly equal when 3 divides d_ff.
    dense = BASE.replace(d_ff=d_ff)
    glu = dense.replace(activation=gated)
    count = lambda c: transformer.param_count(jax.eval_shape(lambda: _init(c, jax.random.key(0))))
    diff = abs(count(glu) - count(dense))
    assert diff <= dense.d_model * dense.n_layers
    if dense.ff_dim % 3 == 0:
        assert diff == 0
    assert glu.ff_dim == round(2 * dense.ff_dim / 3)


def test_capture_returns_residuals_mlp_activations_and_attention():
    cfg = BASE.replace(n_heads=4)
    params = _params(cfg, 11)
    tokens = _tokens(11)
    logits, inter = _capture(cfg, params, tokens)
    # the same model compiled as another program: XLA fuses differently, so float32 roundoff only (1e-5 relative)
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(_apply(cfg, params, tokens)), rtol=1e-5, atol=1e-5
    )
    assert inter["residual"].shape == (cfg.n_layers + 1, B, T, cfg.d_model)
    assert inter["mlp_hidden"].shape == (cfg.n_layers, B, T, cfg.ff_dim)
    w = np.asarray(inter["attn_weights"])
    assert w.shape == (cfg.n_layers, B, cfg.n_heads, T, T)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(w, k=1) == 0)  # causal: nothing above the diagonal
    P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    np.testing.assert_allclose(inter["residual"][0], P["wte"][tokens] + P["wpe"][:T], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "variant, has",
    [({"mlp": "moe"}, "attn_weights"), ({"attention": "blocked", "attn_block": 4}, "mlp_hidden")],
)
def test_capture_of_a_model_variant_returns_what_it_computes_and_the_same_logits(variant, has):
    # A mixture-of-experts block has no single MLP hidden layer; blocked attention never builds T x T weights.
    # capture must still run them (the residual stream is the same function), returning only what exists.
    cfg = BASE.replace(**variant)
    params, tokens = _params(cfg, 13), _tokens(13)
    logits, inter = _capture(cfg, params, tokens)
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(_apply(cfg, params, tokens)), rtol=1e-5, atol=1e-5
    )
    assert sorted(inter) == sorted(["residual", has])
    assert inter["residual"].shape == (cfg.n_layers + 1, B, T, cfg.d_model)
    if "attention" in variant:
        with pytest.raises(ValueError, match="never builds the attention probabilities"):
            transformer.stacked_attention(cfg, jax.tree_util.tree_map(lambda a: a[None], params), tokens)


def _permutation_equivariant(cfg, seed):
    params = _params(cfg, seed)
    tokens = _tokens(seed)
    perm = np.random.default_rng(seed).permutation(T)
    out = np.asarray(_apply(cfg, params, tokens))
    out_p = np.asarray(_apply(cfg, params, tokens[:, perm]))
    return out, out_p, perm


def test_no_position_bidirectional_model_is_permutation_equivariant():
    # With no position signal and no mask, attention is a function of the set of keys, so permuting the
    # inputs permutes the outputs. Float32 sums in a different order differ by roundoff only: 1e-5.
    cfg = BASE.replace(position="none", mask="bidirectional")
    out, out_p, perm = _permutation_equivariant(cfg, 12)
    np.testing.assert_allclose(out_p, out[:, perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi"])
def test_every_position_signal_breaks_permutation_equivariance(position):
    cfg = BASE.replace(position=position, mask="bidirectional")
    out, out_p, perm = _permutation_equivariant(cfg, 12)
    assert np.abs(out_p - out[:, perm]).max() > 1e-3


def test_rope_and_alibi_models_run_past_max_len_and_learned_refuses():
    for position in ("rope", "alibi", "sinusoidal", "none"):
        cfg = BASE.replace(position=position)
        params = _init(cfg, jax.random.key(0))
        out = _apply(cfg, params, _tokens(0, t=4 * T))
        assert out.shape == (B, 4 * T, V) and np.isfinite(np.asarray(out)).all()
    with pytest.raises(ValueError, match="learned positions exist only for 0..7"):
        _apply(BASE, _init(BASE, jax.random.key(0)), _tokens(0, t=2 * T))


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("position", ["none", "sinusoidal", "learned", "rope", "alibi"])
def test_the_cached_forward_in_chunks_equals_the_whole_sequence_for_every_position_scheme(
    position, placement
):
    # Each scheme must see the true positions of cached chunks (the offset): a prefill of 5, one chunk of 3
    # and single steps must give the logits of one pass over all T tokens, to float32 roundoff.
    cfg = BASE.replace(position=position, norm_placement=placement)
    params, tokens = _params(cfg, 21), _tokens(22)
    whole = np.asarray(_apply(cfg, params, tokens))
    cache = transformer.init_cache(cfg, B, T)
    parts = []
    for a, b in [(0, 5), (5, 8)] + [(i, i + 1) for i in range(8, T)]:
        logits, cache = transformer.apply_cached(cfg, params, tokens[:, a:b], cache)
        parts.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-5)


# --- stacked attention and the dependency probe -------------------------------------------------------------
def test_stacked_attention_is_each_members_captured_attention():
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), _params(BASE, 1), _params(BASE, 2))
    tokens = _tokens(3)
    got = np.asarray(transformer.stacked_attention(BASE, stacked, tokens))  # (S, L, B, H, T, T)
    assert got.shape == (2, BASE.n_layers, B, BASE.n_heads, T, T)
    for s, seed in enumerate((1, 2)):
        want = np.asarray(_capture(BASE, _params(BASE, seed), tokens)[1]["attn_weights"])
        np.testing.assert_allclose(got[s], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mask", ["causal", "bidirectional"])
def test_input_dependency_is_lower_triangular_exactly_for_a_causal_model(mask):
    cfg = BASE.replace(mask=mask)
    dep = transformer.input_dependency(cfg, _params(cfg, 4), _tokens(4)[:1], n_draws=2)
    assert dep.shape == (T, T) and np.all(dep >= 0)
    assert np.all(np.diag(dep) > 0)  # a token always moves its own position's prediction
    upper = np.triu(dep, k=1)
    if mask == "causal":
        assert np.all(upper == 0.0) and np.all(dep[np.tril_indices(T, k=-1)] > 0)
    else:
        assert np.all(upper[np.triu_indices(T, k=1)] > 0)


@pytest.mark.parametrize("kv, dtype, size", [(None, "float32", 4), (1, "bfloat16", 2)])
def test_cache_memory_is_the_allocated_cache_next_to_the_formula(kv, dtype, size):
    cfg = BASE.replace(n_kv_heads=kv, dtype=dtype)
    got = transformer.cache_memory(cfg, batch=3, size=7)
    want = 2 * cfg.n_layers * 3 * cfg.kv_heads * cfg.head_dim * 7 * size  # written out independently
    assert got == {"measured_bytes": want, "bookkeeping_bytes": 7 * 4 + 4, "formula_bytes": want}


def test_stacked_capture_is_capture_of_each_member():
    params = [_params(BASE, s) for s in (3, 4)]
    tokens = _tokens(3)
    stacked = transformer.stacked_capture(
        BASE, jax.tree_util.tree_map(lambda *x: jnp.stack(x), *params), tokens
    )
    for i, p in enumerate(params):
        one = _capture(BASE, p, tokens)[1]
        for key in ("residual", "mlp_hidden", "attn_weights"):
            np.testing.assert_allclose(stacked[key][i], one[key], rtol=1e-5, atol=1e-5)
