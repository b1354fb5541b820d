"""The BPE tokenizer: hand-checked merges, a naive reference trainer, tiktoken equality, GPT-2's files,
round trips on arbitrary Unicode (hypothesis), streaming, and the file format's error handling."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.errors import ConfigError, DataError
from lab.tokenizer import (
    GPT2_PATTERN,
    GPT4_PATTERN,
    Tokenizer,
    clean_surrogates,
    count_pretokens,
    load,
    load_gpt2_files,
    load_tiktoken_file,
    merge_piece,
    save,
    split_for_workers,
    train_bpe,
)

REF = os.environ.get("LAB_REFERENCE_DATA")
needs_ref = pytest.mark.skipif(
    not REF or not Path(REF, "gpt2.tiktoken").exists(),
    reason="GPT-2 reference files not found: set LAB_REFERENCE_DATA to a directory with gpt2.tiktoken, "
    "gpt2_vocab.json and gpt2_merges.txt (.ci/run sets it to ../shared/data)",
)

SAMPLE = (
    "The quick brown fox jumps over the lazy dog. It's 2026; the dog's 3 pups weren't amused!\n"
    "def f(x):\n    return x ** 2  # square\n\n\tTabs\tand  double  spaces   here.\n"
    "Ünïcödé: 東京 café naïve — “quotes” 😀🎉 1234567 3.14159\r\nEnd"
)


def naive_train(text: str, vocab_size: int, pattern: str) -> list[tuple[bytes, bytes]]:
    """The textbook algorithm, rescanning every pre-token on every merge: the definition we test against."""
    words = [[bytes([x]) for x in p.encode("utf-8")] for p in regex.findall(pattern, text)]
    merges = []
    while 256 + len(merges) < vocab_size:
        counts = Counter()
        for w in words:
            counts.update(zip(w, w[1:]))
        if not counts:
            break
        best = max(counts, key=lambda pair: (counts[pair], pair))  # highest count, then greatest bytes
        merges.append(best)
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


def merge_bytes(tok: Tokenizer) -> list[tuple[bytes, bytes]]:
    return [(tok.token_bytes(a), tok.token_bytes(b)) for a, b in tok.merges]


@pytest.fixture(scope="module")
def trained():
    from lab.data.corpora import load_corpus

    text = load_corpus("pydocs").text[:300_000]
    return {p: train_bpe(text, 600, pattern=p, special_tokens=["<|endoftext|>"]) for p in ("gpt2", "gpt4")}


def test_hand_checked_three_merges():
    # "aaabdaaabac" is one pre-token. Pair counts: aa 4, ab 2, others 1 -> merge 1 is (a, a) = 256.
    # The word is then [aa, a, b, d, aa, a, b, a, c]: (aa, a) and (a, b) tie at 2, and the tie goes to the
    # greater pair of byte strings: b"aa" > b"a", so merge 2 is (aa, a) = 257 "aaa". Then (aaa, b) = 258.
    tok = train_bpe("aaabdaaabac", 259)
    assert tok.merges == [(97, 97), (256, 97), (257, 98)]
    assert tok.token_bytes(258) == b"aaab"
    for backend in ("python", "tiktoken"):
        assert tok.encode("aaabdaaabac", backend=backend) == [258, ord("d"), 258, ord("a"), ord("c")]


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN])
def test_trainer_equals_naive_reference(pattern):
    text = SAMPLE * 3 + "abab ababab aaaa aaaaa bbbb " * 5
    tok = train_bpe(text, 256 + 60, pattern=pattern)
    assert merge_bytes(tok) == naive_train(text, 256 + 60, pattern)


def test_trainer_equals_naive_reference_on_corpus():
    from lab.data.corpora import load_corpus

    text = load_corpus("pydocs").text[:20_000]
    tok = train_bpe(text, 256 + 120, pattern="gpt2")
    assert merge_bytes(tok) == naive_train(text, 256 + 120, GPT2_PATTERN)


def test_training_is_deterministic_and_ids_are_laid_out(trained):
    tok = trained["gpt2"]
    assert tok.vocab_size == 600
    assert tok.special_tokens == {"<|endoftext|>": 599}
    assert [tok.ranks[bytes([b])] for b in range(256)] == list(range(256))
    for k, (a, b) in enumerate(tok.merges):
        assert tok.ranks[tok.token_bytes(a) + tok.token_bytes(b)] == 256 + k
        assert a < 256 + k and b < 256 + k
    from lab.data.corpora import load_corpus

    again = train_bpe(load_corpus("pydocs").text[:300_000], 600, special_tokens=["<|endoftext|>"])
    assert again.merges == tok.merges


def test_counting_never_crosses_special_tokens():
    counts = count_pretokens("ab<|x|>cd", "gpt2", ["<|x|>"])
    assert counts == Counter({"ab": 1, "cd": 1})
    tok = train_bpe("ab<|x|>ab<|x|>ab", 258, special_tokens=["<|x|>"])
    assert tok.merges == [(97, 98)]  # "b<" and "|>" never formed: specials are cut out before counting
    assert tok.encode("ab<|x|>", allowed_special="all") == [256, 257]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_parallel_counting_equals_serial(pattern):
    from lab.data.corpora import load_corpus

    text = load_corpus("pydocs").text
    pieces = split_for_workers(text, 7)
    assert len(pieces) == 7 and "".join(pieces) == text
    serial = count_pretokens(text, pattern, workers=1)
    merged = Counter()
    for p in pieces:
        merged.update(count_pretokens(p, pattern, workers=1))
    assert merged == serial


def test_tiktoken_and_python_encoders_agree_on_corpora(trained):
    from lab.data.corpora import load_corpus

    text = load_corpus("pydocs").text[-200_000:] + load_corpus("pystdlib").text[:200_000]
    for tok in trained.values():
        ids = tok.encode(text)
        assert ids == tok.encode(text, backend="python")
        assert tok.decode(ids) == text


unicode_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), min_size=0, max_size=200
) | st.lists(
    st.sampled_from(
        [
            "a",
            " ",
            "  ",
            "\n",
            "\r\n",
            "\t",
            "東",
            "😀",
            "'s",
            "'LL",
            "12345",
            "é",
            "\u200b",
            "\x1c",
            "\ud800",
            "\udfff",
            "\ud83d",
            "\ude00",
            "\u0085",
            "\xa0",
            "<|endoftext|>",
        ]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=unicode_text)
def test_roundtrip_and_tiktoken_equality_on_random_strings(trained, s):
    for tok in trained.values():
        ids = tok.encode(s, allowed_special="all", backend="python")
        assert ids == tok.encode(s, allowed_special="all")  # tiktoken's Rust core on the same ranks
        assert tok.encode_ordinary(s, backend="python") == tok.encode_ordinary(s)
        assert tok.decode(ids) == clean_surrogates(s)
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in s):
            assert tok.decode(ids) == s


def test_lone_surrogates_become_replacement_characters(trained):
    tok = trained["gpt4"]
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(tok.encode("\ud83d\ude00")) == "😀"  # a pair written as two code points is joined


def test_very_long_runs_use_the_heap_merge_with_the_same_result(trained):
    tok = trained["gpt2"]
    for s in [" " * 5000, "a" * 3000, "ab" * 2000, "1" * 999, "é" * 700]:
        b = s.encode("utf-8")
        assert merge_piece(b, tok.ranks) == _rescan(b, tok.ranks)
        assert tok.encode(s, backend="python") == tok.encode(s)


def _rescan(piece: bytes, ranks) -> list[int]:
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while True:
        cands = [
            (ranks[parts[i] + parts[i + 1]], i)
            for i in range(len(parts) - 1)
            if parts[i] + parts[i + 1] in ranks
        ]
        if not cands:
            return [ranks[p] for p in parts]
        _, i = min(cands)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def test_special_tokens(trained):
    tok = trained["gpt2"]
    eot = tok.special_tokens["<|endoftext|>"]
    text = "one<|endoftext|>two"
    with pytest.raises(DataError, match="special token '<\\|endoftext\\|>'"):
        tok.encode(text)
    for backend in ("python", "tiktoken"):
        ids = tok.encode(text, allowed_special="all", backend=backend)
        assert ids.count(eot) == 1 and tok.decode(ids) == text
        ordinary = tok.encode_ordinary(text, backend=backend)
        assert eot not in ordinary and tok.decode(ordinary) == text
    with pytest.raises(ConfigError, match="not a special token"):
        tok.encode("x", allowed_special={"<|nope|>"})


def test_encode_iterable_equals_encode_at_random_cuts(trained):
    import random

    from lab.data.corpora import load_corpus

    text = load_corpus("pydocs").text[:120_000] + "  \n\n  x<|endoftext|>'ll  " + SAMPLE
    rng = random.Random(0)
    for tok in trained.values():
        want = tok.encode(text, allowed_special="all")
        for _ in range(3):
            cuts = sorted(rng.sample(range(len(text)), 400))
            chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
            assert list(tok.encode_iterable(chunks, allowed_special="all")) == want
        one_char = list(tok.encode_iterable(iter(SAMPLE * 100)))
        assert one_char == tok.encode(SAMPLE * 100)


@needs_ref
def test_gpt2_files_reproduce_gpt2_ids():
    import tiktoken

    from lab.data.corpora import load_corpus

    from_json = load_gpt2_files(Path(REF, "gpt2_vocab.json"), Path(REF, "gpt2_merges.txt"))
    from_ranks = load_tiktoken_file(Path(REF, "gpt2.tiktoken"))
    assert from_json.ranks == from_ranks.ranks and from_json.special_tokens == {"<|endoftext|>": 50256}
    assert len(from_json.merges) == 50000
    assert from_json.encode("Hello world", backend="python") == [15496, 995]
    reference = tiktoken.Encoding(
        "gpt2-from-file",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=from_ranks.ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    text = load_corpus("pydocs").text[:100_000] + SAMPLE + "<|endoftext|>"
    assert from_json.encode(text, allowed_special="all", backend="python") == reference.encode(
        text, allowed_special="all"
    )


def test_save_load_roundtrip(tmp_path, trained):
    tok = trained["gpt4"]
    save(tok, tmp_path / "tok")
    back = load(tmp_path / "tok")
    assert back.ranks == tok.ranks and back.special_tokens == tok.special_tokens
    assert back.pattern == GPT4_PATTERN and back.merges == tok.merges
    assert back.encode(SAMPLE) == tok.encode(SAMPLE)
    header = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert header["format"] == "lab-bpe" and header["version"] == 1
    # tiktoken's own loader reads our ranks file
    from tiktoken.load import load_tiktoken_bpe

    assert load_tiktoken_bpe(str(tmp_path / "tok" / "ranks.tiktoken")) == tok.ranks
    with pytest.raises(DataError, match="already exists"):
        save(tok, tmp_path / "tok")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: t[: len(t) // 2], "truncated|line"),
        (lambda t: t.replace("\n", "\n!!!notbase64 7\n", 1), r"line 2"),
        (lambda t: t.replace(" 300\n", " 301\n", 1), r"rank 301 is also given"),
        (lambda t: t[: t.rindex("\n", 0, -1) + 1], "does not match its header"),
    ],
)
def test_corrupted_ranks_file_is_an_error_naming_file_and_line(tmp_path, trained, damage, message):
    save(trained["gpt2"], tmp_path / "tok")
    ranks = tmp_path / "tok" / "ranks.tiktoken"
    ranks.write_text(damage(ranks.read_text()))
    with pytest.raises(DataError, match=message) as err:
        load(tmp_path / "tok")
    assert "ranks.tiktoken" in str(err.value)


def test_corrupted_header_and_missing_files(tmp_path, trained):
    save(trained["gpt2"], tmp_path / "tok")
    header = tmp_path / "tok" / "tokenizer.json"
    text = header.read_text()
    header.write_text(text[:40])
    with pytest.raises(DataError, match="tokenizer.json, line"):
        load(tmp_path / "tok")
    header.write_text(text.replace('"lab-bpe"', '"other"'))
    with pytest.raises(DataError, match="not a lab-bpe tokenizer header"):
        load(tmp_path / "tok")
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_bad_training_input():
    with pytest.raises(ConfigError, match="too small.*257"):
        train_bpe("abc", 256, special_tokens=["<|endoftext|>"])
    with pytest.raises(DataError, match="empty corpus"):
        train_bpe("", 300)
    with pytest.raises(ConfigError, match="not a valid regex"):
        train_bpe("abc", 300, pattern="(unclosed")
    with pytest.raises(ConfigError, match="integer"):
        train_bpe("abc", 300.5)


def test_ranks_must_cover_every_byte():
    ranks = {bytes([b]): b for b in range(255)}
    with pytest.raises(DataError, match="lack 1 of the 256"):
        Tokenizer(ranks)
    ok = {bytes([b]): b for b in range(256)}
    assert base64.b64encode(b"x")  # keep the import honest
    with pytest.raises(ConfigError, match="already a token's id"):
        Tokenizer(ok, special_tokens={"<s>": 3})


def test_truncating_a_long_run_equals_training_a_short_one(trained):
    from lab.data.corpora import load_corpus
    from lab.tokenizer import truncate

    text = load_corpus("pydocs").text[:300_000]
    short = train_bpe(text, 400)
    cut = truncate(trained["gpt2"], 400)
    assert cut.merges == short.merges and cut.ranks == short.ranks and cut.special_tokens == {}
    with pytest.raises(ConfigError, match="outside"):
        truncate(trained["gpt2"], 10_000)


def test_piece_decoder_shows_a_cut_character_on_the_token_that_completes_it():
    from lab.tokenizer import PieceDecoder

    emoji = "😀".encode()  # 4 bytes, one token each in a byte tokenizer
    dec = PieceDecoder(lambda i: bytes([i]), context=[ord("a")])
    assert dec.peek(emoji[0]) == "" and dec.peek(ord("b")) == "b"  # peeking does not advance
    assert [dec.next(b) for b in emoji] == ["", "", "", "😀"]
    assert dec.next(ord("z")) == "z"
