"""Tests for lab.data.corpora: embedded stdlib corpora, file: corpora, checksummed downloads, errors."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from lab.data import corpora
from lab.data.corpora import DOWNLOADS, Download, corpus_names, fetch, load_corpus
from lab.errors import DataError, LabError

REPO = pathlib.Path(__file__).resolve().parents[2]
# Modules whose import has visible side effects (printing, opening a browser or a window): if pydocs ever
# imported what it reads, these would appear in sys.modules.
SIDE_EFFECT_MODULES = {"this", "antigravity", "__hello__", "__phello__", "turtle", "tkinter", "idlelib"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_one_line(err: pytest.ExceptionInfo[DataError], *needles: str) -> str:
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    assert isinstance(err.value, LabError)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def file_headers(text: str) -> list[str]:
    return [line[len("# file: ") :] for line in text.splitlines() if line.startswith("# file: ")]


# ------------------------------------------------------------------------------- the real stdlib


@pytest.fixture(scope="module")
def stdlib():
    """pystdlib and pydocs built once for this module from an empty cache, watching what gets imported."""
    corpora.clear_cache(disk=True)
    before = set(sys.modules)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        built = {name: load_corpus(name) for name in ("pystdlib", "pydocs")}
    return {
        **built,
        "new_modules": set(sys.modules) - before,
        "stdout": out.getvalue(),
    }


def test_stdlib_corpora_are_deterministic_across_rebuilds(stdlib):
    corpora.clear_cache(disk=True)
    for name in ("pystdlib", "pydocs"):
        again = load_corpus(name)
        assert again is not stdlib[name]  # really rebuilt, not served from the cache
        assert again == stdlib[name]
        assert again.sha256 == sha(again.text)
    # And cached in-process afterwards: the same object comes back.
    assert load_corpus("pydocs") is load_corpus("pydocs")


def test_a_built_stdlib_corpus_is_reused_from_disk_and_a_damaged_copy_is_rebuilt(stdlib, monkeypatch):
    built = []
    monkeypatch.setattr(corpora, "_build_stdlib_corpus", lambda *a: built.append(a) or stdlib["pydocs"])
    corpora.clear_cache()  # in-process only: the next process's view
    assert load_corpus("pydocs") == stdlib["pydocs"] and built == []  # read back, verified, not rebuilt
    (entry,) = (corpora.default_cache_dir() / "corpora").glob("pydocs-*.json")
    entry.write_text(entry.read_text(encoding="utf-8").replace("a", "b", 1), encoding="utf-8")
    corpora.clear_cache()
    assert load_corpus("pydocs") == stdlib["pydocs"] and len(built) == 1  # sha256 differs: rebuilt
    corpora.clear_cache()


def test_pystdlib_contents(stdlib):
    c = stdlib["pystdlib"]
    assert c.name == "pystdlib"
    assert c.sha256 == sha(c.text)
    headers = file_headers(c.text)
    assert headers == sorted(headers) and len(set(headers)) == len(headers)
    assert len(headers) == c.n_documents > 500
    assert {"os.py", "json/__init__.py", "collections/__init__.py"} <= set(headers)
    assert not any(part in h.split("/") for h in headers for part in ("site-packages", "dist-packages"))
    # The text of a real file appears verbatim after its header.
    os_source = pathlib.Path(os.__file__).read_text(encoding="utf-8")
    assert f"# file: os.py\n{os_source}" in c.text
    assert sys.version.split()[0] in c.source
    assert len(c.text.encode("utf-8")) > 10_000_000


def test_pydocs_contains_known_docstrings(stdlib):
    c = stdlib["pydocs"]
    assert c.name == "pydocs" and c.sha256 == sha(c.text)
    # Docstrings of modules already imported here, read from the objects the interpreter built.
    for doc in (json.dumps.__doc__, textwrap.__doc__, inspect.cleandoc.__doc__):
        assert inspect.cleandoc(doc) in c.text
    # Docstrings only: code that is not inside a docstring does not appear.
    assert "def makedirs(name, mode=0o777, exist_ok=False):" in stdlib["pystdlib"].text
    assert "def makedirs(" not in c.text
    assert "\n# file: os.py\n" not in c.text
    assert 0 < c.n_documents <= stdlib["pystdlib"].n_documents


def test_pydocs_does_not_import_the_modules(stdlib):
    assert not SIDE_EFFECT_MODULES & stdlib["new_modules"], stdlib["new_modules"]
    assert "Zen of Python" not in stdlib["stdout"] and "Hello world" not in stdlib["stdout"]
    # Importing even a fraction of ~1800 stdlib files would add hundreds of modules.
    assert len(stdlib["new_modules"]) < 20, sorted(stdlib["new_modules"])


# ------------------------------------------------------------------------- a fake stdlib tree


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "stdlib"
    sentinel = tmp_path / "IMPORTED"
    files = {
        "b.py": '"""Module b."""\nx = 1\n',
        "a/z.py": 'def f():\n    """Function f in a/z."""\n',
        "a.py": 'class A:\n    """Class A."""\n\n    async def g(self):\n        """Async g."""\n',
        "broken.py": 'def (:\n    """Never parsed."""\n',
        "nodoc.py": "y = 2",  # no trailing newline
        "sentinel.py": (
            '"""Sentinel module docstring."""\n'
            f"open({str(sentinel)!r}, 'w').close()\n"
            "raise SystemExit('imported')\n"
        ),
        "site-packages/evil.py": '"""Third-party package."""\n',
        "x/dist-packages/evil2.py": '"""Third-party package 2."""\n',
        "notes.txt": "not python",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "latin.py").write_bytes(b'"""caf\xe9"""\n')  # latin-1, not UTF-8
    return root, sentinel


def test_fake_stdlib_pystdlib_order_exclusions_and_skips(fake_stdlib):
    root, _ = fake_stdlib
    c = corpora._build_stdlib_corpus("pystdlib", str(root))
    # Sorted by relative POSIX path ("a.py" < "a/z.py" because "." < "/"); excluded trees and non-UTF-8 gone.
    assert file_headers(c.text) == ["a.py", "a/z.py", "b.py", "broken.py", "nodoc.py", "sentinel.py"]
    assert c.n_documents == 6
    assert "1 skipped as not UTF-8" in c.source
    assert "Third-party" not in c.text and "caf" not in c.text
    # Documents are separated by a blank line, including after a file without a trailing newline.
    assert "# file: nodoc.py\ny = 2\n\n# file: sentinel.py\n" in c.text


def test_fake_stdlib_pydocs_parses_without_importing(fake_stdlib):
    root, sentinel = fake_stdlib
    c = corpora._build_stdlib_corpus("pydocs", str(root))
    assert not sentinel.exists()
    assert c.text.split("\n\n") == [
        "Class A.",
        "Async g.",
        "Function f in a/z.",
        "Module b.",
        "Sentinel module docstring.",
    ]
    assert c.n_documents == 4  # files with at least one docstring
    assert "1 skipped as unparsable" in c.source and "1 skipped as not UTF-8" in c.source


def test_fake_stdlib_order_does_not_depend_on_directory_listing(fake_stdlib, monkeypatch):
    root, _ = fake_stdlib
    first = {k: corpora._build_stdlib_corpus(k, str(root)) for k in ("pystdlib", "pydocs")}
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):
        # Present every directory listing in reverse order, as a different filesystem might.
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            dirnames.reverse()
            yield dirpath, dirnames, filenames[::-1]

    monkeypatch.setattr(corpora.os, "walk", reversed_walk)
    for kind, corpus in first.items():
        assert corpora._build_stdlib_corpus(kind, str(root)) == corpus


# ------------------------------------------------------------------------------------ file:PATH


def test_file_corpus_round_trip(tmp_path):
    text = "héllo\r\nwörld ✓ 𝄞\n\tend"  # CRLF, multi-byte characters, no trailing newline: kept exactly
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    c = load_corpus(f"file:{path}")
    assert c.text == text
    assert c.sha256 == sha(text)
    assert c.name == f"file:{path.resolve()}"
    assert c.n_documents == 1 and str(path.resolve()) in c.source


def test_file_corpus_relative_and_home_paths(tmp_path, monkeypatch):
    (tmp_path / "rel.txt").write_text("relative", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    c = load_corpus("file:rel.txt")
    assert c.text == "relative" and c.name == f"file:{(tmp_path / 'rel.txt').resolve()}"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_corpus("file:~/rel.txt") == c


def test_unknown_corpus_names_the_allowed_ones():
    assert corpus_names() == ["pydocs", "pystdlib", "tinyshakespeare"]
    with pytest.raises(DataError) as err:
        load_corpus("shakespeare")
    assert_one_line(err, "'shakespeare'", "file:PATH", *corpus_names())


def test_file_errors_are_one_line_and_name_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as err:
        load_corpus(f"file:{missing}")
    assert_one_line(err, str(missing), "does not exist")

    with pytest.raises(DataError) as err:
        load_corpus(f"file:{tmp_path}")
    assert_one_line(err, str(tmp_path.resolve()), "directory")

    with pytest.raises(DataError) as err:
        load_corpus("file:")
    assert_one_line(err, "file:PATH")


def test_non_utf8_file_gives_the_byte_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(b"abc" + "é".encode("latin-1") + b"def")
    with pytest.raises(DataError) as err:
        load_corpus(f"file:{path}")
    assert_one_line(err, str(path), "UTF-8", "offset 3", "0xe9")


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n  "])
def test_empty_or_whitespace_file(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_corpus(f"file:{path}")
    assert_one_line(err, str(path), "empty")


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "secret.txt"
    path.write_text("secret", encoding="utf-8")
    if os.geteuid() == 0:
        # root reads through file modes, so simulate what opening an unreadable file raises.
        def denied(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))

        monkeypatch.setattr(corpora, "open", denied, raising=False)  # found before the builtin
    else:
        path.chmod(0)
    with pytest.raises(DataError) as err:
        load_corpus(f"file:{path}")
    assert_one_line(err, str(path), "Permission denied")


def test_path_with_newline_still_gives_one_line(tmp_path):
    missing = tmp_path / "two\nlines.txt"
    with pytest.raises(DataError) as err:
        load_corpus(f"file:{missing}")
    assert_one_line(err, "does not exist")


# ------------------------------------------------------------------------------------ downloads

SHAKESPEARE_PIN = DOWNLOADS["tinyshakespeare"]


def point_download_at(monkeypatch, src: pathlib.Path, sha256: str | None = None) -> Download:
    d = Download(src.as_uri(), sha256 or hashlib.sha256(src.read_bytes()).hexdigest(), "tinyshakespeare.txt")
    monkeypatch.setitem(DOWNLOADS, "tinyshakespeare", d)
    return d


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "upstream" / "input.txt"
    src.parent.mkdir()
    src.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n", encoding="utf-8")
    return src


def test_pinned_download_is_the_karpathy_file():
    assert SHAKESPEARE_PIN.url.startswith("https://raw.githubusercontent.com/karpathy/char-rnn/")
    assert SHAKESPEARE_PIN.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_download_is_fetched_once_and_cached(tmp_path, source, monkeypatch):
    d = point_download_at(monkeypatch, source)
    cache = tmp_path / "cache"
    path = fetch("tinyshakespeare", cache)
    assert path == cache / "tinyshakespeare.txt"
    assert path.read_bytes() == source.read_bytes()
    text = source.read_text(encoding="utf-8")
    source.unlink()  # a second fetch that touched the URL would now fail
    assert fetch("tinyshakespeare", cache) == path
    c = load_corpus("tinyshakespeare", cache_dir=cache)
    assert c.name == "tinyshakespeare" and c.text == text and c.sha256 == sha(text)
    assert d.url in c.source
    assert sorted(p.name for p in cache.iterdir()) == ["tinyshakespeare.txt"]  # no temp file left


def test_default_cache_dir_from_env_and_home(tmp_path, source, monkeypatch):
    point_download_at(monkeypatch, source)
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "env-cache"))
    assert fetch("tinyshakespeare") == tmp_path / "env-cache" / "tinyshakespeare.txt"
    monkeypatch.delenv("LAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch("tinyshakespeare") == tmp_path / "home" / ".cache" / "lab" / "tinyshakespeare.txt"


def test_checksum_mismatch_caches_nothing(tmp_path, source, monkeypatch):
    d = point_download_at(monkeypatch, source, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        fetch("tinyshakespeare", cache)
    assert_one_line(err, d.url, "0" * 64, hashlib.sha256(source.read_bytes()).hexdigest())
    assert list(cache.iterdir()) == []


def test_corrupted_cache_is_reported_not_replaced(tmp_path, source, monkeypatch):
    point_download_at(monkeypatch, source)
    cache = tmp_path / "cache"
    path = fetch("tinyshakespeare", cache)
    path.write_text("edited locally", encoding="utf-8")
    for load in (fetch, lambda name, cache: load_corpus(name, cache_dir=cache)):
        with pytest.raises(DataError) as err:
            load("tinyshakespeare", cache)
        assert_one_line(err, str(path), "delete")
    assert path.read_text(encoding="utf-8") == "edited locally"


@pytest.mark.parametrize("url", ["file:///nonexistent/lab/input.txt", "http://127.0.0.1:1/input.txt"])
def test_network_error_names_url_and_offline_alternative(tmp_path, monkeypatch, url):
    monkeypatch.setitem(DOWNLOADS, "tinyshakespeare", Download(url, "0" * 64, "tinyshakespeare.txt"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_corpus("tinyshakespeare", cache_dir=cache)
    assert_one_line(err, url, "--data file:PATH")
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("failure", [ConnectionResetError(104, "Connection reset"), KeyboardInterrupt()])
def test_interrupted_download_leaves_no_partial_file(tmp_path, source, monkeypatch, failure):
    point_download_at(monkeypatch, source)

    class Response:
        """Hands out one chunk, then fails the way a dropped connection or a Ctrl-C does."""

        calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            Response.calls += 1
            if Response.calls == 1:
                return b"First Cit"
            raise failure

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Response())
    cache = tmp_path / "cache"
    with pytest.raises(DataError if isinstance(failure, OSError) else KeyboardInterrupt):
        fetch("tinyshakespeare", cache)
    assert Response.calls == 2
    assert list(cache.iterdir()) == []


def test_unknown_download():
    with pytest.raises(DataError) as err:
        fetch("tinystories")
    assert_one_line(err, "'tinystories'", "tinyshakespeare")


def test_real_tinyshakespeare_matches_pinned_sha256(tmp_path, monkeypatch):
    ref = os.environ.get("LAB_REFERENCE_DATA")
    if not ref:
        pytest.skip("LAB_REFERENCE_DATA is not set (it names a directory holding tinyshakespeare.txt)")
    src = pathlib.Path(ref) / "tinyshakespeare.txt"
    point_download_at(monkeypatch, src, sha256=SHAKESPEARE_PIN.sha256)
    c = load_corpus("tinyshakespeare", cache_dir=tmp_path / "cache")
    assert c.sha256 == SHAKESPEARE_PIN.sha256  # the file is ASCII, so text and file hashes agree
    # nanoGPT's shakespeare_char/prepare.py: 1,115,394 characters, 65 distinct.
    assert len(c.text) == 1_115_394 and len(set(c.text)) == 65
    assert c.text.startswith("First Citizen:\n")


# ------------------------------------------------------------------------------------- layering


def test_corpora_and_tokenize_import_no_jax():
    # Load the two files on their own (lab/data/__init__ may grow modules that do use JAX).
    code = textwrap.dedent(
        """
        import importlib.util, sys
        for name in ("corpora", "tokenize"):
            spec = importlib.util.spec_from_file_location(f"_standalone_{name}", f"lab/data/{name}.py")
            module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        assert not any(m == "jax" or m.startswith("jax.") for m in sys.modules), "jax was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_reference_file_is_found_without_the_network_or_left_out(tmp_path, monkeypatch):
    ref, cache = tmp_path / "ref", tmp_path / "cache"
    ref.mkdir()
    cache.mkdir()
    monkeypatch.setenv("LAB_CACHE", str(cache))
    monkeypatch.delenv("LAB_REFERENCE_DATA", raising=False)
    monkeypatch.setattr(corpora, "fetch", lambda name, cache_dir=None: pytest.fail("no download asked for"))
    assert corpora.reference_file("gpt2.tiktoken") is None  # nothing at hand: left out
    (cache / "gpt2.tiktoken").write_text("cached")
    assert corpora.reference_file("gpt2.tiktoken") == cache / "gpt2.tiktoken"
    (ref / "gpt2.tiktoken").write_text("reference")
    monkeypatch.setenv("LAB_REFERENCE_DATA", str(ref))
    assert corpora.reference_file("gpt2.tiktoken", "auto") == ref / "gpt2.tiktoken"  # preferred to the cache
    assert corpora.reference_file("gpt2.tiktoken", "none") is None
    assert corpora.reference_file("gpt2.tiktoken", str(cache / "gpt2.tiktoken")) == cache / "gpt2.tiktoken"
    with pytest.raises(DataError, match="no such file"):
        corpora.reference_file("gpt2.tiktoken", str(tmp_path / "missing.tiktoken"))
    with pytest.raises(DataError, match="unknown download"):
        corpora.reference_file("gpt3.tiktoken")


def test_file_corpus_takes_regular_files_up_to_the_stated_limit(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"/dev/zero is not a regular file .* at most 1 GiB"):
        load_corpus("file:/dev/zero")  # would otherwise read for ever
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is not a regular file"):
        load_corpus(f"file:{fifo}")  # would otherwise block
    big = tmp_path / "big.txt"
    big.write_text("x" * 21)
    monkeypatch.setattr(corpora, "MAX_FILE_BYTES", 20)
    with pytest.raises(DataError, match=r"file:PATH allows at most 0 GiB \(20 bytes\)"):
        load_corpus(f"file:{big}")
    big.write_text("x" * 20)
    assert load_corpus(f"file:{big}").text == "x" * 20
