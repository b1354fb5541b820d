"""Tiny RLHF for the one training driver (lab.train.train_sweep): a reward model, PPO and DPO on a causal LM
whose VALUE token's output logit is its scalar head.

The head: the model's logit for the token VALUE (lab.align.data; never text, never sampled) is a linear
function of the final hidden state (its unembedding row), so the same parameter tree is a language model
with a value head (PPO's policy), or with a reward head read at the last position (the reward model),
with no new module: every training here goes through `train_sweep` with its checkpoints and resume.

    reward_score(cfg, params, tokens_BT)                       (B,) the reward head at the last position
    generate(cfg, params, prompts_BP, n_new, temperature, key) (B, P + n_new) sampled continuations
    PairsTask        preference pairs as a task (reward model: loss `reward_model_loss`; DPO: `dpo_loss_fn`)
    PPOTask          an on-policy task (lab.train.step's on-policy path): each step samples responses from the
                     current policy under jit, scores them with the frozen reward model, takes the KL penalty
                     to the frozen reference, runs GAE, then `epochs` x `minibatches` clipped PPO updates

Per-member models (each seed's reference and reward model) are stacked along a leading axis in the task's
data, and a member picks its own with its first extra hyperparameter (its index): `Member.extra[0]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lab.align import losses
from lab.align.data import BANG, PAD, TARGET_LETTERS, VALUE, encode, gold_reward
from lab.config import check
from lab.errors import DataError
from lab.model import ModelConfig, apply

BANNED = (PAD, VALUE)  # never sampled, and outside the policy's distribution


def reward_score(cfg: ModelConfig, params, tokens_BT):
    """(B,) the reward head: the VALUE logit at the last position of each sequence."""
    return apply(cfg, params, tokens_BT)[:, -1, VALUE]


def own(tree, extra):
    """The entry of a member-stacked pytree that this member's index (extra[0]) selects."""
    i = extra[0].astype(jnp.int32)
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def generate(cfg: ModelConfig, params, prompts_BP, n_new: int, temperature: float, key):
    """Sample `n_new` tokens after each prompt at `temperature` (BANNED excluded), a fixed-shape loop of
    full forward passes (sequences here are a few dozen tokens): (B, P + n_new) int32."""
    B, P = prompts_BP.shape
    buf = jnp.concatenate([prompts_BP, jnp.full((B, n_new), PAD, jnp.int32)], axis=1)

    def body(i, buf):
        logits = apply(cfg, params, buf)[:, P - 1 + i] / temperature  # (B, V)
        logits = logits.at[:, jnp.asarray(BANNED)].set(-1e30)
        tok = jax.random.categorical(jax.random.fold_in(key, i), logits).astype(jnp.int32)
        return buf.at[:, P + i].set(tok)

    return jax.lax.fori_loop(0, n_new, body, buf)


def chat_prompts(key, batch_size: int):
    """(B, 6) prompts "C:xyz>" with random target-domain topic letters."""
    letters = jnp.asarray(encode(TARGET_LETTERS), jnp.int32)
    topic = letters[jax.random.randint(key, (batch_size, 3), 0, len(TARGET_LETTERS))]
    c, colon, gt = encode("C:>")
    head = jnp.broadcast_to(jnp.asarray([c, colon], jnp.int32), (batch_size, 2))
    return jnp.concatenate([head, topic, jnp.full((batch_size, 1), gt, jnp.int32)], axis=1)


def response_logp(cfg: ModelConfig, params, tokens_BT, prompt_len: int, temperature: float):
    """(per-token log-probabilities (B, T-1) of the response tokens (0 elsewhere), the response mask
    (B, T-1), the logits (B, T-1, V)); position t scores token t + 1."""
    logits = apply(cfg, params, tokens_BT[:, :-1])
    t = jnp.arange(tokens_BT.shape[1] - 1)
    mask = jnp.broadcast_to(t >= prompt_len - 1, logits.shape[:2])
    return losses.sequence_logp(logits, tokens_BT[:, 1:], mask, temperature, BANNED), mask, logits


