"""Tests for lab.data.objectives and the tasks built on it (lab.data.tasks.MaskedWindows, PrefixWindows):
masked-LM corruption rates within 3 sigma of 15% and 80/10/10, the prefix LM's loss mask and per-example
prefix lengths against loops, a masked position's logits independent of its original token (its target),
and the prefix-LM model exactly bidirectional inside the prefix and causal after it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab.data import objectives as obj
from lab.data.tasks import MaskedWindows, PrefixWindows
from lab.errors import ConfigError
from lab.model import ModelConfig, apply, init

MASK_ID, N_RANDOM = 50, 50


def _corrupt(shape=(64, 512), seed=0, **kw):
    tokens = jax.random.randint(jax.random.PRNGKey(seed + 100), shape, 0, N_RANDOM)
    inputs, selected, kind = obj.mlm_corrupt(jax.random.PRNGKey(seed), tokens, MASK_ID, N_RANDOM, **kw)
    return np.asarray(tokens), np.asarray(inputs), np.asarray(selected), np.asarray(kind)


def _within_3_sigma(count, n, p):
    sigma = np.sqrt(n * p * (1 - p))
    return abs(count - n * p) < 3 * sigma, (count, n * p, sigma)


def test_masking_rates_are_15_percent_and_80_10_10_within_3_sigma():
    tokens, inputs, selected, kind = _corrupt()
    n = selected.size
    ok, why = _within_3_sigma(selected.sum(), n, 0.15)
    assert ok, why
    s = int(selected.sum())
    for k, p in ((obj.MASKED, 0.8), (obj.RANDOM, 0.1), (obj.UNCHANGED, 0.1)):
        ok, why = _within_3_sigma(int((kind == k).sum()), s, p)
        assert ok, (k, why)
    # each kind does what it says to the input
    assert ((kind != obj.KEPT) == selected).all()
    assert (inputs[kind == obj.MASKED] == MASK_ID).all()
    assert (
        inputs[(kind == obj.KEPT) | (kind == obj.UNCHANGED)]
        == tokens[(kind == obj.KEPT) | (kind == obj.UNCHANGED)]
    ).all()
    rnd = inputs[kind == obj.RANDOM]
    assert (
        rnd.min() >= 0 and rnd.max() < N_RANDOM and len(np.unique(rnd)) == N_RANDOM
    )  # uniform over text ids


def test_other_rates_are_followed_too():
    _, _, selected, kind = _corrupt(rate=0.4, mask_frac=0.5, random_frac=0.3)
    ok, why = _within_3_sigma(selected.sum(), selected.size, 0.4)
    assert ok, why
    s = int(selected.sum())
    for k, p in ((obj.MASKED, 0.5), (obj.RANDOM, 0.3), (obj.UNCHANGED, 0.2)):
        ok, why = _within_3_sigma(int((kind == k).sum()), s, p)
        assert ok, (k, why)


def test_a_masked_positions_logits_do_not_depend_on_its_own_target():
    """Under MLM the target of a masked position is its original token. Replacing the original tokens at the
    masked positions (same key: same selection and corruption) leaves every input, hence every logit,
    bitwise unchanged, while the targets there differ: nothing flows from a position's own target but the
    loss. Replacing a kept position's token changes the logits (so the comparison can fail)."""
    t = 16
    cfg = ModelConfig(
        vocab_size=N_RANDOM + 1, max_len=t, n_layers=1, d_model=16, n_heads=2, mask="bidirectional"
    )
    params = jax.jit(init, static_argnums=0)(cfg, jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (8, t), 0, N_RANDOM)
    corrupt = jax.jit(lambda x: obj.mlm_corrupt(key, x, MASK_ID, N_RANDOM))  # one program for all three
    inputs, _, kind = corrupt(tokens)
    masked = kind == obj.MASKED
    assert masked.any()
    other = jnp.where(masked, (tokens + 7) % N_RANDOM, tokens)
    inputs2, _, kind2 = corrupt(other)
    assert (np.asarray(kind2) == np.asarray(kind)).all()
    assert (np.asarray(other)[np.asarray(masked)] != np.asarray(tokens)[np.asarray(masked)]).all()
    f = jax.jit(lambda x: apply(cfg, params, x))
    np.testing.assert_array_equal(np.asarray(f(inputs2)), np.asarray(f(inputs)))
    # the jacobian of the logits w.r.t. the token embeddings at masked positions through the original token:
    # the model's input there is the mask token whatever the original, so it is zero; at a kept position not
    kept = np.argwhere(np.asarray(kind) == obj.KEPT)[0]
    changed = jnp.asarray(tokens).at[tuple(kept)].set((tokens[tuple(kept)] + 1) % N_RANDOM)
    inputs3, _, _ = corrupt(changed)
    assert np.abs(np.asarray(f(inputs3)) - np.asarray(f(inputs))).max() > 0


