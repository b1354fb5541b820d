"""Cleaning: MinHash agrees with exact Jaccard, near duplicates are found, dissimilar pairs are not flagged,
exact copies always go, and the split by document is leak-free."""

import math
import random

import pytest

from lab.data import clean as C
from lab.data import synthetic as S
from lab.errors import ConfigError

CFG = C.DedupConfig()


def _exact_jaccard(a: str, b: str, n: int = 5) -> float:
    """A plain-Python reference: sets of character n-grams of the normalized texts."""
    ta, tb = (" ".join(t.lower().split()) for t in (a, b))
    sa = {ta[i : i + n] for i in range(len(ta) - n + 1)}
    sb = {tb[i : i + n] for i in range(len(tb) - n + 1)}
    return len(sa & sb) / len(sa | sb)


@pytest.fixture(scope="module")
def docs():
    # stories from one grammar share many phrases: realistic, moderately similar non-duplicates
    return [a + " " + b for a, b in zip(S.stories(300, 11), S.stories(300, 12))]


def test_jaccard_matches_plain_reference(docs):
    for a, b in zip(docs[:20], docs[1:21]):
        assert C.jaccard(C.shingles(a), C.shingles(b)) == pytest.approx(_exact_jaccard(a, b), abs=1e-12)


def test_minhash_estimates_true_jaccard(docs):
    rng = random.Random(0)
    errors, within = [], 0
    pairs = [(docs[i], S.near_copy(docs[i], rng.choice([0.02, 0.1, 0.3]), rng)) for i in range(150)]
    pairs += [(docs[i], docs[i + 1]) for i in range(50)]
    for a, b in pairs:
        s = _exact_jaccard(a, b)
        est = C.minhash(C.shingles(a), CFG).jaccard(C.minhash(C.shingles(b), CFG))
        sd = math.sqrt(max(s * (1 - s), 1e-4) / CFG.num_perm)
        within += abs(est - s) <= 3 * sd
        errors.append(est - s)
    assert within / len(pairs) >= 0.97  # ~0.997 expected for an unbiased binomial estimate
    sd_mean = max(abs(e) for e in errors) / math.sqrt(len(errors))
    assert abs(sum(errors) / len(errors)) < 3 * sd_mean


def test_near_duplicates_found_and_dissimilar_pairs_not_flagged(docs):
    rng = random.Random(5)
    base = docs[:200]
    corpus, near, far = list(base), [], []
    for i in range(200):
        copy = S.near_copy(base[i], 0.03, rng)  # a few words edited: Jaccard ~0.85
        corpus.append(copy)
        near.append((i, len(corpus) - 1, _exact_jaccard(base[i], copy)))
    for i in range(100):
        copy = S.near_copy(base[i], 0.35, rng)  # heavily edited: Jaccard well below 0.5
        corpus.append(copy)
        far.append((i, len(corpus) - 1, _exact_jaccard(base[i], copy)))
    flagged, _ = C.near_duplicate_pairs(corpus, CFG)
    flagged = {(i, j) for i, j, _ in flagged}
    high = [(i, j) for i, j, s in near if s >= 0.8]
    low = [(i, j) for i, j, s in far if s < 0.5]
    assert len(high) >= 150 and len(low) >= 80
    assert sum(p in flagged for p in high) / len(high) >= 0.95
    assert sum(p in flagged for p in low) / len(low) <= 0.01
    # every flagged pair, over the whole corpus, is one whose true Jaccard clears min_jaccard
    for i, j in flagged:
        assert _exact_jaccard(corpus[i], corpus[j]) >= CFG.min_jaccard - 1e-12


def test_exact_copies_all_removed_and_split_is_leak_free(docs):
    rng = random.Random(8)
    corpus, injected = S.inject_duplicates(docs, 0.3, rng, exact_frac=0.5, edit_rate=0.02)
    report = C.dedupe(corpus, CFG)
    exact = [j for _, j, k in injected if k == "exact"]
    assert exact and set(exact) <= set(report.exact_removed)
    near = [j for i, j, k in injected if k == "near" and _exact_jaccard(corpus[i], corpus[j]) >= 0.8]
    assert sum(j in report.near_removed for j in near) / len(near) >= 0.95
    rec = C.injected_recovery(corpus, injected, report, CFG)  # the same counts, as e16 reports them
    assert rec["exact_injected"] == rec["exact_removed"] == len(exact)
    assert rec["near_J>=0.8_injected"] == len(near)
    assert rec["near_J>=0.8_removed"] == sum(j in report.near_removed for j in near)
    assert rec["near_J>=0.8_injected"] + rec["near_J<0.8_injected"] == len(injected) - len(exact)
    splits, _ = C.clean_split(corpus, CFG, (0.8, 0.1, 0.1), seed=0)
    names = list(splits)
    for a in names:
        for b in names:
            if a < b:
                assert not set(map(C.text_hash, splits[a])) & set(map(C.text_hash, splits[b]))
                assert C.contamination(splits[a], splits[b], CFG) == []
    assert sum(len(v) for v in splits.values()) == len(report.kept)
    # without deduplication, the same split leaks: the contamination check sees it
    raw = C.split_indices(len(corpus), (0.8, 0.1, 0.1), seed=0)
    hits = C.contamination([corpus[i] for i in raw["train"]], [corpus[i] for i in raw["val"]], CFG)
    assert hits and all(s >= CFG.min_jaccard for *_, s in hits)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.3])
def test_lsh_threshold_outside_open_unit_interval_refused(bad):
    with pytest.raises(ConfigError, match=r"lsh_threshold must be in \(0, 1\)"):
        C.DedupConfig(lsh_threshold=bad)
