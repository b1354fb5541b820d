"""lab.align.data (the generated domains, instructions and the gold preference) and the RLHF tasks' checks:
answers that are right by construction, the gold rule's values, and one-line refusals of bad settings/data."""

import numpy as np
import pytest

from lab.align import data as D
from lab.align.rlhf import PairsTask, PPOTask
from lab.errors import ConfigError, DataError


def test_instructions_are_right_by_construction():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, r, w = D.instruction(rng, "R")
        assert p == f"R:{w}>" and r == w[::-1] + "."
        p, r, w = D.instruction(rng, "U")
        assert r == w.upper() + "." and set(w) <= set(D.TARGET_LETTERS)
        p, r, _ = D.instruction(rng, "S")
        marked = p[p.index("[") + 1 : p.index("]")]
        assert r == marked + "." and p.count("[") == 1
        p, r, _ = D.instruction(rng, "A")
        a, b = p[2:-1].split("+")
        assert r == f"{int(a) + int(b)}."
    p, r = D.chat(rng, 12, 0.5)
    assert len(p) == D.CHAT_PROMPT_LEN and len(r) == 12


def test_packed_examples_mask_exactly_the_response_targets():
    ex = D.instruction_examples(40, 0, 10, 0.1, 0.3)
    packed = D.pack(ex, D.seq_len_for(10))
    for (_, p, r, _), x, m in zip(ex, packed["x"], packed["mask"]):
        assert D.decode(x[1:][m]) == r  # the targets under the mask spell the response
        assert D.decode(x) == p + r
    assert D.decode(D.encode("Ab 1+2>!")) == "Ab 1+2>!"
    with pytest.raises(DataError, match="not in the Project 12 vocabulary"):
        D.encode("é")


def test_gold_reward_peaks_at_the_peak_and_falls_beyond():
    c = np.arange(6)
    np.testing.assert_allclose(D.gold_reward(c, 2), [0, 0.75, 1, 0.75, 0, -1.25])
    assert np.argmax(D.gold_reward(np.arange(10), 3)) == 3


def test_preference_pairs_choose_the_gold_preferred_response():
    from experiments.e12_alignment import preference_pairs

    rng = np.random.default_rng(1)
    resp = [D.encode("C:abc>") + D.encode("".join(rng.choice(list("ab!"), 8))) for _ in range(200)]
    chosen, rejected = preference_pairs(np.array(resp), 2, rng)
    g = lambda x: D.gold_reward(D.bang_count(x[:, D.CHAT_PROMPT_LEN :]), 2)
    assert len(chosen) > 10 and np.all(g(chosen) > g(rejected))
    ties = np.array([D.encode("C:abc>") + D.encode("abababab")] * 10)
    with pytest.raises(DataError, match="preference data is empty"):
        preference_pairs(ties, 2, rng)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"kl_coef": -0.5}, "kl_coef must be >= 0, got -0.5"),
        ({"clip": 0.0}, "clip must be > 0, got 0.0"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_ppo_settings_are_refused(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        PPOTask(seq_len=18, vocab_size=D.VOCAB_SIZE, prompt_len=6, **kw)


def test_empty_preference_data_is_refused():
    task = PairsTask(seq_len=18, vocab_size=D.VOCAB_SIZE, prompt_len=6)
    empty = np.zeros((0, 18), np.int32)
    ok = np.zeros((4, 18), np.int32)
    data = {"train_chosen": empty, "train_rejected": empty, "val_chosen": ok, "val_rejected": ok}
    with pytest.raises(DataError, match="non-empty"):
        task.check_data(data)
