"""Batch samplers: windows are real slices of the stream, the sort task's answer is sorted and masked."""

import jax
import numpy as np
import pytest

from lab.data.tasks import ShiftedCopy, Sort, TextWindows
from lab.errors import ConfigError, DataError


def test_text_windows_are_contiguous_slices_shifted_by_one():
    stream = np.arange(1000, dtype=np.int32) % 251
    task = TextWindows(seq_len=16, vocab_size=256)
    b = jax.jit(lambda d, k: task.sample(d, "train", k, 8))({"train": stream}, jax.random.PRNGKey(3))
    x, y = np.asarray(b["inputs"]), np.asarray(b["targets"])
    for row_x, row_y in zip(x, y):
        start = int(np.where(stream == row_x[0])[0][0])  # values are unique within the first 251
        if start + 17 > 251:
            continue
        np.testing.assert_array_equal(row_x, stream[start : start + 16])
        np.testing.assert_array_equal(row_y, stream[start + 1 : start + 17])
    assert np.asarray(b["mask"]).all()


def test_text_windows_same_key_same_batch_and_stay_in_range():
    stream = np.arange(50, dtype=np.int32)
    task = TextWindows(seq_len=8, vocab_size=64)
    f = jax.jit(lambda k: task.sample({"v": stream}, "v", k, 256))
    a, b = f(jax.random.PRNGKey(0)), f(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert int(np.asarray(a["targets"]).max()) == 49  # the last token is reachable, never past the end


def test_text_windows_refuse_short_streams():
    task = TextWindows(seq_len=64, vocab_size=256)
    with pytest.raises(DataError, match="fewer than one window"):
        task.check_data({"train": np.zeros(64, np.int32)})
    task.check_data({"train": np.zeros(65, np.int32)})  # exactly one window fits
    b = task.sample({"train": np.arange(65, dtype=np.int32)}, "train", jax.random.PRNGKey(0), 2)
    np.testing.assert_array_equal(b["targets"][0], np.arange(1, 65))


def test_sort_targets_are_sorted_inputs_and_mask_covers_answers():
    task = Sort(n_items=5, n_symbols=7)
    b = task.sample({}, "train", jax.random.PRNGKey(1), 32)
    x, y, m = (np.asarray(b[k]) for k in ("inputs", "targets", "mask"))
    assert x.shape == (32, 10) and task.vocab_size == 8
    np.testing.assert_array_equal(x[:, 5], np.full(32, task.sep))
    np.testing.assert_array_equal(y[:, 5:], np.sort(x[:, :5], axis=1))
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    assert m[:, :5].sum() == 0 and m[:, 5:].all()


def test_pack_examples_masks_exactly_the_answer_targets():
    from lab.data.tasks import pack_examples

    seqs, mask = pack_examples([([5, 6], [7, 8, 9]), ([1], [2])], pad=0)
    np.testing.assert_array_equal(seqs, [[5, 6, 7, 8, 9], [1, 2, 0, 0, 0]])
    # targets are seqs[:, 1:]; the mask is True where a target is an answer token
    np.testing.assert_array_equal(mask, [[False, True, True, True], [True, False, False, False]])
    with pytest.raises(DataError, match="more than seq_len"):
        pack_examples([([1, 2, 3], [4])], pad=0, seq_len=2)


def test_prompt_answer_teacher_forced_all_correct_is_greedy_exact_match():
    """The analysis's exact-match rule: if greedy decoding produces answer A, then teacher forcing on A is
    right at every answer position (so the mask lines up with what generation predicts)."""
    from lab.data.tasks import PromptAnswer, pack_examples
    from lab.infer import generate
    from lab.model import PRESETS, init
    from lab.train.evaluate import token_scores

    cfg = PRESETS["smoke"].replace(vocab_size=11, max_len=8)
    params = init(cfg, jax.random.PRNGKey(1))
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    answers = []
    for p in prompts:
        out = np.asarray(generate(cfg, params, np.array([p], np.int32), 4))[0]
        answers.append(out[len(p) :].tolist())
    seqs, mask = pack_examples(list(zip(prompts, answers)), pad=0, seq_len=8)
    _, correct = token_scores(cfg, params, seqs[:, :-1], seqs[:, 1:])
    assert np.all(correct[mask])
    task = PromptAnswer(8, 11)
    data = {"train": seqs, "train_mask": mask, "val": seqs, "val_mask": mask}
    task.check_data(data)
    b = task.sample(data, "train", jax.random.PRNGKey(0), 5)
    for x, y, m in zip(np.asarray(b["inputs"]), np.asarray(b["targets"]), np.asarray(b["mask"])):
        row = next(i for i in range(3) if (seqs[i, :-1] == x).all())
        np.testing.assert_array_equal(y, seqs[row, 1:])
        np.testing.assert_array_equal(m, mask[row])
    with pytest.raises(DataError, match="val_mask"):
        task.check_data({"train": seqs, "train_mask": mask, "val": seqs})


def test_shifted_copy_targets_are_the_input_offset_places_back():
    task = ShiftedCopy(seq_len=12, n_symbols=5, offset=3)
    b = task.sample({}, "train", jax.random.PRNGKey(0), 4)
    x, y, m = (np.asarray(b[k]) for k in ("inputs", "targets", "mask"))
    assert x.shape == y.shape == m.shape == (4, 12) and x.max() < 5
    np.testing.assert_array_equal(y[:, 3:], x[:, :-3])
    assert not m[:, :3].any() and m[:, 3:].all()
    longer = ShiftedCopy(seq_len=48, n_symbols=5, offset=3).sample({}, "val", jax.random.PRNGKey(1), 2)
    assert longer["inputs"].shape == (2, 48)
    with pytest.raises(ConfigError, match="offset"):
        ShiftedCopy(seq_len=4, offset=4)


def test_order_blind_losses_match_exact_enumeration_on_a_tiny_task():
    import itertools

    from lab.data.tasks import order_blind_losses

    task = ShiftedCopy(seq_len=4, n_symbols=3, offset=1)
    bi, ca = [], []  # every sequence, equally likely: the exact expectations of the order-blind guesses
    for x in itertools.product(range(3), repeat=4):
        for t in range(1, 4):
            own, target = x[t], x[t - 1]
            bi.append(-np.log((x.count(target) - (own == target)) / 3))
            ca.append(-np.log((x[: t + 1].count(target) - (own == target)) / t))
    got = order_blind_losses(task, n=20000)
    # Monte Carlo over 20000 x 3 positions: standard error ~0.004; 0.03 is ~7 of them
    np.testing.assert_allclose(got, (np.mean(bi), np.mean(ca)), atol=0.03)
    assert got[1] < got[0] < np.log(3)  # the bag beats chance; the prefix's bag beats the whole bag here


def test_reversal_examples_answer_each_prompt_with_the_word_backwards():
    from lab.data.tasks import reversal_examples

    encode = lambda text: [ord(c) for c in text]  # one id per character
    arrays, seq_len = reversal_examples(["abc", "hello"], ["xy"], encode)
    assert seq_len == len("hello=") + len("olleh.") - 1
    assert arrays["train"].shape == (2, seq_len + 1) and arrays["val"].shape == (1, seq_len + 1)
    row, mask = arrays["train"][1], arrays["train_mask"][1]
    assert "".join(chr(i) for i in row) == "hello=olleh."
    assert "".join(chr(i) for i in row[1:][mask]) == "olleh."  # the loss sees the answer only
    row, mask = arrays["val"][0], arrays["val_mask"][0]
    assert "".join(chr(i) for i in row[1:][mask]) == "yx." and not row[len("xy=yx.") :].any()  # padded


def test_word_split_holds_out_distinct_whole_words():
    from lab.data.tasks import word_split

    text = "the cat sat; Cats nap. a zebra_x dog 42 cat bird owl"
    train, val = word_split(text, 3, 4, 2, 10)
    assert len(val) == 2 and not set(train) & set(val)
    assert sorted(train + val) == ["bird", "cat", "dog", "nap", "owl", "sat", "the"]  # not "ats", "zebra"
    assert (train, val) == word_split(text, 3, 4, 2, 10)  # one fixed shuffle
    assert len(word_split(text, 3, 4, 2, 3)[0]) == 3
    with pytest.raises(DataError, match="n_val = 7"):
        word_split(text, 3, 4, 7, 10)
