"""Training tasks: pure, jittable batch samplers.

A task is a frozen dataclass (hashable, so it can be a static argument of `jax.jit`) with

    sample(data, split, key, batch_size) -> {"inputs": (B, T) int32, "targets": (B, T) int32,
                                             "mask": (B, T) bool}

`data` is a dict of device arrays (the token streams of a text corpus, or nothing for a generated task),
`key` decides the batch. Because the batch is a pure function of (data, key) and the key is derived from
the step number, a resumed run sees exactly the batches an uninterrupted run would, and batches are cut
inside the compiled step, so no data crosses from host to device while training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from lab.config import check
from lab.data import objectives
from lab.errors import DataError


@dataclass(frozen=True)
class TextWindows:
    """Next-token prediction on uniformly random windows of a token stream (nanoGPT's `get_batch`)."""

    seq_len: int
    vocab_size: int

    kind = "text"

    def sample(self, data, split, key, batch_size):
        tokens = jnp.asarray(data[split])
        starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - self.seq_len)
        window = tokens[starts[:, None] + jnp.arange(self.seq_len + 1)[None, :]].astype(jnp.int32)
        return {
            "inputs": window[:, :-1],
            "targets": window[:, 1:],
            "mask": jnp.ones((batch_size, self.seq_len), bool),
        }

    def check_data(self, data: dict[str, np.ndarray]) -> None:
        """Refuse streams too short to cut one window from (before anything compiles)."""
        for split, tokens in data.items():
            if tokens.shape[0] < self.seq_len + 1:
                raise DataError(
                    f"the {split} split has {tokens.shape[0]} tokens, fewer than one window of "
                    f"{self.seq_len + 1}; use a larger corpus or a smaller model.max_len"
                )


def _windows(data, split, key, batch_size, n):
    """(B, n) int32 uniformly random windows of n tokens of the stream data[split]."""
    tokens = jnp.asarray(data[split])
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - n + 1)
    return tokens[starts[:, None] + jnp.arange(n)[None, :]].astype(jnp.int32)


@dataclass(frozen=True)
class MaskedWindows(TextWindows):
    """Masked-LM windows of a token stream (Devlin et al. 2019; lab.data.objectives.mlm_corrupt): `inputs`
    are the window with `mask_rate` of its positions selected (of those `mask_frac` replaced by the mask
    token, `random_frac` by a random text token, the rest kept), `targets` the window itself, `mask` the
    selected positions. The mask token is the last id (vocab_size - 1); text ids are 0..vocab_size - 2.
    Trained with bidirectional attention (model.mask="bidirectional")."""

    mask_rate: float = 0.15
    mask_frac: float = 0.8
    random_frac: float = 0.1

    kind = "masked_text"

    def __post_init__(self):
        check(0 < self.mask_rate < 1, f"mask_rate must be in (0, 1), got {self.mask_rate}")
        for name in ("mask_frac", "random_frac"):
            v = getattr(self, name)
            check(0 <= v <= 1, f"{name} must be in [0, 1], got {v}")
        check(
            self.mask_frac + self.random_frac <= 1,
            f"mask_frac + random_frac must be <= 1, got {self.mask_frac} + {self.random_frac}",
        )
        check(
            self.vocab_size >= 2,
            f"a masked LM needs a text id and a mask id: vocab_size >= 2, got {self.vocab_size}",
        )

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    def sample(self, data, split, key, batch_size):
        k_win, k_mask = jax.random.split(key)
        window = _windows(data, split, k_win, batch_size, self.seq_len)
        inputs, selected, _ = objectives.mlm_corrupt(
            k_mask, window, self.mask_id, self.mask_id, self.mask_rate, self.mask_frac, self.random_frac
        )
        return {"inputs": inputs, "targets": window, "mask": selected}

    def check_data(self, data) -> None:
        for split, tokens in data.items():
            if tokens.shape[0] < self.seq_len:
                raise DataError(
                    f"the {split} split has {tokens.shape[0]} tokens, fewer than one window of {self.seq_len}"
                )


