"""Tests for lab.data.tokenize: byte and char tokenizers, their serialisation, and the train/val split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.data.tokenize import (
    ByteTokenizer,
    CharTokenizer,
    make_tokenizer,
    split,
    tokenizer_from_dict,
)
from lab.errors import ConfigError, DataError

# Any Python string, lone surrogates included (hypothesis leaves category Cs out of text() by default).
any_text = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])))


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# ------------------------------------------------------------------------------------------- byte


@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text.encode("utf-8")),)
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text


@given(any_text)
def test_byte_refuses_lone_surrogates(text):
    tok = ByteTokenizer()
    if not has_surrogate(text):
        assert tok.decode(tok.encode(text)) == text
        return
    with pytest.raises(DataError) as err:
        tok.encode(text)
    first = next(i for i, c in enumerate(text) if has_surrogate(c))
    message = str(err.value)
    assert "\n" not in message and f"at character {first}," in message and "surrogate" in message


def test_byte_decode_of_a_cut_character_is_replaced():
    tok = ByteTokenizer()
    ids = tok.encode("é!")  # b"\xc3\xa9!"
    assert tok.decode(ids[1:]) == "\ufffd!"
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode([]) == ""


def test_byte_decode_refuses_out_of_range_ids():
    tok = ByteTokenizer()
    for bad in ([256], [-1], [0, 1000]):
        with pytest.raises(ValueError):
            tok.decode(bad)


def test_byte_properties():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256 and tok.kind == "byte"
    assert tok.to_dict() == {"kind": "byte"}


# ------------------------------------------------------------------------------------------- char


def test_char_vocab_is_sorted_set_of_training_text():
    text = "hello, world! Ünïcödé 𝄞"
    tok = CharTokenizer.fit(text)
    assert tok.chars == tuple(sorted(set(text)))
    assert list(tok.chars) == sorted(tok.chars) and len(set(tok.chars)) == len(tok.chars)
    assert tok.vocab_size == len(set(text)) and tok.kind == "char"
    # nanoGPT's shakespeare_char: stoi = {ch: i for i, ch in enumerate(chars)}
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    assert tok.encode(text).tolist() == [stoi[c] for c in text]


@given(any_text.filter(bool))
def test_char_round_trip(text):
    tok = CharTokenizer.fit(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    assert [tok.chars[i] for i in ids] == list(text)
    assert tok.decode(ids) == text


@given(st.text(min_size=1), st.text())
def test_char_encode_of_other_text(train, other):
    tok = CharTokenizer.fit(train)
    unknown = [i for i, c in enumerate(other) if c not in set(train)]
    if not unknown:
        assert tok.decode(tok.encode(other)) == other
        return
    with pytest.raises(DataError) as err:
        tok.encode(other)
    message = str(err.value)
    assert "\n" not in message
    assert repr(other[unknown[0]]) in message and f"position {unknown[0]} " in message


def test_char_unknown_character_message():
    tok = CharTokenizer.fit("abc")
    with pytest.raises(DataError, match=r"'x' \(U\+0078\) at position 2 "):
        tok.encode("abxcy")


def test_char_rejects_bad_vocabularies():
    for chars in ((), ("b", "a"), ("a", "a"), ("ab",)):
        with pytest.raises(ConfigError):
            CharTokenizer(chars)
    with pytest.raises(DataError):
        CharTokenizer.fit("")


def test_char_decode_refuses_out_of_range_ids():
    tok = CharTokenizer.fit("ab")
    with pytest.raises(ValueError):
        tok.decode([2])


# ---------------------------------------------------------------------------------- serialisation


@given(any_text.filter(bool))
def test_to_dict_round_trips_through_json(text):
    for kind in ("byte", "char"):
        tok = make_tokenizer(kind, text)
        assert tok.kind == kind
        back = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
        assert back == tok and type(back) is type(tok)


def test_unknown_tokenizer_kinds():
    with pytest.raises(ConfigError) as err:
        make_tokenizer("wordpiece", "text")
    assert "'wordpiece'" in str(err.value) and "allowed: bpe, byte, char" in str(err.value)
    assert isinstance(err.value, ValueError)
    for bad in ({"kind": "bpe"}, {}, {"kind": "char"}, {"kind": "char", "chars": "ba"}):
        with pytest.raises(ConfigError):
            tokenizer_from_dict(bad)


# ------------------------------------------------------------------------------------------ split


def test_split_is_nanogpt_90_10():
    ids = np.arange(1000, dtype=np.int32)
    train, val = split(ids, 0.1)
    assert len(train) == 900 and len(val) == 100
    np.testing.assert_array_equal(train, ids[:900])
    np.testing.assert_array_equal(val, ids[900:])
    again = split(ids, 0.1)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], val)


@given(st.integers(2, 10_000), st.floats(0.001, 0.999))
def test_split_sizes(n, fraction):
    ids = np.arange(n, dtype=np.int32)
    n_train = int(n * (1 - fraction))
    if n_train in (0, n):
        with pytest.raises(DataError):
            split(ids, fraction)
        return
    train, val = split(ids, fraction)
    assert len(train) == n_train and len(train) + len(val) == n
    np.testing.assert_array_equal(np.concatenate([train, val]), ids)


def test_split_refuses_bad_inputs():
    with pytest.raises(DataError, match="too short"):
        split(np.arange(1), 0.1)
    with pytest.raises(DataError, match="0 train"):
        split(np.arange(10), 0.95)
    with pytest.raises(DataError, match="0 validation"):
        split(np.arange(10), 1e-20)  # 1 - 1e-20 == 1.0 in float64
    assert [len(part) for part in split(np.arange(5), 0.1)] == [4, 1]  # int(4.5) = 4
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError):
            split(np.arange(100), fraction)
    with pytest.raises(ValueError):
        split(np.zeros((2, 50), dtype=np.int32), 0.1)


# -------------------------------------------------------------------------------------------- bpe


def test_bpe_adapter_round_trips_and_counts_bytes():
    text = "The cat sat on the mat; the cat's hat. Ünïcödé 東京 😀 " * 40
    tok = make_tokenizer("bpe", text, vocab_size=280, pattern="gpt4")
    assert tok.vocab_size == 280 and tok.to_dict()["pattern"] == "gpt4"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) < len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.n_bytes(ids) == len(text.encode("utf-8"))
    assert tok.n_bytes(ids[:7]) == len(tok.bpe.decode_bytes(ids[:7].tolist()))
    again = make_tokenizer("bpe", text, vocab_size=280, pattern="gpt4")
    assert again.to_dict() == tok.to_dict()  # the ranks hash identifies the fit
    assert (
        make_tokenizer("bpe", text, vocab_size=270).to_dict()["ranks_sha256"] != tok.to_dict()["ranks_sha256"]
    )
    with pytest.raises(ConfigError, match="not rebuilt"):
        tokenizer_from_dict(tok.to_dict())


def test_byte_and_char_count_bytes():
    text = "héllo 東京"
    assert ByteTokenizer().n_bytes(ByteTokenizer().encode(text)) == len(text.encode("utf-8"))
    char = CharTokenizer.fit(text)
    assert char.n_bytes(char.encode(text)) == len(text.encode("utf-8"))


def test_bpe_data_pipeline_fits_on_training_text_only(tmp_path):
    from lab.data.pipeline import DataConfig, load_text_data

    path = tmp_path / "c.txt"
    # the held-out tail is a word never seen in training; a BPE fitted on everything would learn it
    path.write_text("alpha beta gamma delta. " * 200 + "zyzzyva " * 60)
    data = load_text_data(DataConfig(f"file:{path}", "bpe", 0.1, bpe_vocab_size=265))
    assert data.info["vocab_size"] == 265 and data.info["tokenizer"]["kind"] == "bpe"
    assert b"zyzzyva" not in data.tokenizer.bpe.ranks and b" zyzzyva" not in data.tokenizer.bpe.ranks
    assert data.info["val_bytes"] == data.tokenizer.n_bytes(data.val)
    assert data.tokenizer.decode(np.concatenate([data.train, data.val])) == path.read_text()


def test_split_text_is_the_text_a_pipeline_bpe_is_fitted_on(tmp_path):
    from lab.data.pipeline import DataConfig, load_text_data, split_text
    from lab.tokenizer import train_bpe

    path = tmp_path / "c.txt"
    path.write_text("alpha beta gamma delta. " * 200 + "zyzzyva " * 60)
    dcfg = DataConfig(f"file:{path}", "bpe", 0.1, bpe_vocab_size=265)
    train, held_out = split_text(dcfg)
    assert train + held_out == path.read_text() and len(train) == int(len(path.read_text()) * 0.9)
    assert "zyzzyva" in held_out and "zyzzyva" not in train
    assert train_bpe(train, 265).ranks == load_text_data(dcfg).tokenizer.bpe.ranks
