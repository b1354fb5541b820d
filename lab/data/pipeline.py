"""From a data config to token streams on which a TextWindows task samples batches, and `text_lm`: the
corpus, the model with its vocabulary set, and the windows task, in one call."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from lab.config import check
from lab.data.corpora import load_corpus
from lab.data.tokenize import make_tokenizer, split

if TYPE_CHECKING:
    from lab.data.tasks import TextWindows


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, how it becomes ids, and how it is split.

    name: "pydocs" | "pystdlib" (need no network) | "tinyshakespeare" (downloaded once, sha256-checked)
          | "file:PATH"
    tokenizer: "byte" (UTF-8 bytes, vocabulary 256), "char" (the corpus's characters, as nanoGPT's
          shakespeare_char) or "bpe" (a byte-level BPE of `bpe_vocab_size` ids with split pattern
          `bpe_pattern`, trained on the training part of the text only, so validation text is unseen)
    """

    name: str = "pydocs"
    tokenizer: Literal["byte", "char", "bpe"] = "byte"
    val_fraction: float = 0.1  # the last 10% of the stream is validation (nanoGPT's split)
    bpe_vocab_size: int = 4096
    bpe_pattern: Literal["gpt2", "gpt4"] = "gpt2"

    def __post_init__(self):
        check(0 < self.val_fraction < 1, f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        check(
            self.bpe_vocab_size >= 256,
            f"data.bpe_vocab_size must be >= 256 (one id per byte), got {self.bpe_vocab_size}",
        )


@dataclass
class TextData:
    train: np.ndarray  # int32 token ids
    val: np.ndarray
    tokenizer: object
    info: dict  # recorded in config.json: corpus name, sha256, source, tokenizer, sizes

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val}


@functools.lru_cache(maxsize=8)  # an experiment's check, run and analyze share one tokenized corpus
def load_text_data(dcfg: DataConfig) -> TextData:
    corpus = load_corpus(dcfg.name)
    # BPE is fitted on the training part of the text only (the split below is on ids, so its cut lands
    # within a token of this one), so validation measures text the tokenizer has not seen. The char
    # tokenizer keeps nanoGPT's convention of a vocabulary over the whole text (it cannot encode unseen
    # characters, and its vocabulary is not something validation could overfit).
    fit_on = corpus.text
    if dcfg.tokenizer == "bpe":
        fit_on = corpus.text[: int(len(corpus.text) * (1.0 - dcfg.val_fraction))] or corpus.text
    tok = make_tokenizer(dcfg.tokenizer, fit_on, dcfg.bpe_vocab_size, dcfg.bpe_pattern)
    ids = tok.encode(corpus.text)
    train, val = split(ids, dcfg.val_fraction)
    # Small vocabularies fit in int32 either way; keep the stream compact on device.
    dtype = np.uint8 if tok.vocab_size <= 256 else np.int32
    info = {
        "corpus": corpus.name,
        "sha256": corpus.sha256,
        "source": corpus.source,
        "documents": corpus.n_documents,
        "characters": len(corpus.text),
        "tokenizer": tok.to_dict(),
        "val_fraction": dcfg.val_fraction,
        "vocab_size": tok.vocab_size,
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        # UTF-8 bytes the validation ids stand for: loss per token * val_tokens / val_bytes / ln 2 is
        # bits per byte, the measure that compares models with different tokenizers.
        "val_bytes": tok.n_bytes(val),
    }
    return TextData(train.astype(dtype), val.astype(dtype), tok, info)


@dataclass(frozen=True)
class TextLM:
    """A language-modelling set-up on one corpus: the token streams, the model with its vocabulary set to
    the tokenizer's, and the task of next-token prediction over windows of the model's context length."""

    text: TextData
    model: object  # the model config given, with vocab_size = the tokenizer's
    task: TextWindows

    @property
    def vocab_size(self) -> int:
        return self.text.tokenizer.vocab_size

    def check(self) -> None:
        """Raise DataError if the corpus is too short for the task's windows (call before training)."""
        self.task.check_data(self.text.arrays)


def text_lm(dcfg: DataConfig, model, seq_len: int | None = None) -> TextLM:
    """Load and tokenize `dcfg`'s corpus, set `model`'s vocabulary to the tokenizer's and cut windows of
    `seq_len` tokens (default: the model's `max_len`). `model` is any config with `replace(vocab_size=)`
    and `max_len` (lab.model.ModelConfig); raises DataError for a missing, empty or unknown corpus."""
    from lab.data.tasks import TextWindows  # here, not at the top: this module imports no JAX

    text = load_text_data(dcfg)
    model = model.replace(vocab_size=text.tokenizer.vocab_size)
    return TextLM(text, model, TextWindows(seq_len or model.max_len, model.vocab_size))


def split_text(dcfg: DataConfig) -> tuple[str, str]:
    """(training text, held-out text) of `dcfg`'s corpus, cut at `val_fraction` of its characters as
    `load_text_data` cuts it to fit a BPE: the text a tokenizer may be trained on, and text it never saw."""
    text = load_corpus(dcfg.name).text
    cut = int(len(text) * (1.0 - dcfg.val_fraction))
    return text[:cut], text[cut:]