@dataclass(frozen=True)
class PrefixWindows(TextWindows):
    """Prefix-LM windows (Raffel et al. 2020; Wang et al. 2022): next-token prediction on random windows
    where each example's first `prefix_len` positions (uniform in [min_prefix, max_prefix]) attend to each
    other bidirectionally and the rest causally (model.mask="prefix" reads `batch["prefix_len"]`); the loss
    is on the targets in the suffix (lab.data.objectives.prefix_loss_mask)."""

    min_prefix: int = 1
    max_prefix: int | None = None  # None = seq_len - 1

    kind = "prefix_text"

    def __post_init__(self):
        hi = self.hi
        check(self.min_prefix >= 1, f"min_prefix must be >= 1, got {self.min_prefix}")
        check(
            hi <= self.seq_len,
            f"max_prefix ({hi}) must be <= the sequence length ({self.seq_len}): a prefix cannot be longer "
            "than the sequence",
        )
        check(self.min_prefix <= hi, f"min_prefix ({self.min_prefix}) must be <= max_prefix ({hi})")

    @property
    def hi(self) -> int:
        return self.seq_len - 1 if self.max_prefix is None else self.max_prefix

    def sample(self, data, split, key, batch_size):
        k_win, k_pre = jax.random.split(key)
        window = _windows(data, split, k_win, batch_size, self.seq_len + 1)
        prefix = objectives.sample_prefix_len(k_pre, batch_size, self.min_prefix, self.hi)
        return {
            "inputs": window[:, :-1],
            "targets": window[:, 1:],
            "mask": objectives.prefix_loss_mask(prefix, self.seq_len),
            "prefix_len": prefix,
        }


@dataclass(frozen=True)
class Sort:
    """Sort `n_items` random symbols: ``x_1 .. x_n SEP sorted(x)_1 .. sorted(x)_n``.

    The loss counts only the n answer tokens, so it measures the algorithm, not the random input.
    Solving it needs content-based attention: each output position must find the smallest symbol
    not yet emitted anywhere in the input.
    """

    n_items: int = 8
    n_symbols: int = 10
    kind = "sort"

    def __post_init__(self):
        check(self.n_items >= 2, f"task n_items must be >= 2, got {self.n_items}")
        check(self.n_symbols >= 2, f"task n_symbols must be >= 2, got {self.n_symbols}")

    @property
    def seq_len(self) -> int:
        return 2 * self.n_items

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 1  # the symbols and SEP

    @property
    def sep(self) -> int:
        return self.n_symbols

    def sample(self, data, split, key, batch_size):
        # Train and validation draw from the same distribution with independent keys; with 10^8 inputs
        # at the default size, overlap between the two is negligible.
        x = jax.random.randint(key, (batch_size, self.n_items), 0, self.n_symbols)
        seq = jnp.concatenate([x, jnp.full((batch_size, 1), self.sep), jnp.sort(x, axis=1)], axis=1).astype(
            jnp.int32
        )
        t = jnp.arange(self.seq_len)
        return {
            "inputs": seq[:, :-1],
            "targets": seq[:, 1:],
            "mask": jnp.broadcast_to(t >= self.n_items, (batch_size, self.seq_len)),
        }

    def check_data(self, data) -> None:
        return None

    def decode(self, ids) -> str:
        return " ".join("|" if int(i) == self.sep else str(int(i)) for i in ids)


@dataclass(frozen=True)
class PromptAnswer:
    """Fixed prompt -> answer examples (padded to one length), the loss on the answer tokens only.

    data[split] is an (N, seq_len + 1) int32 array of examples `prompt ids + answer ids + padding`, and
    data[split + "_mask"] an (N, seq_len) bool array that is True where the *target* is an answer token.
    A batch is `batch_size` examples drawn uniformly with replacement. A model whose argmax is right at
    every answer position under teacher forcing generates the answer exactly under greedy decoding, so
    the per-example "all answer tokens right" rate (see `lab.train.step.eval_step`'s val_accuracy for the
    per-token rate) is greedy exact-match accuracy.
    """

    seq_len: int
    vocab_size: int
    kind = "prompt_answer"

    def sample(self, data, split, key, batch_size):
        rows = jax.random.randint(key, (batch_size,), 0, data[split].shape[0])
        seq = jnp.asarray(data[split])[rows].astype(jnp.int32)
        return {
            "inputs": seq[:, :-1],
            "targets": seq[:, 1:],
            "mask": jnp.asarray(data[split + "_mask"])[rows],
        }

    def check_data(self, data) -> None:
        for split in ("train", "val"):
            if split not in data or split + "_mask" not in data:
                raise DataError(f"a prompt/answer task needs arrays {split!r} and {split + '_mask'!r}")
            seq, mask = data[split], data[split + "_mask"]
            if (
                seq.ndim != 2
                or seq.shape[1] != self.seq_len + 1
                or mask.shape != (seq.shape[0], self.seq_len)
            ):
                raise DataError(
                    f"{split}: examples must be (N, {self.seq_len + 1}) with a (N, {self.seq_len}) mask, got "
                    f"{seq.shape} and {mask.shape}"
                )
            if seq.shape[0] == 0 or not mask.any(axis=1).all():
                raise DataError(f"{split}: needs at least one example, each with at least one answer token")


