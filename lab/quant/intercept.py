"""Every linear layer of a function, found in its jaxpr: activations quantized at the matmul inputs, and the
inputs recorded (calibration statistics, Hessians for GPTQ, outlier channels).

    y, seen = intercept(fn, hook, params, *args)

evaluates `fn(params, *args)` equation by equation (a jaxpr interpreter, so it traces, jits and vmaps like
any JAX function). Every `dot_general` one of whose operands is a parameter leaf, directly or through a
transpose or dtype cast (a *linear layer*), first passes its other operand, the activation, through
`hook(name, x_NK) -> (x_NK, aux)`: x_NK is the activation with its contracted axes flattened last in the
order of the leaf's axes (the rows N are every other position), so K lines up with the weight's input
features (lab.quant.tree.to_matrix). `seen` maps each leaf path to the hook's `aux`.
Matmuls between two activations (attention scores and the weighted sum of values) are left alone, as in
LLM.int8() and SmoothQuant, which quantize the linear layers.

Working on the jaxpr rather than on the module source is what lets it see every matmul however it is
written (`@`, einsum, dot): an interception of named functions misses the ones spelled otherwise.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.extend import core as jcore

from lab.quant.tree import path_str


def _read(env, v):
    return v.val if isinstance(v, jcore.Literal) else env[v]


def _eval(jaxpr, consts, args, origins, hook, seen):
    """Evaluate `jaxpr`; `origins[i]` is (leaf path, permutation) when argument i is a view of a leaf."""
    env, origin = {}, {}
    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x, o in zip(jaxpr.invars, args, origins):
        env[v] = x
        if o is not None:
            origin[v] = o
    for eqn in jaxpr.eqns:
        vals = [_read(env, v) for v in eqn.invars]
        orig = [origin.get(v) if not isinstance(v, jcore.Literal) else None for v in eqn.invars]
        name = eqn.primitive.name
        if name in ("pjit", "jit"):
            inner = eqn.params["jaxpr"]
            outs = _eval(inner.jaxpr, inner.consts, vals, orig, hook, seen)
        elif name == "transpose" and orig[0] is not None:
            path, perm = orig[0]
            outs = [eqn.primitive.bind(*vals, **eqn.params)]
            origin[eqn.outvars[0]] = (path, tuple(perm[p] for p in eqn.params["permutation"]))
        elif name == "convert_element_type" and orig[0] is not None:
            outs = [eqn.primitive.bind(*vals, **eqn.params)]
            origin[eqn.outvars[0]] = orig[0]
        elif name == "dot_general" and (orig[0] is not None) != (orig[1] is not None):
            outs = [_linear(eqn, vals, orig, hook, seen)]
        else:
            outs = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [_read(env, v) for v in jaxpr.outvars]


def _linear(eqn, vals, orig, hook, seen):
    """A linear layer: the activation through `hook` (as (N, K)), then the dot_general as written."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
        raise ValueError("a parameter used in a batched dot_general is not a linear layer this code knows")
    w_side = 0 if orig[0] is not None else 1
    x_side = 1 - w_side
    path, perm = orig[w_side]
    w_contract, x_contract = (lc, rc) if w_side == 0 else (rc, lc)
    pairs = sorted(zip((perm[a] for a in w_contract), x_contract))  # by the leaf's own axis order
    x = vals[x_side]
    x_axes = [a for _, a in pairs]
    rest = [i for i in range(x.ndim) if i not in x_axes]
    moved = jax.numpy.transpose(x, (*rest, *x_axes))
    x_NK = moved.reshape(-1, int(np.prod([x.shape[a] for a in x_axes])))
    new, aux = hook(path, x_NK)
    back = jax.numpy.transpose(new.reshape(moved.shape).astype(x.dtype), np.argsort((*rest, *x_axes)))
    key = path if path not in seen else f"{path}#{sum(k.split('#')[0] == path for k in seen)}"
    seen[key] = aux
    args = list(vals)
    args[x_side] = back
    return eqn.primitive.bind(*args, **eqn.params)


def intercept(fn, hook, params, *args):
    """(fn(params, *args) with every linear layer's input through `hook`, {leaf path: hook's aux})."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    flat = [x for _, x in leaves]
    n = len(flat)

    def flat_fn(*xs):
        return fn(jax.tree_util.tree_unflatten(treedef, xs[:n]), *xs[n:])

    closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*flat, *args)
    origins = [(path_str(p), tuple(range(np.ndim(x)))) for p, x in leaves] + [None] * len(args)
    seen: dict = {}
    outs = _eval(closed.jaxpr, closed.consts, [*flat, *args], origins, hook, seen)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs), seen


def identity_hook(name, x_NK):
    """Leaves activations as they are and records nothing but the layer (to list the linear layers)."""
    return x_NK, x_NK.shape[-1]
