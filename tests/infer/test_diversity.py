"""Diversity and repetition measures against brute-force definitions."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lab.infer.diversity import distinct_n, loop, repeated_by_position, repeated_ngram_fraction

seqs = st.lists(st.integers(0, 3), min_size=0, max_size=40)


@given(s=seqs, n=st.integers(1, 4))
def test_repeated_by_position_is_the_definition(s, n):
    got = repeated_by_position(s, n)
    for t in range(len(s)):
        want = t >= n - 1 and any(s[t - n + 1 : t + 1] == s[u - n + 1 : u + 1] for u in range(n - 1, t))
        assert got[t] == want
    if len(s) >= n:
        assert repeated_ngram_fraction(s, n) == got.sum() / (len(s) - n + 1)


@given(a=seqs, b=seqs)
def test_distinct_pools_sequences(a, b):
    grams = [tuple(x[i : i + 2]) for x in (a, b) for i in range(len(x) - 1)]
    if grams:
        assert distinct_n([a, b], 2) == len(set(grams)) / len(grams)
    else:
        assert np.isnan(distinct_n([a, b], 2))


@given(head=st.lists(st.integers(5, 9), max_size=10), unit=st.lists(st.integers(0, 4), min_size=1, max_size=5),
       reps=st.integers(3, 6))  # fmt: skip
def test_loop_finds_the_period_of_a_repeated_tail(head, unit, reps):
    s = head + unit * reps
    period, start = loop(s, 3)
    assert period <= len(unit) and len(s) - start >= 3 * period
    assert all(s[t] == s[t - period] for t in range(start + period, len(s)))


def test_no_loop_and_examples():
    assert loop([1, 2, 3, 4, 5, 6], 3) is None
    assert loop([7, 1, 2, 1, 2, 1, 2], 3) == (2, 1)
    assert loop([4, 4, 4], 3) == (1, 0)
