"""Post-training quantization of a whole parameter tree (lab.model's nested dict), leaf by leaf.

Which leaves are weights and which of their axes are the matmul's inputs (K) is the table IN_AXES, keyed by
the leaf's name: wq/wk/wv (D, H, E) contract D; wo (H, E, D) contracts (H, E); w1/w3 (D, F) and w2 (F, D)
their first axis; the tied embedding wte (V, D) is the unembedding's (D, V) transposed, so it contracts D
(axis 1) and each vocabulary row is one output channel, which serves the embedding lookup as well.
Vectors (norm scales, biases) and the learned position table `wpe` (added, never multiplied) stay float.
Any other matrix is refused by name: nothing stays float silently.

    scheme = Scheme(bits=4, symmetric=True, granularity="group", group=32)
    q_params = ptq_tree(params, scheme)             # the float weights the int4 model computes with
    stored = quantize_tree(params, scheme)          # integer codes + scales (what a file holds)
    params2 = dequantize_tree(stored, params)       # == q_params
    codes = leaf_codes(stored, params)              # {path: (codes, scale)} in each leaf's own layout
    model_bytes(params, scheme)                     # bytes of codes (bits each) + float32 scales + zeros
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lab.quant import uniform as qz

IN_AXES = {
    "wq": (0,),
    "wk": (0,),
    "wv": (0,),
    "wo": (0, 1),
    "w1": (0,),
    "w2": (0,),
    "w3": (0,),
    "wte": (1,),
    "lm_head": (0,),
}
KEEP_FLOAT = ("wpe",)
SCALE_BYTES = 4  # scales are stored as float32; asymmetric zero points as one byte each


@dataclass(frozen=True)
class Scheme:
    """How every weight of a tree is quantized: bit width, symmetric or not, granularity (and group size)."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "channel"
    group: int = 0

    def __post_init__(self):
        if not qz.MIN_BITS <= self.bits <= qz.MAX_BITS:
            raise ValueError(f"bits must be in {qz.MIN_BITS}..{qz.MAX_BITS}, got {self.bits}")
        if self.granularity not in qz.GRANULARITIES:
            raise ValueError(f"granularity {self.granularity!r} is not one of {', '.join(qz.GRANULARITIES)}")
        if (self.granularity == "group") != (self.group > 0):
            raise ValueError(f"a group size is needed exactly for granularity 'group', got {self.group}")

    @property
    def layout(self) -> str:
        """ "tensor", "channel" or "g<size>"."""
        return f"g{self.group}" if self.granularity == "group" else self.granularity

    @property
    def name(self) -> str:
        """e.g. "sym-g32", "asym-channel" (without the bit width)."""
        return f"{'sym' if self.symmetric else 'asym'}-{self.layout}"

    def kw(self) -> dict:
        return dict(symmetric=self.symmetric, granularity=self.granularity, group=self.group)


def _name(path) -> str:
    return str(getattr(path[-1], "key", path[-1]))


