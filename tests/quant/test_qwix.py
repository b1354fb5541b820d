"""Cross-check against qwix (Google's JAX quantization library): our absmax int8 and int4 quantizers,
per-tensor, per-channel and group-wise, equal qwix.quantize followed by qwix.dequantize within 1e-6.

Only arrays are compared: qwix's model-level interception sees jnp.einsum/dot/dot_general calls by name, not
`@`; our model-level quantization instead finds every linear layer in the jaxpr (tests/quant/test_tree.py
checks that no weight matrix is missed)."""

import jax.numpy as jnp
import numpy as np
import pytest

from lab.quant import uniform as qz

qwix = pytest.importorskip(
    "qwix", reason="qwix is not installed (it comes with the test extra: pip install -e .[test])"
)


@pytest.mark.parametrize("qtype,bits", [(jnp.int8, 8), (jnp.int4, 4)])
def test_absmax_quantizers_equal_qwix(qtype, bits):
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((64, 24)) * np.linspace(0.05, 3, 24), jnp.float32)
    cases = {
        ("tensor", 0): dict(),
        ("channel", 0): dict(channelwise_axes=(1,)),
        ("group", 32): dict(channelwise_axes=(1,), tiled_axes={0: 32}),
    }
    for (gran, group), kw in cases.items():
        theirs = qwix.dequantize(qwix.quantize(w, qtype, calibration_method="absmax", **kw))
        ours = qz.quant_dequant(w, bits, symmetric=True, granularity=gran, group=group)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=1e-6, err_msg=gran)
