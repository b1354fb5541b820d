"""Diversity and repetition of generated token sequences (plain Python/NumPy on lists of ids).

distinct_n(seqs, n)            unique n-grams / all n-grams, pooled over the sequences (Li et al. 2016)
repeated_ngram_fraction(s, n)  fraction of the n-grams of s that already occurred earlier in s
repeated_by_position(s, n)     per position t: 1 if the n-gram ending at t occurred earlier, else 0
loop(s, min_repeats)           the shortest period p such that the tail of s repeats with period p at
                               least `min_repeats` times: (p, start of the loop), or None
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ngrams(s: Sequence[int], n: int) -> list[tuple[int, ...]]:
    s = list(s)
    return [tuple(s[i : i + n]) for i in range(len(s) - n + 1)]


def distinct_n(seqs: Sequence[Sequence[int]], n: int) -> float:
    grams = [g for s in seqs for g in _ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repeated_by_position(s: Sequence[int], n: int) -> np.ndarray:
    """(len(s),) 0/1: position t is 1 when the n-gram s[t-n+1 : t+1] occurred earlier in s."""
    out = np.zeros(len(s), dtype=np.int8)
    seen: set[tuple[int, ...]] = set()
    for i, g in enumerate(_ngrams(s, n)):
        if g in seen:
            out[i + n - 1] = 1
        seen.add(g)
    return out


def repeated_ngram_fraction(s: Sequence[int], n: int = 4) -> float:
    k = len(s) - n + 1
    return float(repeated_by_position(s, n).sum() / k) if k > 0 else float("nan")


def loop(s: Sequence[int], min_repeats: int = 3) -> tuple[int, int] | None:
    """(period, start) of the loop the sequence ends in, or None if its tail does not repeat.

    The tail s[start:] satisfies s[t] == s[t - period] for every t >= start + period, covers at least
    `min_repeats` periods, and start is as small as possible for the shortest such period.
    """
    s = list(s)
    n = len(s)
    for p in range(1, n // min_repeats + 1):
        t = n - 1
        while t - p >= 0 and s[t] == s[t - p]:
            t -= 1
        start = max(t + 1 - p, 0)  # s[start:] is periodic with period p
        if n - start >= min_repeats * p:
            return p, start
    return None
