"""Byte-level BPE tokenization, built from scratch: training, encoding, decoding, file formats and a
bridge to tiktoken. Pure Python + numpy; imports no JAX (see DESIGN.md's layers).

    from lab.tokenizer import train_bpe, load, save
    tok = train_bpe(text, vocab_size=4096, pattern="gpt4", special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello world")             # tiktoken's Rust core on our ranks
    ids == tok.encode("Hello world", backend="python")   # our own encoder, same ids
    save(tok, "tok/"); tok = load("tok/")
"""

from lab.tokenizer.bpe import PieceDecoder, Tokenizer, clean_surrogates, merge_piece
from lab.tokenizer.io import (
    byte_to_char,
    describe,
    load,
    load_gpt2_files,
    load_ranks_file,
    load_tiktoken_file,
    save,
)
from lab.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, compile_pattern
from lab.tokenizer.train import count_pretokens, split_for_workers, train_bpe, truncate

__all__ = [
    "PieceDecoder",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "PATTERNS",
    "Tokenizer",
    "byte_to_char",
    "clean_surrogates",
    "compile_pattern",
    "count_pretokens",
    "describe",
    "load",
    "load_gpt2_files",
    "load_ranks_file",
    "load_tiktoken_file",
    "merge_piece",
    "save",
    "split_for_workers",
    "train_bpe",
    "truncate",
]