def path_str(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def in_axes(path, leaf) -> tuple[int, ...] | None:
    """The input axes of a weight leaf, or None for a leaf that stays float; refuses an unknown matrix."""
    name = _name(path)
    if np.ndim(leaf) < 2 or name in KEEP_FLOAT:
        return None
    if name not in IN_AXES:
        raise ValueError(
            f"no quantization rule for the matrix {path_str(path)!r} of shape {np.shape(leaf)}; "
            f"known weights: {', '.join(IN_AXES)} (kept float: {', '.join(KEEP_FLOAT)})"
        )
    return IN_AXES[name]


def quantized_leaves(params) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{path: (shape, input axes)} of every leaf that is quantized."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        axes = in_axes(path, leaf)
        if axes is not None:
            out[path_str(path)] = (tuple(np.shape(leaf)), axes)
    return out


def to_matrix(w, axes: tuple[int, ...]):
    """w with its input axes first, flattened to (K, N)."""
    rest = [i for i in range(w.ndim) if i not in axes]
    w = jnp.transpose(w, (*axes, *rest))
    k = math.prod(w.shape[: len(axes)])
    return w.reshape(k, -1)


def from_matrix(w_KN, shape, axes: tuple[int, ...]):
    """The inverse of `to_matrix` for a leaf of `shape`."""
    rest = [i for i in range(len(shape)) if i not in axes]
    order = (*axes, *rest)
    w = w_KN.reshape([shape[i] for i in order])
    return jnp.transpose(w, np.argsort(order))


def check_scheme(params, scheme: Scheme) -> None:
    """Refuse a group size that does not divide some weight's input dimension (naming the weight)."""
    for path, (shape, axes) in quantized_leaves(params).items():
        k = math.prod(shape[a] for a in axes)
        if scheme.granularity == "group" and k % scheme.group:
            raise ValueError(f"group size {scheme.group} does not divide the input dimension {k} of {path}")


def map_weights(fn, params):
    """`fn(w_KN, path) -> w_KN` applied to every quantized leaf as a (K, N) matrix; other leaves as they are."""

    def one(path, leaf):
        axes = in_axes(path, leaf)
        if axes is None:
            return leaf
        return from_matrix(fn(to_matrix(leaf, axes), path_str(path)), leaf.shape, axes).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(one, params)


def ptq_tree(params, scheme: Scheme, bits=None):
    """Round-to-nearest PTQ of every weight (quantize and dequantize); `bits` (may be traced) overrides."""
    b = scheme.bits if bits is None else bits
    return map_weights(lambda w, _: qz.quant_dequant(w, b, **scheme.kw()), params)


def fake_quant_tree(params, bits, scheme: Scheme):
    """`ptq_tree` with a straight-through gradient (QAT); bits <= 0 leaves the weights float."""
    bits = jnp.asarray(bits, jnp.float32)
    safe = jnp.maximum(bits, qz.MIN_BITS)  # the unused branch must stay finite

    def one(w, _):
        return jnp.where(bits > 0, qz.fake_quant(w, safe, **scheme.kw()), w)

    return map_weights(one, params)


def quantize_tree(params, scheme: Scheme) -> dict:
    """{path: (codes in int8/uint8 with the leaf's shape as (K, N), scale, zero)} of every weight."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        axes = in_axes(path, leaf)
        if axes is None:
            continue
        w = to_matrix(leaf, axes)
        scale, zero = qz.calibrate(w, scheme.bits, **scheme.kw())
        q = qz.quantize(w, scale, zero, scheme.bits, symmetric=scheme.symmetric)
        out[path_str(path)] = (qz.to_storage(q, scheme.symmetric), scale, zero)
    return out


def dequantize_tree(stored: dict, params):
    """`params` with every weight replaced by the dequantized codes of `stored` (quantize_tree's output)."""

    def one(path, leaf):
        key = path_str(path)
        if key not in stored:
            return leaf
        q, scale, zero = stored[key]
        return from_matrix(qz.dequantize(q, scale, zero), leaf.shape, in_axes(path, leaf)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(one, params)


def leaf_codes(stored: dict, params) -> dict:
    """{path: (codes, scale)} of a symmetric per-tensor or per-channel `quantize_tree` result in each weight's
    own layout: codes with the leaf's shape and dtype int8, scale float32 broadcastable to it (a scalar, or
    the leaf's shape with its input axes of size 1), so that the leaf is exactly float32(codes) * scale — what
    a format with per-axis dequantization stores (ONNX: an int8 initializer times a scale in the graph).
    Group-wise and asymmetric codes have no such layout and are refused."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        key = path_str(path)
        if key not in stored:
            continue
        q, scale, zero = stored[key]
        scale = np.asarray(scale, np.float32)
        if scale.shape[0] != 1 or np.asarray(q).dtype != np.int8 or np.any(np.asarray(zero) != 0):
            raise ValueError(
                f"{key}: only symmetric per-tensor or per-channel int codes have a per-axis layout "
                f"(got {scale.shape[0]} groups, {np.asarray(q).dtype} codes)"
            )
        axes, shape = in_axes(path, leaf), tuple(np.shape(leaf))
        codes = np.asarray(from_matrix(jnp.asarray(q), shape, axes))
        row = scale.reshape(1, -1)
        if row.shape[1] == 1:
            s = row.reshape(())
        else:
            s = np.asarray(
                from_matrix(jnp.asarray(row), tuple(1 if i in axes else d for i, d in enumerate(shape)), axes)
            )
        out[key] = (codes, s.astype(np.float32))
    return out


def model_bytes(params, scheme: Scheme | None = None) -> int:
    """Bytes to store `params`: float32 everywhere (scheme None), or the weights as `scheme.bits`-bit codes
    (packed) plus a float32 scale (and for asymmetric a one-byte zero point) per block; the rest float32."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        n = int(np.prod(np.shape(leaf)))
        axes = None if scheme is None else in_axes(path, leaf)
        if axes is None:
            total += 4 * n
            continue
        k = math.prod(np.shape(leaf)[a] for a in axes)
        cols = n // k
        blocks = {"tensor": 1, "channel": cols, "group": cols * (k // max(scheme.group, 1))}[
            scheme.granularity
        ]
        total += math.ceil(n * scheme.bits / 8) + blocks * (SCALE_BYTES + (0 if scheme.symmetric else 1))
    return total
