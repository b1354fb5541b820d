"""Data for training: text corpora (embedded, local file, checksummed download) and their tokenization."""

from lab.data.corpora import DOWNLOADS, Corpus, Download, corpus_names, fetch, load_corpus
from lab.data.tokenize import ByteTokenizer, CharTokenizer, make_tokenizer, split, tokenizer_from_dict

__all__ = [
    "DOWNLOADS",
    "ByteTokenizer",
    "CharTokenizer",
    "Corpus",
    "Download",
    "corpus_names",
    "fetch",
    "load_corpus",
    "make_tokenizer",
    "split",
    "tokenizer_from_dict",
]
