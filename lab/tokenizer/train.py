"""Training a byte-level BPE: exact, deterministic, and fast because the corpus is never rescanned.

Algorithm (Sennrich et al., 2016, on bytes as in GPT-2):
1. Cut the text at special tokens, then into pre-tokens with the split pattern, and count the distinct
   pre-tokens (`count_pretokens`; the only pass over the text, spread over processes). A 31 MB corpus
   has ~8M pre-tokens but only ~95k distinct ones, and everything after this works on those.
2. Count every adjacent byte pair inside each distinct pre-token, weighted by its count. Pairs never
   cross a pre-token or a special token.
3. Repeat until the vocabulary is full: take the pair with the highest count — ties go to the
   lexicographically greatest pair of byte strings (left token's bytes first, then the right's) — give
   it the next id, and rewrite only the pre-tokens that contain it (an index pair -> pre-tokens), adjusting
   the counts of the pairs around each rewritten occurrence. The highest count comes from a heap with
   lazy deletion: every count change pushes a fresh entry, and popped entries whose count is stale are
   dropped.

Ids: 0..255 are the single bytes in byte order, 256.. the merges in the order they were made, then the
special tokens. Training stops early (with fewer merges than asked) only when no pair occurs any more.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

import regex

from lab.errors import ConfigError, DataError
from lab.tokenizer.bpe import Tokenizer, clean_surrogates
from lab.tokenizer.patterns import compile_pattern, pattern_name, resolve_pattern

__all__ = ["count_pretokens", "train_bpe", "split_for_workers", "truncate"]

# Below this many characters one process counts faster than starting a second one.
PARALLEL_MIN_CHARS = 4_000_000


def _special_splitter(special_tokens: Sequence[str]) -> regex.Pattern | None:
    if not special_tokens:
        return None
    return regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)))


def _count_serial(text: str, pattern: str, special_tokens: tuple[str, ...]) -> Counter:
    split = compile_pattern(pattern)
    specials = _special_splitter(special_tokens)
    segments = specials.split(text) if specials is not None else [text]
    counts: Counter = Counter()
    for seg in segments:
        counts.update(split.findall(seg))
    return counts


def _count_worker(args: tuple[str, str, tuple[str, ...]]) -> Counter:
    return _count_serial(*args)


def split_for_workers(text: str, n: int) -> list[str]:
    """`text` cut into about `n` pieces at places where neither named pattern can join across the cut:
    just before a letter that follows a newline that follows a non-space character ("x\\nA").

    Why that is safe: a pre-token containing a letter may start with a letter, a space (gpt2) or one
    non-newline, non-letter character (gpt4), never with a newline; and the newline, preceded by a
    non-space, is a pre-token of its own or ends a punctuation run, whether the text goes on or ends
    there (the `\\s++$` alternative then matches the same single newline). The tests hold the counts of the
    pieces equal to the counts of the whole text on real corpora.
    """
    if n <= 1 or len(text) < 2:
        return [text]
    cuts, target = [0], len(text) // n
    boundary = regex.compile(r"(?<=\S\n)(?=\p{L})")
    for k in range(1, n):
        m = boundary.search(text, max(k * target, cuts[-1] + 1))
        if m is None:
            break
        cuts.append(m.start())
    cuts.append(len(text))
    return [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def count_pretokens(
    text: str, pattern: str = "gpt2", special_tokens: Sequence[str] = (), workers: int | None = None
) -> Counter:
    """Counts of the distinct pre-tokens of `text` (special tokens cut the text and are not counted).

    workers: processes to use (default: all cores, for texts of at least 4M characters). Worker
    processes are forked; in a process that has imported JAX (which is multithreaded, and must not be
    forked) counting stays in this process.
    """
    pattern = resolve_pattern(pattern)
    specials = tuple(special_tokens)
    if workers is None:
        workers = (os.cpu_count() or 1) if len(text) >= PARALLEL_MIN_CHARS else 1
    can_fork = "fork" in multiprocessing.get_all_start_methods() and "jax" not in sys.modules
    named = pattern_name(pattern) is not None  # the safe-cut argument holds for the named patterns only
    if workers <= 1 or not can_fork or not named:
        return _count_serial(text, pattern, specials)
    pieces = split_for_workers(text, workers)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(pieces)) as pool:
        partial = pool.map(_count_worker, [(p, pattern, specials) for p in pieces])
    counts = partial[0]
    for c in partial[1:]:
        counts.update(c)
    return counts


def _reverse_key(b: bytes) -> bytes:
    """A byte string whose ascending order is the descending order of `b`: the heap is a min-heap and
    ties must go to the lexicographically greatest pair. Each byte x becomes (1, 255 - x) and the end is
    marked by 2, so a proper prefix sorts after its extensions (b"a" < b"ab" becomes key(a) > key(ab))."""
    out = bytearray()
    for x in b:
        out += bytes((1, 255 - x))
    out.append(2)
    return bytes(out)


def train_bpe(
    text: str | Iterable[str],
    vocab_size: int,
    pattern: str = "gpt2",
    special_tokens: Sequence[str] = (),
    workers: int | None = None,
    name: str = "bpe",
    progress=None,
) -> Tokenizer:
    """A byte-level BPE tokenizer of `vocab_size` ids (256 bytes + merges + special tokens) trained on
    `text` (a string, or an iterable of documents that are counted separately).

    progress: optional callable(n_done, n_total) called every 256 merges.
    """
    specials = list(dict.fromkeys(special_tokens))
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ConfigError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < 256 + len(specials):
        raise ConfigError(
            f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least 256 byte tokens"
            f"{f' + {len(specials)} special tokens' if specials else ''} = {256 + len(specials)}"
        )
    if any(not s for s in specials):
        raise ConfigError("a special token cannot be the empty string")
    pattern = resolve_pattern(pattern)
    docs = [text] if isinstance(text, str) else list(text)
    docs = [clean_surrogates(d) for d in docs]
    if not any(docs):
        raise DataError("cannot train a tokenizer on an empty corpus")
    counts: Counter = Counter()
    for d in docs:
        counts.update(count_pretokens(d, pattern, specials, workers))
    merges = _learn_merges(counts, vocab_size - 256 - len(specials), progress)

    ranks = {bytes([b]): b for b in range(256)}
    token_bytes = [bytes([b]) for b in range(256)]
    for a, b in merges:
        token_bytes.append(token_bytes[a] + token_bytes[b])
        ranks[token_bytes[-1]] = len(token_bytes) - 1
    special_ids = {s: len(token_bytes) + k for k, s in enumerate(specials)}
    return Tokenizer(ranks, pattern=pattern, special_tokens=special_ids, merges=merges, name=name)


def _learn_merges(counts: Counter, n_merges: int, progress=None) -> list[tuple[int, int]]:
    words: list[list[int]] = []
    freq: list[int] = []
    for piece, c in counts.items():
        b = piece.encode("utf-8")
        if len(b) > 1:  # a single byte has no pairs
            words.append(list(b))
            freq.append(c)

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for w, word in enumerate(words):
        c = freq[w]
        for pair in zip(word, word[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + c
            s = where.get(pair)
            if s is None:
                where[pair] = {w}
            else:
                s.add(w)

    keys = [_reverse_key(bytes([b])) for b in range(256)]
    token_bytes = [bytes([b]) for b in range(256)]
    heap = [(-c, keys[a], keys[b], a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        negc, _, _, a, b = heapq.heappop(heap)
        if pair_count.get((a, b), 0) != -negc or negc == 0:
            continue  # stale entry: the count changed after it was pushed
        new = 256 + len(merges)
        merges.append((a, b))
        token_bytes.append(token_bytes[a] + token_bytes[b])
        keys.append(_reverse_key(token_bytes[-1]))
        changed: set[tuple[int, int]] = set()
        for w in where.pop((a, b)):
            word = words[w]
            # Rewrite the word left to right, merging non-overlapping (a, b) occurrences, and note which
            # pair positions change: around an occurrence at old position i, the pairs at i-1, i, i+1 go;
            # around the merged token at new position j, the pairs at j-1 and j come. Every other pair is
            # the same before and after, so the counts of only these are adjusted.
            out: list[int] = []
            old_pos: list[int] = []
            new_pos: list[int] = []
            i, n = 0, len(word)
            while i < n:
                if i < n - 1 and word[i] == a and word[i + 1] == b:
                    old_pos.append(i)
                    new_pos.append(len(out))
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            if not old_pos:
                continue  # a stale index entry: an earlier rewrite removed the pair from this word
            c = freq[w]
            gone = {p for i in old_pos for p in (i - 1, i, i + 1) if 0 <= p < n - 1}
            came = {p for j in new_pos for p in (j - 1, j) if 0 <= p < len(out) - 1}
            for p in gone:
                pair = (word[p], word[p + 1])
                pair_count[pair] -= c
                changed.add(pair)
            for p in came:
                pair = (out[p], out[p + 1])
                pair_count[pair] = pair_count.get(pair, 0) + c
                changed.add(pair)
                s = where.get(pair)
                if s is None:
                    where[pair] = {w}
                else:
                    s.add(w)
            words[w] = out
        pair_count.pop((a, b), None)
        changed.discard((a, b))
        for pair in changed:
            c = pair_count[pair]
            if c > 0:
                heapq.heappush(heap, (-c, keys[pair[0]], keys[pair[1]], pair[0], pair[1]))
            else:
                del pair_count[pair]
                where.pop(pair, None)
        if progress is not None and len(merges) % 256 == 0:
            progress(len(merges), n_merges)
    return merges


def truncate(tok: Tokenizer, vocab_size: int) -> Tokenizer:
    """The tokenizer `train_bpe` would have produced with the smaller `vocab_size` on the same text.

    Training is greedy and deterministic, so the first k merges of a long run are exactly the merges of a
    run stopped at k (the tests check it); one training run thus yields every smaller vocabulary.
    Special tokens are dropped (their ids would otherwise collide).
    """
    if tok.merges is None:
        raise ConfigError("only a trained tokenizer (one that records its merges) can be truncated")
    n = vocab_size - 256
    if not 0 <= n <= len(tok.merges):
        raise ConfigError(
            f"vocab_size {vocab_size} is outside [256, {256 + len(tok.merges)}] for this tokenizer"
        )
    merges = tok.merges[:n]
    ranks = {b: r for b, r in tok.ranks.items() if r < vocab_size}
    return Tokenizer(ranks, tok.pattern, {}, merges=merges, name=f"{tok.name}-{vocab_size}")