# --- preference pairs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairsTask:
    """Preference pairs (chosen, rejected) of equal-length sequences with the same prompt length.

    data: "<split>_chosen", "<split>_rejected" (N, seq_len) int32 for split in train/val; with DPO also
    "<split>_ref_chosen", "<split>_ref_rejected" (N, members) float32: each member's reference
    log-probability of the response. A batch has "targets" (B, 1) ones and "mask" (B, 1) True, so the
    driver's val_accuracy of a loss whose logits are [score rejected, score chosen] is pair accuracy.
    """

    seq_len: int
    vocab_size: int
    prompt_len: int
    with_ref: bool = False
    kind = "preference_pairs"

    def sample(self, data, split, key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, data[f"{split}_chosen"].shape[0])
        batch = {
            "chosen": jnp.asarray(data[f"{split}_chosen"])[rows],
            "rejected": jnp.asarray(data[f"{split}_rejected"])[rows],
            "targets": jnp.ones((batch_size, 1), jnp.int32),
            "mask": jnp.ones((batch_size, 1), bool),
        }
        if self.with_ref:
            batch["ref_chosen"] = jnp.asarray(data[f"{split}_ref_chosen"])[rows]
            batch["ref_rejected"] = jnp.asarray(data[f"{split}_ref_rejected"])[rows]
        return batch

    def check_data(self, data) -> None:
        for split in ("train", "val"):
            for side in ("chosen", "rejected"):
                x = data.get(f"{split}_{side}")
                if x is None or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != self.seq_len:
                    raise DataError(
                        f"preference data {split}_{side} must be a non-empty (N, {self.seq_len}) array, got "
                        f"{None if x is None else x.shape}"
                    )


def reward_model_loss(params, cfg, batch, extra, forward=None):
    """The pairwise (Bradley-Terry) loss of the reward head; logits (B, 1, 2) = [r rejected, r chosen]."""
    r_c = reward_score(cfg, params, batch["chosen"])
    r_r = reward_score(cfg, params, batch["rejected"])
    return losses.pairwise_loss(r_c, r_r), jnp.stack([r_r, r_c], -1)[:, None, :]


def _seq_logp(cfg, params, tokens_BT, prompt_len):
    lp, _, _ = response_logp(cfg, params, tokens_BT, prompt_len, 1.0)
    return jnp.sum(lp, axis=-1)


def dpo_loss_fn(params, cfg, batch, extra, forward=None):
    """DPO's loss (beta = extra[1]) against the member's reference log-probabilities in the batch;
    logits (B, 1, 2) = [implicit reward rejected, chosen]. The prompt length is the fixed chat prompt's."""
    from lab.align.data import CHAT_PROMPT_LEN

    i = extra[0].astype(jnp.int32)
    pi_c = _seq_logp(cfg, params, batch["chosen"], CHAT_PROMPT_LEN)
    pi_r = _seq_logp(cfg, params, batch["rejected"], CHAT_PROMPT_LEN)
    loss, r_c, r_r = losses.dpo_loss(
        pi_c, pi_r, batch["ref_chosen"][:, i], batch["ref_rejected"][:, i], extra[1]
    )
    return loss, jnp.stack([r_r, r_c], -1)[:, None, :]


