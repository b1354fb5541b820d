"""`lab tokenizer train / encode / decode / show`: round trips through files and stdin, and bad input
refused in one line with exit status 2, leaving no partial output directory."""

import io
import json
import shutil
import sys

import pytest

from lab import cli
from lab.tokenizer import load


def run(capsys, monkeypatch, *args, stdin=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(list(args))
    except SystemExit as e:
        code = e.code
    return code, *capsys.readouterr()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(
        ("The cat sat on the mat. The dog sat on the log. 12 + 34 = 46.\n" * 200) + "Ünïcödé 東京\n"
    )
    return path


def test_train_show_encode_decode(capsys, monkeypatch, tmp_path, corpus_file):
    out = tmp_path / "tok"
    code, stdout, _ = run(
        capsys, monkeypatch, "tokenizer", "train", "--data", f"file:{corpus_file}", "--vocab-size", "290",
        "--out", str(out), "--pattern", "gpt4", "--special", "<|endoftext|>",
    )  # fmt: skip
    assert code == 0 and "trained 290 tokens (33 merges, pattern gpt4)" in stdout
    tok = load(out)
    assert tok.special_tokens == {"<|endoftext|>": 289}

    code, stdout, _ = run(capsys, monkeypatch, "tokenizer", "show", "--tokenizer", str(out), "The cat sat")
    assert code == 0
    ids = tok.encode("The cat sat")
    assert [int(line.split()[0]) for line in stdout.splitlines()[:-1]] == ids
    assert f"{len(ids)} tokens, 11 bytes" in stdout.splitlines()[-1]

    text = "The dog sat. Ünïcödé 東京<|endoftext|>\n" * 500
    code, stdout, _ = run(
        capsys, monkeypatch, "tokenizer", "encode", "--tokenizer", str(out), "--allow-special", stdin=text
    )
    assert code == 0 and [int(x) for x in stdout.split()] == tok.encode(text, allowed_special="all")

    code, decoded, _ = run(capsys, monkeypatch, "tokenizer", "decode", "--tokenizer", str(out), stdin=stdout)
    assert code == 0 and decoded == text


def assert_refused(code, err, fragment):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lab: error: ") and fragment in lines[0], err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--vocab-size", "256", "--special", "<|e|>"], "--vocab-size 256 is too small"),
        (["--vocab-size", "many"], "invalid int value: 'many'"),
        (["--vocab-size", "300", "--pattern", "(unclosed"], "is not a valid regex"),
        (["--vocab-size", "300", "--pattern", "x*"], "matches the empty string"),
        (["--vocab-size", "300", "--pattern", "(a|aa)+$|."], "backtracks catastrophically"),
        (["--vocab-size", "300", "--data", "nope"], "unknown corpus 'nope'"),
        (["--vocab-size", "300", "--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_train_refuses_bad_input_before_writing(capsys, monkeypatch, tmp_path, corpus_file, extra, fragment):
    args = ["tokenizer", "train", "--data", f"file:{corpus_file}", "--out", str(tmp_path / "tok"), *extra]
    if "--data" in extra:
        args[2:4] = []
    code, _, err = run(capsys, monkeypatch, *args)
    assert_refused(code, err, fragment)
    assert not (tmp_path / "tok").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left either


def test_train_refuses_empty_corpus_and_existing_output(capsys, monkeypatch, tmp_path, corpus_file):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(
        capsys, monkeypatch, "tokenizer", "train", "--data", f"file:{empty}", "--vocab-size", "300",
        "--out", str(tmp_path / "tok"),
    )  # fmt: skip
    assert_refused(code, err, "empty")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("precious")
    code, _, err = run(
        capsys, monkeypatch, "tokenizer", "train", "--data", f"file:{corpus_file}", "--vocab-size", "300",
        "--out", str(keep),
    )  # fmt: skip
    assert_refused(code, err, "already exists and is not empty")
    assert (keep / "mine.txt").read_text() == "precious"


def test_encode_refuses_unallowed_special_and_bad_tokenizer_files(capsys, monkeypatch, tmp_path, corpus_file):
    out = tmp_path / "tok"
    run(
        capsys, monkeypatch, "tokenizer", "train", "--data", f"file:{corpus_file}", "--vocab-size", "280",
        "--out", str(out), "--special", "<|endoftext|>",
    )  # fmt: skip
    code, _, err = run(
        capsys, monkeypatch, "tokenizer", "encode", "--tokenizer", str(out), stdin="a<|endoftext|>"
    )
    assert_refused(code, err, "--allow-special")
    (out / "ranks.tiktoken").write_text("garbage\n")
    code, _, err = run(capsys, monkeypatch, "tokenizer", "show", "--tokenizer", str(out), "x")
    assert_refused(code, err, "ranks.tiktoken, line 1")
    code, _, err = run(
        capsys, monkeypatch, "tokenizer", "decode", "--tokenizer", str(tmp_path / "none"), stdin="1"
    )
    assert_refused(code, err, "does not exist")


def test_cli_strategies_match_the_sweep():
    from lab.train.sweep import STRATEGIES

    assert tuple(cli.STRATEGIES) == tuple(STRATEGIES)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, corpus_file):
    from lab.tokenizer import save, train_bpe

    tok = train_bpe(corpus_file.read_text(), 280, special_tokens=["<|endoftext|>"], workers=1)
    return save(tok, tmp_path_factory.mktemp("tok") / "tok")


def bytes_stdin(monkeypatch, data: bytes):
    # what a real stdin is: a text layer (surrogateescape under a UTF-8 locale) over the bytes
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), "utf-8", errors="surrogateescape"))


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"ab\xffcd", "byte 0xff at offset 2 (invalid start byte)"),
        (b"a" * 70000 + b"\xe2\x82x", "byte 0xe2 at offset 70000 (invalid continuation byte)"),
        (b"a" * 65535 + b"\xe2\x82", "byte 0xe2 at offset 65535 (unexpected end of data)"),
    ],
)
def test_encode_refuses_invalid_utf8_unless_asked_to_replace(capsys, monkeypatch, tok_dir, data, fragment):
    bytes_stdin(monkeypatch, data)
    code, out, err = run(capsys, monkeypatch, "tokenizer", "encode", "--tokenizer", str(tok_dir))
    assert_refused(code, err, f"stdin is not valid UTF-8: {fragment}; pass --errors replace")
    assert out == ""
    bytes_stdin(monkeypatch, data)
    code, out, _ = run(
        capsys, monkeypatch, "tokenizer", "encode", "--tokenizer", str(tok_dir), "--errors", "replace"
    )
    assert code == 0 and [int(x) for x in out.split()] == load(tok_dir).encode(
        data.decode("utf-8", "replace")
    )