def test_masked_windows_batch_targets_are_the_window_at_selected_positions():
    stream = np.arange(1000) % 40
    task = MaskedWindows(32, 41)
    b = task.sample({"train": jnp.asarray(stream)}, "train", jax.random.PRNGKey(0), 16)
    inputs, targets, mask = (np.asarray(b[k]) for k in ("inputs", "targets", "mask"))
    assert task.mask_id == 40 and inputs.shape == targets.shape == mask.shape == (16, 32)
    # the targets are consecutive windows of the stream; unselected inputs equal them
    assert ((np.diff(targets, axis=1) % 40) == 1).all()
    assert (inputs[~mask] == targets[~mask]).all()
    assert (inputs == 40).any() and (inputs[inputs == 40] != targets[inputs == 40]).all()


def test_prefix_loss_mask_and_lengths_against_loops():
    t, lo, hi = 12, 1, 12
    p = np.asarray(obj.sample_prefix_len(jax.random.PRNGKey(0), 4000, lo, hi))
    assert p.min() == lo and p.max() == hi  # both ends drawn
    counts = np.bincount(p, minlength=hi + 1)[lo:]
    ok, why = _within_3_sigma(counts[0], p.size, 1 / (hi - lo + 1))
    assert ok, why
    m = np.asarray(obj.prefix_loss_mask(jnp.asarray(p[:50]), t))
    want = np.array([[i >= q - 1 for i in range(t)] for q in p[:50]])
    np.testing.assert_array_equal(m, want)


def test_prefix_windows_batch():
    stream = np.arange(2000) % 60
    task = PrefixWindows(16, 61, min_prefix=3, max_prefix=10)
    b = task.sample({"val": jnp.asarray(stream)}, "val", jax.random.PRNGKey(1), 64)
    p = np.asarray(b["prefix_len"])
    assert p.min() >= 3 and p.max() <= 10
    np.testing.assert_array_equal(np.asarray(b["targets"])[:, :-1], np.asarray(b["inputs"])[:, 1:])
    np.testing.assert_array_equal(np.asarray(b["mask"]), np.arange(16)[None] >= p[:, None] - 1)


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: MaskedWindows(16, 20, mask_rate=0.0), "mask_rate must be in (0, 1), got 0.0"),
        (lambda: MaskedWindows(16, 20, mask_rate=1.0), "mask_rate must be in (0, 1), got 1.0"),
        (
            lambda: MaskedWindows(16, 20, mask_frac=0.95, random_frac=0.1),
            "mask_frac + random_frac must be <= 1",
        ),
        (lambda: PrefixWindows(16, 20, max_prefix=17), "max_prefix (17) must be <= the sequence length (16)"),
        (lambda: PrefixWindows(16, 20, min_prefix=0), "min_prefix must be >= 1, got 0"),
        (
            lambda: PrefixWindows(16, 20, min_prefix=9, max_prefix=5),
            "min_prefix (9) must be <= max_prefix (5)",
        ),
    ],
)
def test_bad_objective_settings_are_one_line_errors(make, needle):
    with pytest.raises(ConfigError) as e:
        make()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_prefix_model_is_bidirectional_inside_the_prefix_and_causal_after():
    """dlogits[i] / dtoken[j] != 0 exactly when j < prefix_len or j <= i: every (i, j) pair checked by
    replacing token j and comparing the logits at i, per example with its own prefix length."""
    t = 8
    cfg = ModelConfig(vocab_size=30, max_len=t, n_layers=1, d_model=16, n_heads=2, mask="prefix")
    params = jax.jit(init, static_argnums=0)(cfg, jax.random.PRNGKey(1))
    prefix = np.array([0, 1, 3, 8])
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (len(prefix), t), 0, 29))
    batch = np.repeat(
        tokens, 1 + t, axis=0
    )  # row 0 of each group unperturbed, row 1 + j with token j changed
    for b in range(len(prefix)):
        for j in range(t):
            batch[b * (1 + t) + 1 + j, j] = (tokens[b, j] + 1) % 29
    pre = np.repeat(prefix, 1 + t)
    lg = np.asarray(jax.jit(lambda x, p: apply(cfg, params, x, p))(jnp.asarray(batch), jnp.asarray(pre)))
    lg = lg.reshape(len(prefix), 1 + t, t, -1)
    for b, p in enumerate(prefix):
        delta = np.abs(lg[b, 1:] - lg[b, :1]).max(-1)  # (j, i)
        want = np.array([[j < p or j <= i for i in range(t)] for j in range(t)])
        np.testing.assert_array_equal(delta > 0, want, err_msg=f"prefix {p}")
