"""A byte-level BPE tokenizer: ranks (token bytes -> id), a split pattern and special tokens.

Encoding follows the rule tiktoken implements for GPT-2 and cl100k (and which GPT-2's own merge list
reproduces): cut the text at special tokens, cut each piece into pre-tokens with the split pattern, and
within a pre-token start from single bytes and repeatedly merge the adjacent pair whose concatenation
has the lowest rank, leftmost first, until no adjacent concatenation is a token.

Two encoders give the same ids, and the tests hold them equal:
  - `encode(...)` hands the text to tiktoken's Rust core built from our ranks (`to_tiktoken()`),
  - `encode(..., backend="python")` is this module's pure-Python encoder, with a pre-token cache.

Text that is not valid Unicode: a Python string may hold lone surrogates ("\\ud800"), which UTF-8 cannot
encode. Both encoders first replace each lone surrogate by U+FFFD (and join a surrogate pair written as
two code points into the one character it stands for), exactly as tiktoken does, so
`decode(encode(s)) == clean_surrogates(s)` for every string s, and `== s` for every valid one.
`decode` turns byte sequences that are not UTF-8 (a slice that cuts a character) into U+FFFD;
`decode_bytes` returns the exact bytes.
"""

from __future__ import annotations

import codecs
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal

import regex

from lab.errors import ConfigError, DataError
from lab.tokenizer.patterns import compile_pattern, pattern_name, resolve_pattern

__all__ = ["PieceDecoder", "Tokenizer", "clean_surrogates", "merge_piece"]

AllowedSpecial = Literal["all", "none"] | Iterable[str]