def test_encode_reads_characters_cut_by_its_chunks(capsys, monkeypatch, tok_dir):
    text = "a" * 65535 + "é東" * 3
    bytes_stdin(monkeypatch, text.encode())
    code, out, _ = run(capsys, monkeypatch, "tokenizer", "encode", "--tokenizer", str(tok_dir))
    assert code == 0 and [int(x) for x in out.split()] == load(tok_dir).encode(text)


def test_show_refuses_an_argument_that_is_not_utf8(capsys, monkeypatch, tok_dir):
    text = b"ab\xffcd".decode("utf-8", "surrogateescape")  # how Python hands such an argument over
    code, _, err = run(capsys, monkeypatch, "tokenizer", "show", "--tokenizer", str(tok_dir), text)
    assert_refused(code, err, "the text is not valid UTF-8: byte 0xff at character 2")
    code, out, _ = run(
        capsys, monkeypatch, "tokenizer", "show", "--tokenizer", str(tok_dir), "--errors", "replace", text
    )
    ids = load(tok_dir).encode("ab\ufffdcd")
    assert code == 0 and [int(line.split()[0]) for line in out.splitlines()[:-1]] == ids
    assert f"{len(ids)} tokens, 7 bytes" in out.splitlines()[-1]


def _set(key, value):
    return lambda h: h.__setitem__(key, value)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (_set("merges", "x"), "field 'merges' must be a list of [left id, right id] pairs or null"),
        (lambda h: h["merges"].__setitem__(0, [1]), "merges[0] is [1], not a [left id, right id] pair"),
        (lambda h: h["merges"].__setitem__(3, [1, "a"]), 'merges[3] is [1, "a"], not a [left id, right id]'),
        (lambda h: h["merges"].__setitem__(2, [300, 1]), "merges[2] is [300, 1]: merge 2 may only join ids"),
        (
            lambda h: h["merges"].__setitem__(0, [0, 0]),
            "merges[0] is [0, 0], which makes no token, not id 256",
        ),
        (lambda h: h["merges"].reverse(), "not id 256; the merges do not belong to ranks.tiktoken"),
        (_set("pattern", "(unclosed"), "split pattern '(unclosed' is not a valid regex"),
        (_set("pattern", "(a|aa)+$|."), "split pattern '(a|aa)+$|.' backtracks catastrophically"),
        (_set("special_tokens", {"<|e|>": "x"}), "special token '<|e|>' has id 'x'"),
        (
            _set("special_tokens", {"<|e|>": 5}),
            "special token '<|e|>' has id 5, which is already a token's id",
        ),
        (_set("name", 5), "field 'name' must be a string or null"),
    ],
)
def test_a_tokenizer_with_a_malformed_header_is_refused_at_load(
    capsys, monkeypatch, tmp_path, tok_dir, change, fragment
):
    bad = shutil.copytree(tok_dir, tmp_path / "tok")
    header = json.loads((bad / "tokenizer.json").read_text())
    change(header)
    (bad / "tokenizer.json").write_text(json.dumps(header))
    code, _, err = run(capsys, monkeypatch, "tokenizer", "show", "--tokenizer", str(bad), "x")
    assert_refused(code, err, f"{bad / 'tokenizer.json'}: ")
    assert fragment in err, err
