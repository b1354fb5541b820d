"""Whole-dataset evaluation: bits per byte against a float64 reference, exact match against greedy decoding."""

import jax
import numpy as np

from lab.data.tasks import pack_examples
from lab.infer import generate
from lab.model import PRESETS, apply, init
from lab.train.evaluate import answer_accuracy, bits_per_byte


def test_bits_per_byte_is_the_summed_loss_in_bits_over_the_bytes_of_the_targets():
    cfg = PRESETS["smoke"].replace(vocab_size=13, max_len=8)
    params = init(cfg, jax.random.PRNGKey(0))
    tokens = np.random.default_rng(0).integers(0, 13, size=8 * 5 + 3)  # 5 windows, 2 tokens left over
    got = bits_per_byte(cfg, params, tokens, lambda ids: 2 * ids.size)  # say each token is two bytes
    windows = tokens[: 8 * 5 + 1]
    x, y = (
        np.stack([windows[i * 8 : i * 8 + 8] for i in range(5)]),
        np.stack([windows[i * 8 + 1 : i * 8 + 9] for i in range(5)]),
    )
    logits = np.asarray(apply(cfg, params, x), np.float64)
    z = logits - logits.max(-1, keepdims=True)
    nll = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, y[..., None], -1)[..., 0]
    assert abs(got - nll.sum() / (2 * y.size) / np.log(2)) < 1e-5 * got


def test_answer_accuracy_is_greedy_exact_match_and_per_answer_token_accuracy():
    cfg = PRESETS["smoke"].replace(vocab_size=11, max_len=8)
    params = init(cfg, jax.random.PRNGKey(1))
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    answers = [np.asarray(generate(cfg, params, np.array([p], np.int32), 4))[0][3:].tolist() for p in prompts]
    seqs, mask = pack_examples(list(zip(prompts, answers)), pad=0, seq_len=8)
    assert answer_accuracy(cfg, params, seqs, mask) == (1.0, 1.0)  # the greedy answers themselves
    seqs[1, 3 + 3] = (seqs[1, 3 + 3] + 1) % 11  # the last answer token of one example is now wrong
    exact, per_token = answer_accuracy(cfg, params, seqs, mask)
    assert exact == 2 / 3 and per_token == 11 / 12
