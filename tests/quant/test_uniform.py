"""lab.quant.uniform against a plain NumPy float64 reference written from the formulas: every bit width,
symmetric and asymmetric, per-tensor, per-channel and group-wise; the straight-through gradient; activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.quant import uniform as qz

LAYOUTS = [("tensor", 0), ("channel", 0), ("group", 8), ("group", 16)]
STATIC = ("symmetric", "granularity", "group")
# compiled once per layout, the bit width traced: op-by-op dispatch would dominate these tests' time
calibrate = jax.jit(qz.calibrate, static_argnames=STATIC)
quant_dequant = jax.jit(qz.quant_dequant, static_argnames=STATIC)
quantize = jax.jit(qz.quantize, static_argnames=("symmetric",))


def ref_quant_dequant(w, bits, symmetric, granularity, group):
    """float64: the blocks (G, g, N) share a scale; symmetric absmax / (2^(b-1) - 1/2) on the signed grid,
    asymmetric (max - min) / (2^b - 1) with a rounded zero point on the unsigned grid."""
    w = np.asarray(w, np.float64)
    k, n = w.shape
    g = group if granularity == "group" else k
    b = w.reshape(k // g, g, n)
    axes = (0, 1, 2) if granularity == "tensor" else (1,)
    if symmetric:
        s = np.abs(b).max(axis=axes, keepdims=True) / (2 ** (bits - 1) - 0.5)
        s = np.where(s < 1e-12, 1.0, s)
        q = np.clip(np.rint(b / s), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return (q * s).reshape(k, n), q.reshape(k, n), _ties(b / s, q, k, n)
    lo = np.minimum(b.min(axis=axes, keepdims=True), 0)
    hi = np.maximum(b.max(axis=axes, keepdims=True), 0)
    s = (hi - lo) / (2**bits - 1)
    s = np.where(s < 1e-12, 1.0, s)
    z = np.rint(-lo / s)
    q = np.clip(np.rint(b / s) + z, 0, 2**bits - 1)
    return ((q - z) * s).reshape(k, n), q.reshape(k, n), _ties(b / s, q - z, k, n)


def _ties(r, q, k, n):
    """Entries whose unrounded code lies within float32 error of a half (the absmax entry of a symmetric block
    always does: absmax / scale = 2^(b-1) - 1/2) and was not clipped: float32 may round either way, both at
    the same distance; everywhere else the codes must agree exactly."""
    return ((np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-4) & (np.abs(r - q) <= 0.5 + 1e-4)).reshape(k, n)


@pytest.fixture(scope="module")
def w():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 12)) * np.linspace(0.1, 2.0, 12)  # columns of very different ranges
    x[3, 5] = 9.0  # one outlier weight
    return x.astype(np.float32)


@pytest.mark.parametrize("symmetric", [True, False])
def test_quant_dequant_matches_the_float64_reference_at_every_width_and_layout(w, symmetric):
    for bits in range(2, 9):
        for gran, group in LAYOUTS:
            want, codes, tie = ref_quant_dequant(w, bits, symmetric, gran, group)
            scale, zero = calibrate(w, bits, symmetric=symmetric, granularity=gran, group=group)
            q = np.asarray(quantize(jnp.asarray(w), scale, zero, bits, symmetric=symmetric))
            np.testing.assert_array_equal(q[~tie], codes[~tie], err_msg=f"{bits} bits {gran}{group}")
            assert np.all(np.abs(q - codes)[tie] <= 1)
            got = quant_dequant(jnp.asarray(w), bits, symmetric=symmetric, granularity=gran, group=group)
            got = np.asarray(got, np.float64)
            np.testing.assert_allclose(got[~tie], want[~tie], rtol=1e-6, atol=1e-6)  # float32 precision
            # at a tie both neighbours are half a step from w
            np.testing.assert_allclose(np.abs(got - w)[tie], np.abs(want - w)[tie], rtol=0, atol=1e-5)
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
            assert q.min() >= lo and q.max() <= hi
            stored = np.asarray(qz.to_storage(jnp.asarray(q), symmetric))
            np.testing.assert_array_equal(stored.astype(np.float64), q)


def test_rounding_error_is_at_most_half_a_step_and_shrinks_with_bits(w):
    errs = []
    for bits in range(2, 9):
        scale, _ = calibrate(w, bits, granularity="channel")
        d = np.abs(np.asarray(quant_dequant(w, bits, granularity="channel")) - w)
        # symmetric absmax with the half-step range: nothing is clipped, so |error| <= scale / 2
        assert np.all(d <= np.asarray(scale).reshape(1, -1) / 2 + 1e-6)
        errs.append(d.mean())
    assert all(a > b for a, b in zip(errs, errs[1:]))
    # finer scales fit better: group < channel < tensor at 4 bits on columns of different ranges
    e = {
        g: np.abs(np.asarray(quant_dequant(w, 4, granularity=g, group=8 * (g == "group"))) - w).mean()
        for g in ("tensor", "channel", "group")
    }
    assert e["group"] < e["channel"] < e["tensor"]


def test_zero_blocks_stay_zero_and_bad_groups_are_refused():
    z = jnp.zeros((8, 4))
    for sym in (True, False):
        np.testing.assert_array_equal(np.asarray(qz.quant_dequant(z, 4, symmetric=sym)), 0.0)
    with pytest.raises(ValueError, match="group size 3 does not divide the input dimension 8"):
        qz.quant_dequant(z, 4, granularity="group", group=3)
    with pytest.raises(ValueError, match="granularity 'row'"):
        qz.quant_dequant(z, 4, granularity="row")


def test_fake_quant_is_quant_dequant_forward_and_identity_backward(w):
    c = jnp.asarray(np.random.default_rng(1).standard_normal(w.shape), jnp.float32)
    f = lambda x, b: jnp.sum(qz.fake_quant(x, b, granularity="group", group=8) * c)
    val, grad = jax.value_and_grad(f)(jnp.asarray(w), 3.0)
    want = np.sum(
        np.asarray(qz.quant_dequant(w, 3, granularity="group", group=8), np.float64) * np.asarray(c)
    )
    assert abs(float(val) - want) < 1e-4
    np.testing.assert_array_equal(np.asarray(grad), np.asarray(c))  # straight through
    # a traced bit width (QAT's members) gives the same values as a static one
    traced = jax.jit(lambda x, b: qz.quant_dequant(x, b, granularity="channel"))(jnp.asarray(w), 5.0)
    static = qz.quant_dequant(jnp.asarray(w), 5, granularity="channel")
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(static))


def test_activation_quantization_matches_the_reference():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 10))
    x[:, 7] *= 40.0  # an outlier feature
    for per in ("tensor", "token"):
        axis = None if per == "tensor" else -1
        s = np.abs(x).max(axis=axis, keepdims=True) / 127.5
        want = np.clip(np.rint(x / s), -128, 127) * s
        got = np.asarray(qz.quant_activations(jnp.asarray(x, jnp.float32), 8, per=per), np.float64)
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(x).max())
    keep = np.zeros(10, bool)
    keep[7] = True
    inside = np.where(keep, 0.0, x)
    s = np.abs(inside).max() / 127.5
    want = np.where(keep, x, np.clip(np.rint(inside / s), -128, 127) * s)
    got = np.asarray(
        qz.quant_activations(jnp.asarray(x, jnp.float32), 8, per="tensor", keep=jnp.asarray(keep))
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the outlier column kept float makes the other columns' per-tensor error far smaller
    plain = np.asarray(qz.quant_activations(jnp.asarray(x, jnp.float32), 8, per="tensor"))
    assert np.abs(got - x)[:, ~keep].mean() < np.abs(plain - x)[:, ~keep].mean() / 10
