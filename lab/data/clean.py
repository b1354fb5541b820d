"""Cleaning a document collection before training (project 16): exact and near-duplicate removal, a
contamination check between splits, and a leak-free split by document.

  exact duplicates   documents whose whitespace-normalized text has the same sha256; the first is kept
  near duplicates    MinHash signatures (Broder 1997) of each document's character n-gram shingles, banded
                     into locality-sensitive hashing buckets (datasketch.MinHashLSH; Leskovec et al.,
                     "Mining of Massive Datasets", ch. 3). LSH only proposes candidates: a pair at Jaccard
                     similarity s becomes a candidate with probability 1 - (1 - s^r)^b for its b bands of r
                     rows, an S-curve around `lsh_threshold`, not a cutoff. Every candidate is therefore checked
                     by its true Jaccard similarity on the shingle sets and flagged only at >= `min_jaccard`.
                     Flagged pairs join clusters (union-find); the lowest index of each cluster is kept.
  injected_recovery  how many injected copies (exact; near above and below a true Jaccard bar) a dedupe removed
  contamination      for each evaluation document, the training documents that are exact or near duplicates
                     of it (the same two-stage test)
  split              deduplicate first, then assign whole documents to train/val/test by a seeded
                     permutation, so no document, and no near copy of one, lands in two splits

All functions are pure Python + datasketch (NumPy underneath); no JAX.
"""

from __future__ import annotations

import functools
import hashlib
import random
import zlib
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from lab.config import check