def clean_surrogates(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (and surrogate pairs joined): what UTF-8 can hold."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class PieceDecoder:
    """The text each token adds to a stream, for showing tokens one at a time.

    A byte-level token can end in the middle of a UTF-8 character; decoding incrementally shows that
    character on the token that completes it (a token that only starts one shows as ""). `token_bytes`
    maps an id to its bytes; `context` ids are decoded first and not shown.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], context: Iterable[int] = ()):
        self._bytes = token_bytes
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in context:
            self._dec.decode(self._bytes(int(i)))

    def next(self, token_id: int) -> str:
        """The text `token_id` adds, advancing the stream past it."""
        return self._dec.decode(self._bytes(int(token_id)))

    def peek(self, token_id: int) -> str:
        """The text `token_id` would add here, leaving the stream where it is."""
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        dec.setstate(self._dec.getstate())
        return dec.decode(self._bytes(int(token_id)))


def merge_piece(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Token ids of one pre-token: merge the lowest-rank adjacent pair (leftmost on ties) until none is left.

    Short pieces (almost all of them) use a plain rescan, O(n^2) in the piece's length; long ones (a run
    of 10k spaces, a minified line) use a heap over a linked list, O(n log n), with the same tie rule:
    the heap orders by (rank, start offset) and start offsets keep their left-to-right order.
    """
    if len(piece) <= 64:
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return [ranks[p] for p in parts]
    return _merge_long(piece, ranks)


def _merge_long(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    n = len(piece)
    parts: list[bytes] = [piece[i : i + 1] for i in range(n)]  # parts[i] is the token starting at byte i
    nxt = list(range(1, n + 1))  # nxt[i] == n: i is the last token
    prv = list(range(-1, n - 1))
    version = [0] * n  # bumped whenever parts[i] changes, to recognise stale heap entries
    alive = [True] * n
    heap: list[tuple[int, int, int, int, int]] = []

    def push(i: int) -> None:
        j = nxt[i]
        if j < n:
            r = ranks.get(parts[i] + parts[j])
            if r is not None:
                heapq.heappush(heap, (r, i, version[i], j, version[j]))

    for i in range(n - 1):
        push(i)
    while heap:
        _, i, vi, j, vj = heapq.heappop(heap)
        if not (alive[i] and alive[j] and nxt[i] == j and version[i] == vi and version[j] == vj):
            continue
        parts[i] += parts[j]
        version[i] += 1
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    out, i = [], 0
    while i < n:
        out.append(ranks[parts[i]])
        i = nxt[i]
    return out


class Tokenizer:
    """Byte-level BPE. `ranks` maps every token's bytes to its id (all 256 single bytes included);
    `special_tokens` maps strings such as "<|endoftext|>" to ids outside the ranks; `pattern` is a name
    in `PATTERNS` ("gpt2", "gpt4") or a regex. `merges` (the (left id, right id) pairs in training order)
    is kept when known, for inspection; encoding does not need it.
    """

    def __init__(
        self,
        ranks: Mapping[bytes, int],
        pattern: str = "gpt2",
        special_tokens: Mapping[str, int] | None = None,
        merges: list[tuple[int, int]] | None = None,
        name: str = "bpe",
    ):
        self.pattern = resolve_pattern(pattern)
        self.pattern_name = pattern_name(self.pattern)
        self.ranks: dict[bytes, int] = dict(ranks)
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.merges = list(merges) if merges is not None else None
        self.name = name
        _check_vocab(self.ranks, self.special_tokens)
        self._id_to_bytes: dict[int, bytes] = {i: b for b, i in self.ranks.items()}
        self._id_to_bytes.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._split = compile_pattern(self.pattern)
        self._special_re = (
            regex.compile(
                "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True))
            )
            if self.special_tokens
            else None
        )
        self._cache: dict[str, list[int]] = {}
        self._tiktoken = None

    # --- vocabulary -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ids are contiguous for trained tokenizers and GPT-2)."""
        return max(self._id_to_bytes) + 1

    def token_bytes(self, token_id: int) -> bytes:
        try:
            return self._id_to_bytes[int(token_id)]
        except KeyError:
            raise ValueError(
                f"token id {token_id} is not in the vocabulary (size {self.vocab_size})"
            ) from None

    def __repr__(self) -> str:
        pat = self.pattern_name or "custom"
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, pattern={pat}, specials={len(self.special_tokens)})"

    # --- encoding ---------------------------------------------------------------------------------
    def _allowed(self, allowed_special: AllowedSpecial) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special == "none" or allowed_special is None:
            return set()
        allowed = set(allowed_special)
        unknown = sorted(allowed - set(self.special_tokens))
        if unknown:
            raise ConfigError(
                f"allowed_special names {unknown[0]!r}, which is not a special token of this tokenizer; "
                f"its special tokens: {', '.join(sorted(self.special_tokens)) or '(none)'}"
            )
        return allowed

    def _check_disallowed(self, text: str, allowed: set[str]) -> None:
        if self._special_re is None or len(allowed) == len(self.special_tokens):
            return
        for m in self._special_re.finditer(text):
            if m.group() not in allowed:
                raise DataError(
                    f"text contains the special token {m.group()!r} at character {m.start()}, which is not "
                    f"allowed here; pass allowed_special={{{m.group()!r}}} (or 'all') to encode it as one "
                    f"token, or encode_ordinary to treat it as plain text"
                )

    def encode(
        self,
        text: str,
        allowed_special: AllowedSpecial = "none",
        backend: Literal["tiktoken", "python"] = "tiktoken",
    ) -> list[int]:
        """Token ids of `text`. A special token's string in `text` is one token when it is allowed, and
        an error otherwise (the tiktoken convention: text from users should not smuggle in control
        tokens by accident). `encode_ordinary` encodes such strings as plain text."""
        allowed = self._allowed(allowed_special)
        text = clean_surrogates(text)
        self._check_disallowed(text, allowed)
        if backend == "tiktoken":
            return self.to_tiktoken().encode(text, allowed_special=allowed, disallowed_special=())
        if backend != "python":
            raise ConfigError(f"unknown encode backend {backend!r}; allowed: tiktoken, python")
        return self._encode_python(text, allowed)

    def encode_ordinary(self, text: str, backend: Literal["tiktoken", "python"] = "tiktoken") -> list[int]:
        """Token ids of `text` with special-token strings treated as ordinary text."""
        text = clean_surrogates(text)
        if backend == "tiktoken":
            return self.to_tiktoken().encode_ordinary(text)
        return self._encode_chunk(text, [])

    def _encode_python(self, text: str, allowed: set[str]) -> list[int]:
        ids: list[int] = []
        start = 0
        if allowed and self._special_re is not None:
            for m in self._special_re.finditer(text):
                if m.group() in allowed:
                    self._encode_chunk(text[start : m.start()], ids)
                    ids.append(self.special_tokens[m.group()])
                    start = m.end()
        self._encode_chunk(text[start:], ids)
        return ids

    def _encode_chunk(self, text: str, out: list[int]) -> list[int]:
        """Append the ids of special-free `text` to `out` (pre-token cache in front of `merge_piece`)."""
        if not text:
            return out
        pieces = self._split.findall(text)
        if self.pattern_name is None and sum(map(len, pieces)) != len(text):
            raise DataError(
                "the custom split pattern does not match every character of the text; characters it skips "
                "would be silently dropped (the gpt2 and gpt4 patterns match everything)"
            )
        cache, ranks = self._cache, self.ranks
        extend = out.extend
        for piece in pieces:
            ids = cache.get(piece)
            if ids is None:
                b = piece.encode("utf-8")
                r = ranks.get(b)
                ids = [r] if r is not None else merge_piece(b, ranks)
                if len(cache) < 500_000:  # bounded: memory stays flat on huge inputs
                    cache[piece] = ids
            extend(ids)
        return out

    def encode_iterable(
        self, chunks: Iterable[str], allowed_special: AllowedSpecial = "none"
    ) -> Iterator[int]:
        """Ids of the concatenation of `chunks` (e.g. an open text file, read line by line), yielded lazily.

        Memory stays flat: a pre-token is emitted once it ends at least `margin` characters before the end
        of what has been read, and only the unfinished tail is carried into the next chunk. The margin
        (16 characters, or the longest special token if longer) exceeds how far either named pattern looks
        past the end of a pre-token (a 3-character contraction, `$`, one-character lookahead), so the ids
        equal `encode("".join(chunks))`; the tests check this on corpora cut at random places.
        """
        allowed = self._allowed(allowed_special)
        margin = max([16] + [len(s) for s in self.special_tokens])
        buf = ""
        for chunk in chunks:
            buf += chunk
            if len(buf) < 4 * margin + 4096:  # batch small chunks (lines) before scanning
                continue
            ids, buf = self._encode_prefix(clean_surrogates(buf), allowed, margin)
            yield from ids
        yield from self.encode(buf, allowed_special=allowed, backend="python") if buf else ()

    def _encode_prefix(self, buf: str, allowed: set[str], margin: int) -> tuple[list[int], str]:
        """Ids of the part of `buf` that more text cannot change, and the rest of `buf` to carry."""
        # Everything up to the last allowed special token that ends before the margin is final.
        cut = 0
        if self._special_re is not None:
            self._check_disallowed(buf[: len(buf) - margin], allowed)
            for m in self._special_re.finditer(buf):
                if m.end() <= len(buf) - margin and m.group() in allowed:
                    cut = m.end()
        ids = self._encode_python(buf[:cut], allowed) if cut else []
        tail = buf[cut:]
        keep_from = 0
        for m in self._split.finditer(tail):
            if m.end() > len(tail) - margin:
                break
            keep_from = m.end()
        self._encode_chunk(tail[:keep_from], ids)
        return ids, tail[keep_from:]

    # --- decoding ---------------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        try:
            return b"".join(self._id_to_bytes[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(
                f"token id {e.args[0]} is not in the vocabulary (size {self.vocab_size})"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 (a cut character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def tokens(self, text: str, allowed_special: AllowedSpecial = "none") -> list[tuple[int, bytes]]:
        """(id, bytes) of each token of `text`, for showing how a text is cut."""
        return [(i, self._id_to_bytes[i]) for i in self.encode(text, allowed_special=allowed_special)]

    # --- tiktoken bridge --------------------------------------------------------------------------
    def to_tiktoken(self):
        """A `tiktoken.Encoding` with our ranks, pattern and special tokens (built once, then reused)."""
        if self._tiktoken is None:
            import tiktoken

            self._tiktoken = tiktoken.Encoding(
                name=f"lab-{self.name}",
                pat_str=self.pattern,
                mergeable_ranks=self.ranks,
                special_tokens=self.special_tokens,
            )
        return self._tiktoken


MAX_ID = 2**31 - 1


def _check_vocab(ranks: dict[bytes, int], specials: dict[str, int]) -> None:
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise DataError(
            f"the ranks lack {len(missing)} of the 256 single bytes (first: {missing[0]}); a byte-level BPE "
            f"needs every byte to encode arbitrary text"
        )
    ids = list(ranks.values())
    if len(set(ids)) != len(ids):
        raise DataError("two tokens share one rank; ranks must be distinct")
    if any((not isinstance(i, int)) or i < 0 for i in ids):
        raise DataError("ranks must be non-negative integers")
    if ids and max(ids) > MAX_ID:
        raise DataError(f"rank {max(ids)} is too large: token ids are int32 arrays (at most {MAX_ID})")
    taken = set(ids)
    for s, i in specials.items():
        if not s:
            raise ConfigError("a special token cannot be the empty string")
        if isinstance(i, int) and i > MAX_ID:
            raise ConfigError(
                f"special token {s!r} has id {i}: token ids are int32 arrays (at most {MAX_ID})"
            )
        if i in taken:
            raise ConfigError(f"special token {s!r} has id {i}, which is already a token's id")
        taken.add(i)