# --- PPO --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PPOTask:
    """PPO on chat prompts against a frozen reward model, as an on-policy task of the one driver.

    data: "ref" and "rm" (parameter trees stacked over members: each member's frozen reference policy and
    reward model) and "norm" (members, 2): the mean and sd of the reward model's score on the member's
    initial-policy samples, so the reward the policy sees is normalised to mean 0, sd 1 at the start.
    Per token: reward -kl_coef * (log pi - log ref), plus the normalised reward at the last token; GAE
    (gamma, lam) over the response; advantages whitened over the batch; then clipped policy and value
    losses (value weight vf_coef). Log-probabilities are taken at the sampling temperature.
    """

    seq_len: int  # prompt + response
    vocab_size: int
    prompt_len: int
    temperature: float = 1.0
    kl_coef: float = 0.05
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    epochs: int = 4
    minibatches: int = 2
    gold_peak: int = 2
    kind = "ppo"
    on_policy = True

    def __post_init__(self):
        check(self.kl_coef >= 0, f"ppo kl_coef must be >= 0, got {self.kl_coef}")
        check(self.clip > 0, f"ppo clip must be > 0, got {self.clip}")
        check(self.value_clip > 0, f"ppo value_clip must be > 0, got {self.value_clip}")
        check(self.epochs >= 1, f"ppo epochs must be >= 1, got {self.epochs}")
        check(self.minibatches >= 1, f"ppo minibatches must be >= 1, got {self.minibatches}")
        check(self.temperature > 0, f"ppo temperature must be > 0, got {self.temperature}")
        check(0 <= self.lam <= 1 and 0 < self.gamma <= 1, "ppo lam must be in [0, 1] and gamma in (0, 1]")

    def check_data(self, data) -> None:
        if not all(k in data for k in ("ref", "rm", "norm")):
            raise DataError("a PPO task needs data 'ref', 'rm' (stacked parameters) and 'norm' (members, 2)")

    def sample(self, data, split, key, batch_size):  # not used: the batch depends on the parameters
        raise NotImplementedError("PPOTask makes its batches with rollout()")

    def rollout(self, params, cfg, data, split, key, batch_size, extra):
        """(batch, stats): responses sampled from `params` and everything PPO's loss needs, all without
        gradient. stats: proxy_reward (normalised), gold_reward, kl_k1 and kl_k3 (per sequence, nats),
        bang_count (the rewarded feature: "!" per response), value_mean."""
        params = jax.lax.stop_gradient(params)
        kp, ks = jax.random.split(jax.random.fold_in(key, {"train": 0, "val": 1}.get(split, 2)))
        n_new = self.seq_len - self.prompt_len
        tokens = generate(cfg, params, chat_prompts(kp, batch_size), n_new, self.temperature, ks)
        logp, mask, logits = response_logp(cfg, params, tokens, self.prompt_len, self.temperature)
        ref_logp, _, _ = response_logp(
            cfg, own(data["ref"], extra), tokens, self.prompt_len, self.temperature
        )
        values = jnp.where(mask, logits[..., VALUE], 0.0)
        norm = own(data["norm"], extra)
        proxy = (reward_score(cfg, own(data["rm"], extra), tokens) - norm[0]) / norm[1]
        count = jnp.sum(tokens[:, self.prompt_len :] == BANG, axis=-1).astype(jnp.float32)
        k1 = losses.kl_k1(logp, ref_logp) * mask
        k3 = losses.kl_k3(logp, ref_logp) * mask
        last = jnp.arange(mask.shape[1]) == mask.shape[1] - 1
        rewards = -self.kl_coef * k1 + jnp.where(last[None, :], proxy[:, None], 0.0)
        adv, returns = losses.gae(rewards, values, mask, self.gamma, self.lam)
        m = mask.astype(jnp.float32)
        mean = jnp.sum(adv * m) / jnp.sum(m)
        sd = jnp.sqrt(jnp.sum(((adv - mean) * m) ** 2) / jnp.sum(m))
        adv = (adv - mean) / (sd + 1e-8) * m
        batch = {
            "inputs": tokens[:, :-1],
            "targets": tokens[:, 1:],
            "mask": mask,
            "old_logp": logp,
            "old_values": values,
            "advantages": adv,
            "returns": returns,
        }
        stats = {
            "proxy_reward": jnp.mean(proxy),
            "gold_reward": jnp.mean(gold_reward(count, self.gold_peak)),
            "kl_k1": jnp.mean(jnp.sum(k1, -1)),
            "kl_k3": jnp.mean(jnp.sum(k3, -1)),
            "bang_count": jnp.mean(count),
            "value_mean": jnp.sum(values * m) / jnp.sum(m),
        }
        return jax.tree_util.tree_map(jax.lax.stop_gradient, batch), stats

    def loss(self, params, cfg, batch, extra, forward=None):
        """Clipped policy loss + vf_coef * clipped value loss on a (mini)batch of a rollout."""
        logits = apply(cfg, params, batch["inputs"])
        logp = losses.sequence_logp(logits, batch["targets"], batch["mask"], self.temperature, BANNED)
        pg, _ = losses.ppo_policy_loss(logp, batch["old_logp"], batch["advantages"], batch["mask"], self.clip)
        vf = losses.ppo_value_loss(
            logits[..., VALUE], batch["old_values"], batch["returns"], batch["mask"], self.value_clip
        )
        return pg + self.vf_coef * vf, logits


def stack_params(trees) -> dict:
    """Parameter trees stacked along a new leading (member) axis, as NumPy arrays."""
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)