@dataclass(frozen=True)
class DedupConfig:
    """How documents are compared. lsh_threshold sets the LSH S-curve (candidates); min_jaccard is the true
    Jaccard similarity of shingle sets at which a candidate is a near duplicate."""

    lsh_threshold: float = 0.6
    min_jaccard: float = 0.7
    num_perm: int = 128  # MinHash permutations: the estimate's sd is sqrt(s (1 - s) / num_perm)
    shingle: int = 5  # characters per shingle
    seed: int = 1  # of the MinHash permutations

    def __post_init__(self):
        for name in ("lsh_threshold", "min_jaccard"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < float(v) < 1.0
            check(ok, f"{name} must be in (0, 1) (exclusive), got {v!r}")
        check(self.num_perm >= 16, f"num_perm must be >= 16, got {self.num_perm}")
        check(self.shingle >= 1, f"shingle must be >= 1, got {self.shingle}")


def normalize(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.lower().split())


def text_hash(text: str) -> str:
    """sha256 of the normalized text: equal for documents that differ only in case and whitespace."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def shingles(text: str, n: int = 5) -> set[str]:
    """The set of character n-grams of the normalized text (the whole text if shorter than n)."""
    t = normalize(text)
    if len(t) <= n:
        return {t}
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def crc32_hash(data: bytes) -> int:
    """The 32-bit base hash of a shingle (CRC-32: deterministic across processes, unlike `hash`, and in C,
    unlike datasketch's default SHA-1); MinHash's random permutations are applied on top of it."""
    return zlib.crc32(data)


@functools.lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int):
    return MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations  # drawn once


def minhash(shingle_set: set[str], cfg: DedupConfig) -> MinHash:
    """The MinHash signature of a shingle set (cfg.num_perm permutations seeded by cfg.seed)."""
    m = MinHash(
        num_perm=cfg.num_perm,
        seed=cfg.seed,
        hashfunc=crc32_hash,
        permutations=_permutations(cfg.num_perm, cfg.seed),
        scheme="affine32",
    )
    m.update_batch([s.encode("utf-8") for s in shingle_set])
    return m


@functools.lru_cache(maxsize=1 << 16)
def signature(text: str, cfg: DedupConfig) -> tuple[frozenset, MinHash]:
    """(shingle set, MinHash) of a document, cached: dedupe and every contamination check reuse them."""
    s = frozenset(shingles(text, cfg.shingle))
    return s, minhash(s, cfg)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the lowest index is every cluster's root


@dataclass
class DedupReport:
    kept: list[int]  # indices of the documents kept, in order
    exact_removed: list[int]  # removed as exact copies of an earlier document
    near_removed: list[int]  # removed as near duplicates of a kept document
    candidates: int  # LSH candidate pairs among the exact-unique documents
    near_pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (i, j, true Jaccard) flagged
    rejected: int = 0  # candidates whose true Jaccard was below min_jaccard (LSH false positives)

    def to_dict(self) -> dict:
        return {
            "kept": len(self.kept),
            "exact_removed": len(self.exact_removed),
            "near_removed": len(self.near_removed),
            "candidates": self.candidates,
            "near_pairs": len(self.near_pairs),
            "rejected_candidates": self.rejected,
        }


def near_duplicate_pairs(
    docs: list[str], cfg: DedupConfig, indices: list[int] | None = None
) -> tuple[list[tuple[int, int, float]], int]:
    """(flagged pairs (i, j, true Jaccard) with i < j, number of LSH candidates) among `docs[indices]`
    (all if None): LSH candidates whose true shingle Jaccard is >= cfg.min_jaccard."""
    idx = list(range(len(docs))) if indices is None else list(indices)
    sets, sigs = {}, {}
    for i in idx:
        sets[i], sigs[i] = signature(docs[i], cfg)
    lsh = MinHashLSH(threshold=cfg.lsh_threshold, num_perm=cfg.num_perm)
    for i in idx:
        lsh.insert(i, sigs[i])
    pairs, candidates = [], 0
    for i in idx:
        for j in lsh.query(sigs[i]):
            if j <= i:
                continue
            candidates += 1
            s = jaccard(sets[i], sets[j])
            if s >= cfg.min_jaccard:
                pairs.append((i, j, s))
    return sorted(pairs), candidates


def dedupe(docs: list[str], cfg: DedupConfig) -> DedupReport:
    """Exact dedupe by hash (first occurrence kept), then near-duplicate clusters among the rest (lowest
    index kept)."""
    seen: dict[str, int] = {}
    unique, exact_removed = [], []
    for i, d in enumerate(docs):
        h = text_hash(d)
        if h in seen:
            exact_removed.append(i)
        else:
            seen[h] = i
            unique.append(i)
    pairs, candidates = near_duplicate_pairs(docs, cfg, unique)
    uf = _UnionFind(len(docs))
    for i, j, _ in pairs:
        uf.union(i, j)
    kept = [i for i in unique if uf.find(i) == i]
    near_removed = [i for i in unique if uf.find(i) != i]
    rejected = candidates - len(pairs)
    return DedupReport(kept, exact_removed, near_removed, candidates, pairs, rejected)


def injected_recovery(
    docs: list[str], injected, report: DedupReport, cfg: DedupConfig, bar: float = 0.8
) -> dict[str, int]:
    """How many injected copies (`injected` as lab.data.synthetic.inject_duplicates lists them: original index,
    copy index, "exact" | "near") the dedupe `report` of `docs` removed, by kind: exact copies, near copies at
    true Jaccard >= `bar` to their original and near copies below it. {"<kind>_injected": n,
    "<kind>_removed": n} for the kinds "exact", "near_J>=<bar>" and "near_J<<bar>", in that order."""
    removed = set(report.exact_removed) | set(report.near_removed)
    kinds = ("exact", f"near_J>={bar:g}", f"near_J<{bar:g}")
    out = {f"{k}_{what}": 0 for k in kinds for what in ("injected", "removed")}
    for orig, copy, kind in injected:
        if kind != "exact":
            close = jaccard(shingles(docs[orig], cfg.shingle), shingles(docs[copy], cfg.shingle)) >= bar
            kind = kinds[1] if close else kinds[2]
        out[f"{kind}_injected"] += 1
        out[f"{kind}_removed"] += copy in removed
    return out


def contamination(train: list[str], held_out: list[str], cfg: DedupConfig) -> list[tuple[int, int, float]]:
    """(held-out index, train index, true Jaccard) for every held-out document that is an exact (Jaccard
    1.0 by hash) or near duplicate (LSH candidate with true Jaccard >= min_jaccard) of a training document."""
    hashes: dict[str, int] = {}
    for i, d in enumerate(train):
        hashes.setdefault(text_hash(d), i)
    sigs = [signature(d, cfg) for d in train]
    sets = [s for s, _ in sigs]
    lsh = MinHashLSH(threshold=cfg.lsh_threshold, num_perm=cfg.num_perm)
    for i, (_, m) in enumerate(sigs):
        lsh.insert(i, m)
    hits = []
    for k, d in enumerate(held_out):
        h = text_hash(d)
        if h in hashes:
            hits.append((k, hashes[h], 1.0))
            continue
        s, m = signature(d, cfg)
        best = max(((jaccard(s, sets[i]), i) for i in lsh.query(m)), default=(0.0, -1))
        if best[0] >= cfg.min_jaccard:
            hits.append((k, best[1], best[0]))
    return hits


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """A seeded partition of range(n) into train/val/test of sizes round(fraction * n) (test takes the
    rest); each split's indices in increasing order."""
    check(len(fractions) == 3 and all(f >= 0 for f in fractions), "fractions: (train, val, test), each >= 0")
    check(abs(sum(fractions) - 1.0) < 1e-9, f"fractions must sum to 1, got {sum(fractions)}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    return {"train": sorted(order[:a]), "val": sorted(order[a:b]), "test": sorted(order[b:])}


def clean_split(
    docs: list[str], cfg: DedupConfig, fractions: tuple[float, float, float], seed: int
) -> tuple[dict[str, list[str]], DedupReport]:
    """({"train", "val", "test"}: documents, dedupe report): deduplicated first, then split by document."""
    report = dedupe(docs, cfg)
    parts = split_indices(len(report.kept), fractions, seed)
    return {k: [docs[report.kept[i]] for i in v] for k, v in parts.items()}, report
