"""A vocabulary as two arrays, for measurement files: analysis shows text without rebuilding a tokenizer.

    arrays = vocab_arrays(tok.token_bytes, tok.vocab_size)   # in `run`: {"vocab_bytes", "vocab_ends"}
    decode = vocab_decoder(arrays)                           # in `analyze`, from the file
    decode(ids) == tok.decode(ids)

Decoding joins the ids' bytes and reads them as UTF-8, bytes that are not valid UTF-8 (a character cut by
a window) becoming U+FFFD: the byte and BPE tokenizers' decode exactly, and the char tokenizer's but for
lone surrogates (which it keeps and this replaces).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def vocab_arrays(token_bytes: Callable[[int], bytes], vocab_size: int) -> dict[str, np.ndarray]:
    """{"vocab_bytes": every id's bytes concatenated (uint8), "vocab_ends": where each id's bytes end}."""
    pieces = [token_bytes(i) for i in range(vocab_size)]
    return {
        "vocab_bytes": np.frombuffer(b"".join(pieces), np.uint8).copy(),
        "vocab_ends": np.cumsum([len(p) for p in pieces], dtype=np.int64),
    }


def vocab_decoder(arrays: dict) -> Callable[..., str]:
    """decode(ids) -> str from the arrays of `vocab_arrays` (as read back from a file)."""
    raw, ends = arrays["vocab_bytes"].tobytes(), [int(e) for e in arrays["vocab_ends"]]
    pieces = [raw[s:e] for s, e in zip([0, *ends[:-1]], ends)]
    return lambda ids: b"".join(pieces[int(i)] for i in np.asarray(ids).ravel()).decode(
        "utf-8", errors="replace"
    )
