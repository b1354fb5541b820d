"""Tokenizer files: our own format, tiktoken's ranks files, and GPT-2's vocab.json + merges.txt.

Our format is a directory of two plain-text files (no pickle):

  tokenizer.json   {"format": "lab-bpe", "version": 1, "name": ..., "pattern": <regex source>,
                    "pattern_name": "gpt2" | "gpt4" | null, "special_tokens": {"<|endoftext|>": 4095},
                    "n_ranks": 3839, "ranks_sha256": <sha256 of ranks.tiktoken>,
                    "merges": [[left id, right id], ...] (training order; optional)}
  ranks.tiktoken   one token per line, "<base64 of the token's bytes> <rank>", the format of tiktoken's
                   published *.tiktoken files, so `tiktoken.load.load_tiktoken_bpe` reads it too

Loading checks every line and the checksum, and names the file and line of the first problem: a
corrupted or truncated file is an error, never a silently different tokenizer. Saving writes into a
temporary directory beside the target and renames it into place, so no half-written tokenizer is left.

GPT-2's files store each token as a string of printable characters standing for bytes (the reversible
byte-to-character table of GPT-2's encoder.py, which `byte_to_char` rebuilds from its definition).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from lab.errors import DataError, LabError
from lab.tokenizer.bpe import Tokenizer

__all__ = [
    "FORMAT",
    "VERSION",
    "save",
    "load",
    "load_ranks_file",
    "load_tiktoken_file",
    "load_gpt2_files",
    "byte_to_char",
]

FORMAT, VERSION = "lab-bpe", 1
HEADER, RANKS = "tokenizer.json", "ranks.tiktoken"
GPT2_SPECIALS = {"<|endoftext|>": 50256}


def _ranks_text(ranks: dict[bytes, int]) -> str:
    return "".join(
        f"{base64.b64encode(b).decode('ascii')} {r}\n" for b, r in sorted(ranks.items(), key=lambda kv: kv[1])
    )


def save(tok: Tokenizer, out: str | os.PathLike) -> Path:
    """Write `tok` to directory `out` (created; it must not exist or be empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(
            f"{out} already exists and is not an empty directory; choose another --out or remove it"
        )
    ranks_text = _ranks_text(tok.ranks)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "name": tok.name,
        "pattern": tok.pattern,
        "pattern_name": tok.pattern_name,
        "special_tokens": tok.special_tokens,
        "n_ranks": len(tok.ranks),
        "ranks_sha256": hashlib.sha256(ranks_text.encode("ascii")).hexdigest(),
        "merges": [list(m) for m in tok.merges] if tok.merges is not None else None,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / RANKS).write_text(ranks_text, encoding="ascii")
        (tmp / HEADER).write_text(json.dumps(header, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_ranks_file(path: str | os.PathLike) -> dict[bytes, int]:
    """Ranks from a tiktoken-format file ("<base64> <rank>" per line), every line checked."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read ranks file {path}: {e.strerror or e}") from None
    if not data:
        raise DataError(f"ranks file {path} is empty")
    if not data.endswith(b"\n"):
        raise DataError(f"{path}: the last line has no newline; the file looks truncated")
    ranks: dict[bytes, int] = {}
    seen: dict[int, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}, line {lineno}: expected '<base64 token> <rank>', got {line[:60]!r}")
        try:
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (binascii.Error, ValueError):
            raise DataError(f"{path}, line {lineno}: not '<base64 token> <rank>': {line[:60]!r}") from None
        if not token or rank < 0:
            raise DataError(f"{path}, line {lineno}: empty token or negative rank")
        if token in ranks:
            raise DataError(f"{path}, line {lineno}: token {token!r} appears twice (first on another line)")
        if rank in seen:
            raise DataError(f"{path}, line {lineno}: rank {rank} is also given on line {seen[rank]}")
        ranks[token] = rank
        seen[rank] = lineno
    return ranks


def load(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer saved by `save` (a directory), or a bare *.tiktoken ranks file (GPT-2's pattern and
    special token are assumed for a file named gpt2.tiktoken, no special tokens otherwise)."""
    path = Path(path)
    if path.is_file():
        return load_tiktoken_file(path)
    if not path.is_dir():
        raise DataError(f"tokenizer {path} does not exist; give a directory written by `lab tokenizer train`")
    header_path = path / HEADER
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"cannot read {header_path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", "?")
        raise DataError(f"{header_path}, line {line}: not valid JSON ({e})") from None
    except (RecursionError, ValueError) as e:  # arrays nested thousands deep, a 5000-digit integer
        raise DataError(
            f"{header_path}: not a tokenizer header ({type(e).__name__}: {str(e)[:80]})"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f'{header_path} is not a {FORMAT} tokenizer header (no "format": "{FORMAT}")')
    if header.get("version") != VERSION:
        raise DataError(
            f"{header_path}: version {header.get('version')!r} is not supported (this lab reads {VERSION})"
        )
    for key, typ in (("pattern", str), ("special_tokens", dict), ("n_ranks", int), ("ranks_sha256", str)):
        if not isinstance(header.get(key), typ):
            raise DataError(f"{header_path}: field {key!r} is missing or not a {typ.__name__}")
    ranks_path = path / RANKS
    ranks = load_ranks_file(ranks_path)
    digest = hashlib.sha256(ranks_path.read_bytes()).hexdigest()
    if digest != header["ranks_sha256"] or len(ranks) != header["n_ranks"]:
        raise DataError(
            f"{ranks_path} does not match its header ({len(ranks)} ranks, sha256 {digest[:12]}...; the header "
            f"says {header['n_ranks']} ranks, sha256 {header['ranks_sha256'][:12]}...): the file was changed "
            f"or truncated"
        )
    name = header.get("name")
    if name is not None and not isinstance(name, str):
        raise DataError(f"{header_path}: field 'name' must be a string or null, got {name!r}"[:200])
    specials = header["special_tokens"]
    for token, i in specials.items():
        if not _is_int(i) or i < 0:
            raise DataError(
                f"{header_path}: special token {token!r} has id {i!r}; ids are non-negative integers"[:200]
            )
    merges = _check_merges(header.get("merges"), ranks, header_path)
    try:
        return Tokenizer(ranks, header["pattern"], specials, merges=merges, name=name or path.name)
    except (LabError, ValueError) as e:  # a bad regex, a special id that collides with a token
        raise DataError(f"{header_path}: {e}") from None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_merges(merges, ranks: dict[bytes, int], header_path: Path) -> list[tuple[int, int]] | None:
    """The header's merges as pairs, checked against the ranks: merge k joins two tokens that exist
    before it (ids < 256 + k) into the token whose id is 256 + k, as training writes them."""
    if merges is None:
        return None
    if not isinstance(merges, list):
        raise DataError(f"{header_path}: field 'merges' must be a list of [left id, right id] pairs or null")
    id_to_bytes = {i: b for b, i in ranks.items()}
    out = []
    for k, m in enumerate(merges):
        where = f"{header_path}: merges[{k}]"
        if not (isinstance(m, list) and len(m) == 2 and all(_is_int(x) for x in m)):
            raise DataError(f"{where} is {json.dumps(m)[:60]}, not a [left id, right id] pair of integers")
        a, b = m
        if not (0 <= a < 256 + k and 0 <= b < 256 + k):
            raise DataError(f"{where} is {m}: merge {k} may only join ids made before it (below {256 + k})")
        made = ranks.get(id_to_bytes[a] + id_to_bytes[b]) if a in id_to_bytes and b in id_to_bytes else None
        if made != 256 + k:
            raise DataError(
                f"{where} is {m}, which makes {'no token' if made is None else f'id {made}'}, not id {256 + k}; "
                f"the merges do not belong to {RANKS}"
            )
        out.append((a, b))
    return out


def load_tiktoken_file(
    path: str | os.PathLike, pattern: str = "gpt2", special_tokens: dict | None = None
) -> Tokenizer:
    """A tokenizer from a bare ranks file, e.g. OpenAI's published gpt2.tiktoken."""
    path = Path(path)
    ranks = load_ranks_file(path)
    if special_tokens is None:
        special_tokens = GPT2_SPECIALS if path.stem == "gpt2" and len(ranks) == 50256 else {}
    return Tokenizer(ranks, pattern, special_tokens, name=path.stem)


def byte_to_char() -> dict[int, str]:
    """GPT-2's table from bytes to printable characters: the 188 bytes that are printable Latin-1
    ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (controls, space, DEL, NBSP, soft
    hyphen) are given the code points 256, 257, ... in byte order, so every token prints visibly."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load_gpt2_files(vocab_path: str | os.PathLike, merges_path: str | os.PathLike) -> Tokenizer:
    """GPT-2's tokenizer from its published encoder.json/vocab.json and vocab.bpe/merges.txt.

    The ranks are the vocabulary ids. The merge list is checked against them: merge k ("A B") must make
    the token with id 256 + k, which is what makes rank-order merging reproduce GPT-2's merge order.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"cannot read {vocab_path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{vocab_path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    decode = {c: b for b, c in byte_to_char().items()}
    ranks: dict[bytes, int] = {}
    specials: dict[str, int] = {}
    for token, i in vocab.items():
        if token in GPT2_SPECIALS:
            specials[token] = i
            continue
        try:
            ranks[bytes(decode[c] for c in token)] = i
        except KeyError:
            raise DataError(
                f"{vocab_path}: token {token!r} has a character outside GPT-2's byte table"
            ) from None
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {merges_path}: {e.strerror or e}") from None
    merges: list[tuple[int, int]] = []
    for lineno, line in enumerate(lines, start=1):
        if lineno == 1 and line.startswith("#version"):
            continue
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or parts[0] not in vocab or parts[1] not in vocab:
            raise DataError(
                f"{merges_path}, line {lineno}: expected two known tokens 'A B', got {line[:60]!r}"
            )
        made = vocab.get(parts[0] + parts[1])
        if made != 256 + len(merges):
            raise DataError(
                f"{merges_path}, line {lineno}: merge {line!r} makes id {made}, expected {256 + len(merges)}; "
                f"the merges do not belong to {vocab_path.name}"
            )
        merges.append((vocab[parts[0]], vocab[parts[1]]))
    return Tokenizer(ranks, "gpt2", specials, merges=merges, name="gpt2")


def describe(tok: Tokenizer) -> dict:
    """A JSON-able summary (for config.json and `lab tokenizer show`)."""
    return {
        "name": tok.name,
        "vocab_size": tok.vocab_size,
        "pattern": tok.pattern_name or "custom",
        "special_tokens": tok.special_tokens,
    }
