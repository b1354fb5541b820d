"""Mixture of experts: a learned router sends each token to k of E expert MLPs (Shazeer et al. 2017,
"Outrageously large neural networks"; Lepikhin et al. 2020, GShard; Fedus et al. 2021, Switch Transformer).

Shapes: N tokens (a batch flattened, B * T), D model width, F expert hidden width, E experts, K choices per
token (top-k), C slots per expert (the capacity).

    logits_NE = router_logits(x_ND, w_DE)                       # float32 whatever the compute dtype
    probs_NE, experts_NK, gates_NK = top_k_route(logits_NE, k)
    # capacity: C = capacity(N, E, k, factor) slots per expert; choices past them are dropped (GShard)
    slot_NK, kept_NK = capacity_slots(experts_NK, E, C)
    y_ND = capacity_combine(x_ND, slot_NK, kept_NK, gates_NK, expert_fn, E, C)
    # dropless: every choice is computed (tokens sorted by expert, grouped matmuls)
    y_ND = dropless_combine(x_ND, experts_NK, gates_NK, expert_weights, act, E)

A dropped choice contributes nothing, so its token rides the residual connection unchanged (Switch, sec. 2.2).

Auxiliary losses:
    balance_loss  Switch's load-balancing loss E * sum_i f_i P_i (f_i: the fraction of routing choices that
                  went to expert i, P_i: the mean router probability of expert i, both over the whole batch);
                  it is 1 at uniform routing, and E * sum_i f_i^2 >= 1 whenever P = f (Cauchy-Schwarz)
    z_loss        ST-MoE's router z-loss (Zoph et al. 2022): the mean over tokens of logsumexp(logits)^2,
                  which keeps router logits small (round-off in the softmax grows with their size)
The caller scales them (Switch: 1e-2; ST-MoE: 1e-3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def router_logits(x_ND: jnp.ndarray, w_DE: jnp.ndarray) -> jnp.ndarray:
    """(N, E) router logits in float32 (Switch, sec. 2.4: the router in float32 even under bfloat16)."""
    return jnp.matmul(x_ND.astype(jnp.float32), w_DE.astype(jnp.float32))


def top_k_route(logits_NE: jnp.ndarray, k: int):
    """(probs (N, E), experts (N, K) int32, gates (N, K) float32).

    probs is the softmax over experts; experts are the k most probable, best first. Top-1's gate is the
    chosen expert's probability itself (Switch), so the router learns through it; top-k > 1 renormalizes the
    chosen probabilities to sum to 1 (GShard's top-2)."""
    probs_NE = jax.nn.softmax(logits_NE.astype(jnp.float32), axis=-1)
    top_NK, experts_NK = jax.lax.top_k(probs_NE, k)
    gates_NK = top_NK if k == 1 else top_NK / jnp.sum(top_NK, axis=-1, keepdims=True)
    return probs_NE, experts_NK.astype(jnp.int32), gates_NK


def capacity(n_tokens: int, n_experts: int, k: int, factor: float) -> int:
    """Slots per expert: ceil(factor * k * N / E), at least 1 and at most N (a token's k choices are k
    different experts, so no expert can receive more than N). factor = 1 is exactly enough for perfectly
    balanced routing; all N tokens sent to one expert keep min(C, N) of them."""
    want = factor * k * n_tokens / n_experts
    return int(min(n_tokens, max(1, math.ceil(want - 1e-9 * max(1.0, want)))))


def capacity_slots(experts_NK: jnp.ndarray, n_experts: int, cap: int):
    """(slot (N, K) int32, kept (N, K) bool): where each routing choice goes in the flattened (E * C) expert
    buffer, and whether it fit. Slots are handed out first to every token's first choice, in token order, then
    to second choices (GShard), so a token's best expert has priority over others' second choices. A choice
    past its expert's C slots is dropped: its slot is E * C, one past the buffer."""
    n, k = experts_NK.shape
    onehot_KNE = jax.nn.one_hot(experts_NK.T, n_experts, dtype=jnp.int32)  # choice-major priority
    flat = onehot_KNE.reshape(k * n, n_experts)
    position = jnp.sum((jnp.cumsum(flat, axis=0) - 1) * flat, axis=-1)  # (K * N,) index within its expert
    position_NK = position.reshape(k, n).T
    kept_NK = position_NK < cap
    slot_NK = jnp.where(kept_NK, experts_NK * cap + position_NK, n_experts * cap)
    return slot_NK.astype(jnp.int32), kept_NK


def capacity_combine(
    x_ND: jnp.ndarray,
    slot_NK: jnp.ndarray,
    kept_NK: jnp.ndarray,
    gates_NK: jnp.ndarray,
    expert_fn: Callable,
    n_experts: int,
    cap: int,
) -> jnp.ndarray:
    """(N, D): sum over a token's kept choices of gate * expert(x), 0 for dropped ones.

    Tokens are scattered into an (E, C, D) buffer (an overflow row collects the dropped ones and is thrown
    away), `expert_fn` maps (E, C, D) -> (E, C, D) (each expert on its own slots; empty slots hold zeros and
    are never read back), and each choice gathers its slot's output. Index scatter and gather, not GShard's
    one-hot (N, E, C) einsum, whose cost grows with N * E * C."""
    n, k = slot_NK.shape
    d = x_ND.shape[-1]
    rows = jnp.repeat(jnp.arange(n), k)  # token of each (token, choice), token-major like slot_NK.reshape(-1)
    buf = jnp.zeros((n_experts * cap + 1, d), x_ND.dtype).at[slot_NK.reshape(-1)].set(x_ND[rows])
    out_ECD = expert_fn(buf[:-1].reshape(n_experts, cap, d))
    out = jnp.concatenate([out_ECD.reshape(n_experts * cap, d), jnp.zeros((1, d), out_ECD.dtype)])
    w_NK = jnp.where(kept_NK, gates_NK, 0.0).astype(out.dtype)
    return jnp.einsum("nk,nkd->nd", w_NK, out[slot_NK])


def expert_mlp(x_ECD, w1_EDF, w2_EFD, act: Callable, w3_EDF=None, b1_EF=None, b2_ED=None, b3_EF=None):
    """(E, C, D): each expert's MLP on its own tokens, act(x W1 [+ b1]) W2 [+ b2]; gated (w3 given):
    act(x W1 + b1, x W3 + b3) W2 + b2, as lab.model.layers.MLP computes one dense MLP."""
    hid = jnp.einsum("ecd,edf->ecf", x_ECD, w1_EDF)
    if b1_EF is not None:
        hid = hid + b1_EF[:, None, :]
    if w3_EDF is not None:
        up = jnp.einsum("ecd,edf->ecf", x_ECD, w3_EDF)
        if b3_EF is not None:
            up = up + b3_EF[:, None, :]
        hid = act(hid, up)
    else:
        hid = act(hid)
    y = jnp.einsum("ecf,efd->ecd", hid, w2_EFD)
    return y if b2_ED is None else y + b2_ED[:, None, :]


def dropless_combine(
    x_ND,
    experts_NK,
    gates_NK,
    act: Callable,
    n_experts: int,
    w1_EDF,
    w2_EFD,
    w3_EDF=None,
    b1_EF=None,
    b2_ED=None,
    b3_EF=None,
):
    """(N, D): every routing choice computed, none dropped (MegaBlocks' idea, Gale et al. 2022): the N * K
    choices are sorted by expert and each expert's contiguous group goes through its weights with
    `jax.lax.ragged_dot` (grouped matmuls); outputs are scattered back to their tokens, weighted by gate.
    On CPU (JAX 0.10) ragged_dot lowers to a masked dense product over all E groups: exact, but E times
    the expert FLOPs of the routed tokens."""
    n, k = experts_NK.shape
    flat_e = experts_NK.reshape(-1)
    order = jnp.argsort(flat_e, stable=True)
    token = order // k  # the token of each sorted choice
    sizes = jnp.bincount(flat_e, length=n_experts).astype(jnp.int32)
    xs = x_ND[token]
    hid = jax.lax.ragged_dot(xs, w1_EDF, sizes)
    if b1_EF is not None:
        hid = hid + b1_EF[flat_e[order]]
    if w3_EDF is not None:
        up = jax.lax.ragged_dot(xs, w3_EDF, sizes)
        if b3_EF is not None:
            up = up + b3_EF[flat_e[order]]
        hid = act(hid, up)
    else:
        hid = act(hid)
    y = jax.lax.ragged_dot(hid, w2_EFD, sizes)
    if b2_ED is not None:
        y = y + b2_ED[flat_e[order]]
    g = gates_NK.reshape(-1)[order].astype(y.dtype)
    return jnp.zeros((n, x_ND.shape[-1]), y.dtype).at[token].add(g[:, None] * y)


def expert_fractions(experts_NK: jnp.ndarray, n_experts: int, kept_NK=None) -> jnp.ndarray:
    """(E,) the fraction of all N * K routing choices that chose each expert (summing to 1); with `kept`,
    the fraction of them each expert actually computed (summing to 1 - the dropped fraction)."""
    onehot = jax.nn.one_hot(experts_NK, n_experts, dtype=jnp.float32)  # (N, K, E)
    if kept_NK is not None:
        onehot = onehot * kept_NK[..., None].astype(jnp.float32)
    return jnp.mean(jnp.sum(onehot, axis=1), axis=0) / experts_NK.shape[1]


def balance_loss(probs_NE: jnp.ndarray, experts_NK: jnp.ndarray) -> jnp.ndarray:
    """Switch's load-balancing loss E * sum_i f_i P_i over the whole batch (eq. 4; top-k: f counts all k
    choices, divided by k so that it sums to 1). Gradients flow through P only; f is a count."""
    n_experts = probs_NE.shape[-1]
    f_E = expert_fractions(experts_NK, n_experts)
    p_E = jnp.mean(probs_NE.astype(jnp.float32), axis=0)
    return n_experts * jnp.sum(f_E * p_E)


def z_loss(logits_NE: jnp.ndarray) -> jnp.ndarray:
    """ST-MoE's router z-loss: mean over tokens of logsumexp(logits)^2 (Zoph et al. 2022, eq. 5)."""
    return jnp.mean(jax.nn.logsumexp(logits_NE.astype(jnp.float32), axis=-1) ** 2)


def routing_entropy(probs_NE: jnp.ndarray) -> jnp.ndarray:
    """Mean over tokens of the entropy of the router's distribution over experts, in nats (log E: no
    preference; 0: certain)."""
    p = probs_NE.astype(jnp.float32)
    return jnp.mean(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1))
