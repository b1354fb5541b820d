"""Pretraining objectives as corruption and loss masks over one window of tokens: masked LM, causal LM and
prefix LM differ only in what the model sees (the attention mask, the corrupted input) and which positions
carry a loss, never in the model (Raffel et al. 2020, T5, section 3.3; Wang et al. 2022).

    inputs, selected = mlm_corrupt(key, tokens_BT, mask_id, n_random)   # BERT's 15% with 80/10/10
    prefix_len_B = sample_prefix_len(key, B, lo, hi)                     # per-example prefix lengths
    loss_mask_BT = prefix_loss_mask(prefix_len_B, T)                     # targets in the suffix

Masked LM (Devlin et al. 2019): each position is selected with probability `rate`; a selected position's
input is the mask token with probability `mask_frac`, a uniformly random token with probability
`random_frac`, and the original token otherwise; the loss is the cross entropy of the original token at the
selected positions only, with bidirectional attention.
"""

import jax
import jax.numpy as jnp

# what happened to each position under mlm_corrupt (the `kind_BT` it returns)
KEPT, MASKED, RANDOM, UNCHANGED = 0, 1, 2, 3  # UNCHANGED: selected, input left as the original


def mlm_corrupt(key, tokens_BT, mask_id: int, n_random: int, rate=0.15, mask_frac=0.8, random_frac=0.1):
    """(inputs (B, T) int32, selected (B, T) bool, kind (B, T) int32) for masked-LM training.

    Each position is selected independently with probability `rate`; of the selected, a fraction
    `mask_frac` become `mask_id`, `random_frac` a token uniform in [0, n_random), and the rest stay as they
    are (`kind`: KEPT for unselected positions, else MASKED, RANDOM or UNCHANGED). The targets are the
    original tokens at the selected positions.
    """
    k_sel, k_kind, k_tok = jax.random.split(key, 3)
    tokens_BT = tokens_BT.astype(jnp.int32)
    selected = jax.random.uniform(k_sel, tokens_BT.shape) < rate
    u = jax.random.uniform(k_kind, tokens_BT.shape)
    how = jnp.where(u < mask_frac, MASKED, jnp.where(u < mask_frac + random_frac, RANDOM, UNCHANGED))
    kind = jnp.where(selected, how, KEPT).astype(jnp.int32)
    random_tok = jax.random.randint(k_tok, tokens_BT.shape, 0, n_random, dtype=jnp.int32)
    inputs = jnp.where(kind == MASKED, mask_id, jnp.where(kind == RANDOM, random_tok, tokens_BT))
    return inputs.astype(jnp.int32), selected, kind


def sample_prefix_len(key, batch: int, lo: int, hi: int):
    """(B,) int32 prefix lengths uniform in [lo, hi] (inclusive), one per example."""
    return jax.random.randint(key, (batch,), lo, hi + 1, dtype=jnp.int32)


def prefix_loss_mask(prefix_len_B, t: int):
    """(B, T) bool: the positions of a prefix LM whose next-token target lies in the suffix.

    Position i predicts token i + 1. With prefix length p, positions 0..p-1 see each other, so position i < p
    - 1 has already seen its target (token i + 1 < p is in the prefix) and carries no loss; position p - 1
    sees only the prefix and predicts the first suffix token; later positions are causal."""
    return jnp.arange(t)[None, :] >= (jnp.asarray(prefix_len_B)[:, None] - 1)