def pack_examples(pairs: list[tuple[list[int], list[int]]], pad: int, seq_len: int | None = None):
    """(examples (N, L + 1) int32, mask (N, L) bool) from (prompt ids, answer ids) pairs; L is the longest
    example minus one unless `seq_len` is given (longer examples are an error, never silently cut)."""
    longest = max(len(p) + len(a) for p, a in pairs)
    L = longest - 1 if seq_len is None else seq_len
    if longest > L + 1:
        raise DataError(f"an example has {longest} tokens, more than seq_len + 1 = {L + 1}")
    seqs = np.full((len(pairs), L + 1), pad, dtype=np.int32)
    mask = np.zeros((len(pairs), L), dtype=bool)
    for i, (p, a) in enumerate(pairs):
        seqs[i, : len(p) + len(a)] = p + a
        mask[i, len(p) - 1 : len(p) + len(a) - 1] = True  # targets at t are tokens t + 1
    return seqs, mask


@dataclass(frozen=True)
class ShiftedCopy:
    """Copy with an offset: inputs are `seq_len` random symbols, the target at position t is the input at
    t - offset (positions t < offset are not counted).

    The answer is a function of *order*: a model that sees its input as a set (no position signal and no
    causal mask) cannot tell which symbol sat `offset` places back, so it stays at chance, ln(n_symbols).
    Because the target never lies ahead of its position, causal and bidirectional models train on the
    same task, and `seq_len` can be changed after training to test length extrapolation.
    """

    seq_len: int = 32
    n_symbols: int = 16
    offset: int = 3
    kind = "shifted_copy"

    def __post_init__(self):
        check(self.n_symbols >= 2, f"task n_symbols must be >= 2, got {self.n_symbols}")
        check(
            1 <= self.offset < self.seq_len,
            f"task offset must be in 1..seq_len-1 ({self.seq_len - 1}), got {self.offset}",
        )

    @property
    def vocab_size(self) -> int:
        return self.n_symbols

    def sample(self, data, split, key, batch_size):
        x = jax.random.randint(key, (batch_size, self.seq_len), 0, self.n_symbols).astype(jnp.int32)
        targets = jnp.concatenate([jnp.zeros((batch_size, self.offset), jnp.int32), x[:, : -self.offset]], 1)
        t = jnp.arange(self.seq_len)
        return {
            "inputs": x,
            "targets": targets,
            "mask": jnp.broadcast_to(t >= self.offset, (batch_size, self.seq_len)),
        }

    def check_data(self, data) -> None:
        return None


