"""Synthetic generators are reproducible from their seed; the noise functions realize their stated rates
(within 3 binomial standard deviations)."""

import math
import random

import pytest

from lab.data import synthetic as S
from lab.errors import ConfigError


def _within_3sigma(k: int, n: int, rate: float) -> bool:
    sd = math.sqrt(n * rate * (1 - rate))
    return abs(k - n * rate) <= 3 * sd


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: S.stories(20, seed),
        lambda seed: S.arithmetic(20, seed),
        lambda seed: S.facts(20, S.FactWorld(seed), seed, wrong_rate=0.3),
        lambda seed: S.synthetic_corpus(30, seed),
    ],
)
def test_same_seed_same_text_other_seed_other_text(make):
    assert make(7) == make(7)
    assert make(7) != make(8)


def test_stories_follow_the_grammar():
    docs = S.stories(400, 0)
    for d in docs:
        assert d.startswith(("Once upon a time", "One day, a")) or d.split()[0] in S.NAMES
        assert "{" not in d and "}" not in d
    # the optional "problem" part appears at its stated probability (0.8)
    marks = ("But one day, the", "Then it began to rain", "came and took the")
    k = sum(any(m in d for m in marks) for d in docs)
    assert _within_3sigma(k, len(docs), dict(S.STORY_PLAN)["problem"])


def test_arithmetic_is_correct():
    for doc in S.arithmetic(50, 3):
        for prob in doc.split(". "):
            lhs, rhs = prob.rstrip(".").split(" = ")
            a, op, b = lhs.split()
            assert eval(f"{int(a)} {op} {int(b)}") == int(rhs)  # noqa: S307 - our own digits


def test_wrong_facts_at_their_rate():
    world = S.FactWorld(seed=5, n_entities=50)
    truth = world.truth
    docs, wrong, total = S.facts(400, world, seed=9, wrong_rate=0.2)
    counted = 0
    for doc in docs:
        for sent in doc.split(". "):
            head, value = sent.rstrip(".").split(" is ")
            attr, entity = head[len("The ") :].split(" of ")
            counted += truth[(entity, attr)] != value
    assert counted == wrong and total > 1000
    assert _within_3sigma(wrong, total, 0.2)
    assert S.facts(50, world, seed=9, wrong_rate=0.0)[1] == 0


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_char_noise_rate(rate):
    text = "the quick brown fox jumps over the lazy dog " * 200
    noisy, changed = S.char_noise(text, rate, random.Random(1))
    diff = sum(a != b for a, b in zip(text, noisy))
    assert len(noisy) == len(text) and diff == changed
    assert _within_3sigma(diff, len(text), rate)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_token_shuffle_rate(rate):
    words = [f"w{i}" for i in range(3000)]  # unique tokens: every selected token visibly moves
    out, selected = S.token_shuffle(" ".join(words), rate, random.Random(2))
    moved = sum(a != b for a, b in zip(words, out.split()))
    assert sorted(out.split()) == sorted(words) and moved == selected
    assert _within_3sigma(moved, len(words), rate)


def test_injected_duplicates_rate():
    docs = S.stories(2000, 4)
    out, injected = S.inject_duplicates(docs, 0.1, random.Random(3), exact_frac=0.5)
    assert len(out) == len(docs) + len(injected)
    assert _within_3sigma(len(injected), len(docs), 0.1)
    for i, j, kind in injected:
        assert (out[i] == out[j]) == (kind == "exact")
    exact = sum(k == "exact" for *_, k in injected)
    assert _within_3sigma(exact, len(injected), 0.5)


def test_a_near_copy_is_never_exact_even_when_a_draw_repeats_the_word():
    # seed 73492 draws "the" for the one token it edits in "the cat sat": the draw must be made again
    text = "the cat sat"
    for seed in (73492, *range(200)):
        copy = S.near_copy(text, 0.0, random.Random(seed))
        assert copy != text and sum(a != b for a, b in zip(copy.split(), text.split())) == 1, (seed, copy)


def test_noisy_documents_realize_the_level():
    docs = S.stories(300, 1)
    _, stats = S.noisy_documents(docs, 0.25, seed=0)
    assert _within_3sigma(stats["chars_changed"], stats["chars"], 0.25)
    assert _within_3sigma(stats["tokens_selected"], stats["tokens"], 0.25)
    assert S.noisy_documents(docs, 0.0, seed=0)[0] == [" ".join(d.split()) for d in docs]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_rates_outside_unit_interval_are_refused(bad):
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        S.char_noise("abc", bad, random.Random(0))
