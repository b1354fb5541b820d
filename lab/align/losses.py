"""The pure math of preference learning and PPO: arrays in, arrays out (jax.numpy only, nothing from lab).

    gae(rewards_BT, values_BT, mask_BT, gamma, lam)        -> (advantages_BT, returns_BT)
    ppo_policy_loss(logp_BT, old_logp_BT, adv_BT, mask_BT, clip)          -> (loss, clip fraction)
    ppo_value_loss(values_BT, old_values_BT, returns_BT, mask_BT, clip)   -> loss
    kl_k1(logp, ref_logp), kl_k3(logp, ref_logp)            per-token estimators of KL(pi || ref)
    pairwise_loss(r_chosen_B, r_rejected_B)                 the Bradley-Terry reward-model loss
    dpo_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta)

Sources: GAE, Schulman et al. 2016 ("High-dimensional continuous control using generalized advantage
estimation"); the clipped surrogate and clipped value loss, Schulman et al. 2017 and the PPO
implementation details of Huang et al. 2022 (value clipping as in openai/baselines ppo2); the k1/k3
estimators, Schulman 2020 ("Approximating KL divergence"); the reward model, Ouyang et al. 2022 and
Stiennon et al. 2020; DPO, Rafailov et al. 2023. Every mask is 1 on the tokens that count (the response).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards_BT, values_BT, mask_BT, gamma: float, lam: float):
    """Generalized advantage estimation over the masked positions of each row, (advantages, returns).

    values_BT[t] is V(s_t), the value before the token at t; the episode ends after the last masked
    position (the value after it is 0). delta_t = r_t + gamma V(s_{t+1}) - V(s_t) and
    A_t = delta_t + gamma lam A_{t+1}, computed backwards; returns_t = A_t + V(s_t). Unmasked positions
    get 0 and do not connect masked ones (a masked span is one contiguous episode).
    """
    m = mask_BT.astype(rewards_BT.dtype)
    v = values_BT * m
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1) * jnp.concatenate(
        [m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1
    )
    delta = (rewards_BT + gamma * next_v - v) * m

    def back(carry, x):  # carry: A_{t+1} (B,)
        d_B, m_B = x
        a = d_B + gamma * lam * carry * m_B
        a = a * m_B
        return a, a

    _, adv_TB = jax.lax.scan(back, jnp.zeros_like(delta[:, 0]), (delta.T, m.T), reverse=True)
    adv = adv_TB.T
    return adv, (adv + v) * m


def _masked_mean(x, mask):
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def ppo_policy_loss(logp_BT, old_logp_BT, adv_BT, mask_BT, clip: float):
    """PPO's clipped surrogate, to minimize: mean over masked tokens of
    -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A) with ratio = exp(logp - old_logp);
    and the fraction of masked tokens where the clipped term was the smaller (the clip was active)."""
    ratio = jnp.exp(logp_BT - old_logp_BT)
    unclipped = ratio * adv_BT
    clipped = jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * adv_BT
    loss = _masked_mean(-jnp.minimum(unclipped, clipped), mask_BT)
    frac = _masked_mean((clipped < unclipped).astype(logp_BT.dtype), mask_BT)
    return loss, frac


def ppo_value_loss(values_BT, old_values_BT, returns_BT, mask_BT, clip: float):
    """The clipped value loss, 0.5 * mean over masked tokens of max((V - R)^2, (V_clipped - R)^2), with
    V_clipped = old_V + clip(V - old_V, -clip, clip): the value may not move further than `clip` from the
    value the rollout saw, unless that makes its error smaller."""
    v_clipped = old_values_BT + jnp.clip(values_BT - old_values_BT, -clip, clip)
    err = jnp.maximum((values_BT - returns_BT) ** 2, (v_clipped - returns_BT) ** 2)
    return 0.5 * _masked_mean(err, mask_BT)


def kl_k1(logp, ref_logp):
    """The plain estimator of KL(pi || ref) per sampled token: log pi - log ref (unbiased, can be < 0)."""
    return logp - ref_logp


def kl_k3(logp, ref_logp):
    """Schulman's k3 per sampled token: (r - 1) - log r with r = ref / pi (unbiased, always >= 0)."""
    log_r = ref_logp - logp
    return jnp.expm1(log_r) - log_r


def pairwise_loss(r_chosen_B, r_rejected_B):
    """The reward model's loss: mean -log sigmoid(r_chosen - r_rejected) (Bradley-Terry)."""
    return jnp.mean(-jax.nn.log_sigmoid(r_chosen_B - r_rejected_B))


def dpo_loss(pi_chosen_B, pi_rejected_B, ref_chosen_B, ref_rejected_B, beta: float):
    """DPO's loss: mean -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) over sequence
    log-probabilities; ln 2 when the policy is the reference. Also the implicit rewards
    beta * (pi - ref) of the chosen and rejected responses: (loss, r_chosen_B, r_rejected_B)."""
    r_c = beta * (pi_chosen_B - ref_chosen_B)
    r_r = beta * (pi_rejected_B - ref_rejected_B)
    return jnp.mean(-jax.nn.log_sigmoid(r_c - r_r)), r_c, r_r


def sequence_logp(logits_BTV, tokens_BT, mask_BT, temperature: float = 1.0, banned=()):
    """(per-token log-probabilities (B, T) of `tokens_BT` under softmax(logits / temperature), with the
    `banned` token ids excluded from the distribution; 0 where mask is 0). logits_BTV[:, t] predicts
    tokens_BT[:, t]."""
    z = logits_BTV / temperature
    if banned:
        z = z.at[..., jnp.asarray(banned)].set(-1e30)  # finite: no inf - inf in gradients
    lp = jax.nn.log_softmax(z, axis=-1)
    tok = jnp.take_along_axis(lp, tokens_BT[..., None], axis=-1)[..., 0]
    return jnp.where(mask_BT, tok, 0.0)