def order_blind_losses(task: ShiftedCopy, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """The best losses (nats) on `task` without any order information, by Monte Carlo in float64 (NumPy).

    A bidirectional model without position sees its own token x_t and the *bag* of the sequence, so its
    best guess for x_{t-offset} is the bag minus its own token: p(s) = (count(s) - [x_t = s]) / (T - 1).
    That beats uniform chance (ln n_symbols) because the target is in the bag. A causal model sees the
    bag of its prefix x_0..x_t, so the same rule over the prefix gives its order-blind bound; anything it
    does better must come from order it recovers (through the mask). Returns (bidirectional, causal).
    """
    seq_len, offset = task.seq_len, task.offset
    x = np.random.default_rng(seed).integers(0, task.n_symbols, size=(n, seq_len))
    prefix = np.cumsum(np.eye(task.n_symbols)[x], axis=1)  # (n, T, S): counts of x_0..x_t
    rows, bi, ca = np.arange(n), [], []
    for t in range(offset, seq_len):
        target, own = x[:, t - offset], x[:, t]
        same = (own == target).astype(np.float64)
        bi.append(-np.log((prefix[rows, -1, target] - same) / (seq_len - 1)))
        ca.append(-np.log((prefix[rows, t, target] - same) / t))
    return float(np.mean(bi)), float(np.mean(ca))


def reversal_examples(train_words, val_words, encode) -> tuple[dict[str, np.ndarray], int]:
    """Spell words backwards, prompt "word=" and answer "drow.", as `PromptAnswer` data for any tokenizer
    (`encode(text) -> ids`): ({"train", "train_mask", "val", "val_mask"}, seq_len), with seq_len the
    longest example of either split minus one, so both splits share one shape."""
    pairs = lambda words: [(list(encode(f"{w}=")), list(encode(f"{w[::-1]}."))) for w in words]
    tr, va = pairs(train_words), pairs(val_words)
    seq_len = max(len(p) + len(a) for p, a in tr + va) - 1
    (train, train_mask), (val, val_mask) = (pack_examples(x, pad=0, seq_len=seq_len) for x in (tr, va))
    return {"train": train, "train_mask": train_mask, "val": val, "val_mask": val_mask}, seq_len


def word_split(text: str, min_len: int, max_len: int, n_val: int, n_train: int, seed: int = 0):
    """(train words, held-out words) for a word-level task: the distinct lowercase ASCII words of `text`
    with min_len..max_len letters (not part of a longer run of letters), sorted, then shuffled once with
    `seed`; the first n_val are held out and the next n_train (at most) are for training, so no held-out
    word is ever trained on. Raises DataError unless there are more than n_val such words."""
    found = sorted(set(re.findall(rf"(?<![A-Za-z])[a-z]{{{min_len},{max_len}}}(?![A-Za-z])", text)))
    if len(found) < n_val + 1:
        raise DataError(
            f"the text has {len(found)} distinct words of {min_len}-{max_len} letters; the task needs "
            f"more than n_val = {n_val}"
        )
    order = np.random.default_rng(seed).permutation(len(found))
    words = [found[i] for i in order]
    return words[n_val : n_val + n_train], words[:n_val]


@dataclass(frozen=True)
class Passkey:
    """Key-value retrieval at a controlled distance (a passkey / needle task, for long-context tests).

    Inputs are `seq_len` tokens: filler symbols 0..n_filler-1, one value symbol (n_filler..n_filler+
    n_values-1, the only one in the sequence) at position `seq_len - 1 - distance`, and the query token
    QUERY = n_filler + n_values last. The target at the last position is the value; only it is scored, so
    chance is 1/n_values. Training draws the distance uniformly in 1..seq_len-1 (the item anywhere before
    the query); `at_distance` puts it exactly `distance` positions before the query, at any length.
    One attention layer solves it by matching the value's key from the query, if the query can see it.
    """

    seq_len: int = 64
    n_filler: int = 16
    n_values: int = 8
    kind = "passkey"

    def __post_init__(self):
        check(self.seq_len >= 2, f"task seq_len must be >= 2, got {self.seq_len}")
        check(self.n_filler >= 1, f"task n_filler must be >= 1, got {self.n_filler}")
        check(self.n_values >= 2, f"task n_values must be >= 2, got {self.n_values}")

    @property
    def vocab_size(self) -> int:
        return self.n_filler + self.n_values + 1

    @property
    def query(self) -> int:
        return self.n_filler + self.n_values

    def _batch(self, key, batch_size, seq_len, distance_B):
        kf, kv = jax.random.split(key)
        x = jax.random.randint(kf, (batch_size, seq_len), 0, self.n_filler)
        value = jax.random.randint(kv, (batch_size,), self.n_filler, self.n_filler + self.n_values)
        t = jnp.arange(seq_len)[None, :]
        x = jnp.where(t == (seq_len - 1 - distance_B)[:, None], value[:, None], x)
        x = x.at[:, -1].set(self.query).astype(jnp.int32)
        targets = jnp.zeros_like(x).at[:, -1].set(value)
        return {"inputs": x, "targets": targets, "mask": jnp.broadcast_to(t == seq_len - 1, x.shape)}

    def sample(self, data, split, key, batch_size):
        kd, kb = jax.random.split(key)
        distance = jax.random.randint(kd, (batch_size,), 1, self.seq_len)
        return self._batch(kb, batch_size, self.seq_len, distance)

    def at_distance(self, key, batch_size: int, seq_len: int, distance):
        """A batch of `seq_len` tokens with the value exactly `distance` (1..seq_len-1) before the query. A
        traced `distance` (e.g. under lax.map) cannot be checked here: outside that range the batch has no
        value to retrieve."""
        if not isinstance(distance, jax.core.Tracer) and np.ndim(distance) == 0:  # a concrete number
            d = int(np.asarray(distance))
            check(0 < d < seq_len, f"passkey distance must be in 1..{seq_len - 1}, got {d}")
        return self._batch(key, batch_size, seq_len, jnp.full((batch_size,), distance))

    def check_data(self, data) -> None:
        return None
