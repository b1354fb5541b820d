"""Weight surgery on a trained parameter dict: the Q/K/V variants of project 4 applied to weights.

`rewire(params, "swap_qk")` returns parameters that, run with the *intact* config, compute exactly what
the original parameters compute under ``ModelConfig(qkv="swap_qk")`` (a test checks this): queries made
with the key projection and keys with the query projection. `layer` and `head` restrict the surgery to
one block and/or one head, which the config switch cannot express.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lab.model.layers import QKV_ROUTES as _ROUTES  # variant -> (source of q', k', v'); None = zero

VARIANTS = tuple(_ROUTES)
# ROUTES[i] is variant i as a 0/1 matrix: (q', k', v') = ROUTES[i] @ (q, k, v), rows = destination.
ROUTES = np.zeros((len(_ROUTES), 3, 3), np.float32)
for _i, _route in enumerate(_ROUTES.values()):
    for _dst, _src in enumerate(_route):
        if _src is not None:
            ROUTES[_i, _dst, "qkv".index(_src)] = 1.0


def mix(params: dict, route_3x3) -> dict:
    """Every block's (wq, wk, wv) (and biases) replaced by route @ (wq, wk, wv); `route` may be traced.

    With a 0/1 route this is `rewire` for the whole model, written so that the variant can be a traced
    per-member value: a sweep can then train all Q/K/V variants of one shape in one vmapped program.
    The products with 0 and 1 and the sums with zeros are exact, so the result is bit-identical.
    Needs n_kv_heads == n_heads (all three projections the same shape).
    """
    out = dict(params)
    for name in _blocks(params):
        attn = params[name]["attn"]
        new = dict(attn)
        for kind in ("w", "b"):
            if f"{kind}q" not in attn:
                continue
            src = [attn[f"{kind}{c}"] for c in "qkv"]
            if len({x.shape for x in src}) != 1:
                raise ValueError("mixing projections needs n_kv_heads == n_heads")
            for i, c in enumerate("qkv"):
                new[f"{kind}{c}"] = sum(route_3x3[i, j].astype(x.dtype) * x for j, x in enumerate(src))
        out[name] = {**params[name], "attn": new}
    return out


def _blocks(params):
    return sorted((k for k in params if k.startswith("block_")), key=lambda k: int(k.split("_")[1]))


def rewire(params: dict, variant: str, layer: int | None = None, head: int | None = None) -> dict:
    """A copy of `params` with the attention projections of `layer` (all if None), restricted to query
    head `head` (all if None; needs n_kv_heads == n_heads), rewired as `variant`."""
    if variant not in _ROUTES:
        raise ValueError(f"unknown variant {variant!r}; allowed: {', '.join(_ROUTES)}")
    route = _ROUTES[variant]
    out = jax.tree_util.tree_map(lambda x: x, params)  # new containers, same leaves
    blocks = _blocks(params)
    if layer is not None and not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range; the model has {len(blocks)} blocks")
    for name in blocks if layer is None else [blocks[layer]]:
        attn = dict(params[name]["attn"])
        new = dict(attn)
        for dst, src in zip(("q", "k", "v"), route):
            for kind in ("w", "b"):
                key = f"{kind}{dst}"
                if key not in attn:
                    continue
                value = jnp.zeros_like(attn[key]) if src is None else attn[f"{kind}{src}"]
                if value.shape != attn[key].shape:
                    raise ValueError(f"{variant} needs n_kv_heads == n_heads ({key} is {attn[key].shape})")
                if head is None:
                    new[key] = value
                else:
                    axis = 1 if kind == "w" else 0  # w: (D, H, E); b: (H, E)
                    index = [slice(None)] * value.ndim
                    index[axis] = head
                    new[key] = attn[key].at[tuple(index)].set(value[tuple(index)])
        out[name] = {**params[name], "attn": new}
    return out


def ablate_head(params: dict, layer: int, head: int) -> dict:
    """A copy of `params` with query head `head` of block `layer` silenced: its slice of the output
    projection is zeroed, so the head adds nothing to the residual stream. For a sweep's stacked
    parameters, `jax.vmap(lambda p: ablate_head(p, layer, head))(params)`."""
    blocks = _blocks(params)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range; the model has {len(blocks)} blocks")
    blk = params[blocks[layer]]
    wo = blk["attn"]["wo"].at[head].set(0.0)  # (H, E, D)
    return {**params, blocks[layer]: {**blk, "attn": {**blk["attn"], "wo": wo}}}
