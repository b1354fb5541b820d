"""Text corpora that feed language-model training: embedded, local file, or a checksummed download.

A corpus is named by a spec string, the same one `--data` takes on the command line:

  pystdlib          the running Python's standard-library sources (*.py, ~30 MB), no network needed
  pydocs            the docstrings of those same files, extracted with `ast` (the modules are never imported)
  tinyshakespeare   Karpathy's char-rnn Tiny Shakespeare (~1 MB), downloaded once, checked against a sha256
                    and cached (nanoGPT's `shakespeare_char` corpus)
  file:PATH         any local UTF-8 text file: a regular file (not a device, pipe or directory) of at
                    most MAX_FILE_BYTES (1 GiB)

Every corpus carries the sha256 of its text, so a run records exactly which data it trained on (the
embedded corpora change with the Python version; the hash makes that visible).
Every problem with a corpus is a `DataError` with a one-line message the CLI prints as is.
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import http.client
import json
import os
import pathlib
import platform
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from lab.errors import DataError
from lab.fileio import atomic_write_text

__all__ = [
    "Corpus",
    "Download",
    "DOWNLOADS",
    "load_corpus",
    "corpus_names",
    "fetch",
    "default_cache_dir",
    "clear_cache",
]

# Directories of the stdlib tree that hold third-party packages, not the standard library.
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages"})
_EMBEDDED = ("pydocs", "pystdlib")
_CHUNK = 1 << 16
# The fields of an AST node that hold statements (or handlers / match cases, which hold statements).
_STATEMENT_FIELDS = ("body", "handlers", "orelse", "finalbody", "cases")


@dataclass(frozen=True)
class Corpus:
    """A loaded corpus: the text plus what a run needs to record about where it came from."""

    name: str  # the spec it was loaded from: "pystdlib", "pydocs", "tinyshakespeare" or "file:/abs/path"
    text: str
    sha256: str  # hex sha256 of text.encode("utf-8")
    source: str  # human description: stdlib path + Python version, URL, or file path
    n_documents: int  # files that contributed text (pystdlib/pydocs), else 1

    def __repr__(self) -> str:
        # The default repr would print 30 MB of text into a traceback or a log line.
        return (
            f"Corpus(name={self.name!r}, chars={len(self.text)}, sha256={self.sha256[:12]}..., "
            f"n_documents={self.n_documents}, source={self.source!r})"
        )


@dataclass(frozen=True)
class Download:
    """A corpus fetched from `url` once, cached as `filename`, and trusted only if it hashes to `sha256`."""

    url: str
    sha256: str
    filename: str


DOWNLOADS: dict[str, Download] = {
    "tinyshakespeare": Download(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
    ),
}


# Files that are not corpora but are fetched the same way (once, sha256-checked, cached).
ASSETS: dict[str, Download] = {
    # OpenAI's published GPT-2 ranks (r50k_base = GPT-2's vocabulary); the hash is the one tiktoken pins.
    "gpt2.tiktoken": Download(
        url="https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",
        sha256="306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        filename="gpt2.tiktoken",
    ),
}


def corpus_names() -> list[str]:
    """The named corpus specs (sorted); `file:PATH` is accepted besides these."""
    return sorted({*_EMBEDDED, *DOWNLOADS})


def _allowed() -> str:
    return ", ".join(corpus_names()) + ", or file:PATH"


def _fail(message: str) -> DataError:
    # The CLI prints a DataError as one line; collapse any newline a path or an OS message brings in.
    return DataError(" ".join(message.split()))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_corpus(spec: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """Load the corpus named by `spec` (see the module docstring for the allowed specs).

    `cache_dir` is only used by downloaded corpora (default: `default_cache_dir()`). The embedded corpora
    are built once per process and shared (the returned `Corpus` is immutable).
    """
    if not isinstance(spec, str):
        raise _fail(f"corpus spec must be a string, got {type(spec).__name__}; allowed: {_allowed()}")
    if spec.startswith("file:"):
        return _load_file_corpus(spec[len("file:") :])
    if spec in _EMBEDDED:
        return _load_stdlib(spec, _stdlib_root())
    if spec in DOWNLOADS:
        path = fetch(spec, cache_dir)
        download = DOWNLOADS[spec]
        text = _decode(path.read_bytes(), path)
        return _make_corpus(spec, text, f"{download.url} (a sha256-checked copy)", 1)
    raise _fail(f"unknown corpus {spec!r}; allowed: {_allowed()}")


def _make_corpus(name: str, text: str, source: str, n_documents: int) -> Corpus:
    if not text.strip():
        raise _fail(f"corpus {name} is empty or only whitespace ({source}); give a text file with content")
    return Corpus(name, text, _sha256(text.encode("utf-8")), source, n_documents)


def _decode(data: bytes, path: pathlib.Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(
            f"corpus file {path} is not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start}; "
            f"only UTF-8 text is allowed (convert it, e.g. iconv -t UTF-8)"
        ) from None


# --------------------------------------------------------------------------------------------- file:PATH


MAX_FILE_BYTES = 1 << 30  # file:PATH reads the whole file into memory (and tokenizes it): at most 1 GiB


def _load_file_corpus(raw_path: str) -> Corpus:
    if not raw_path:
        raise _fail("corpus spec 'file:' has no path; use file:PATH with a UTF-8 text file")
    try:
        path = pathlib.Path(raw_path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop (RuntimeError before 3.13), a NUL byte
        raise _fail(f"corpus path {raw_path!r} cannot be resolved ({e})") from None
    if path.is_dir():
        raise _fail(f"corpus path {path} is a directory, not a file; file:PATH needs one UTF-8 text file")
    if not path.exists():
        raise _fail(f"corpus file {path} does not exist; file:PATH needs an existing UTF-8 text file")
    if not path.is_file():  # /dev/zero, a FIFO, a socket: reading it would never end, or block
        raise _fail(
            f"corpus path {path} is not a regular file (a device, pipe or socket); file:PATH needs a regular "
            f"UTF-8 text file of at most {MAX_FILE_BYTES >> 30} GiB"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _fail(
                f"corpus file {path} is {size / (1 << 30):.1f} GiB; file:PATH allows at most "
                f"{MAX_FILE_BYTES >> 30} GiB ({MAX_FILE_BYTES} bytes)"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # the file may grow after stat: never read past the limit
        if len(data) > MAX_FILE_BYTES:
            raise _fail(
                f"corpus file {path} grew past {MAX_FILE_BYTES >> 30} GiB while being read; file:PATH allows at most {MAX_FILE_BYTES >> 30} GiB"
            )
    except OSError as e:
        reason = e.strerror or e
        raise _fail(f"cannot read corpus file {path}: {reason}; file:PATH needs a readable file") from None
    return _make_corpus(f"file:{path}", _decode(data, path), str(path), 1)


# ------------------------------------------------------------------------------ pystdlib and pydocs


def _stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def _stdlib_files(root: pathlib.Path) -> Iterator[tuple[str, bytes]]:
    """(relative POSIX path, raw bytes) of every *.py under `root`, sorted by that path."""
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place keeps os.walk out of third-party package trees entirely.
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]
        for filename in filenames:
            if filename.endswith(".py"):
                rels.append(pathlib.Path(dirpath, filename).relative_to(root).as_posix())
    # Sorting the relative paths makes the order independent of the filesystem's directory order.
    for rel in sorted(rels):
        yield rel, (root / rel).read_bytes()


def _docstrings(tree: ast.AST) -> Iterator[str]:
    """Module, class and function docstrings in source order (pre-order, unlike ast.walk's BFS order).

    Only statement lists are walked: a def or class can sit inside if/try/with/for/match blocks but never
    inside an expression, and skipping expressions halves the time over the whole stdlib.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                yield doc
        children: list[ast.AST] = []
        for field in _STATEMENT_FIELDS:
            children.extend(getattr(node, field, ()))
        stack.extend(reversed(children))


def _parse(text: str, rel: str) -> ast.Module | None:
    """Parse without importing or executing anything; None for files this Python cannot parse."""
    try:
        with warnings.catch_warnings():
            # Old escape sequences in test data files warn at parse time; that is noise here.
            warnings.simplefilter("ignore")
            # A leading BOM is legal in a source file but not in a str handed to the parser.
            return ast.parse(text.removeprefix("\ufeff"), filename=rel)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # The stdlib ships deliberately broken files (test data for the parser, Python-2 grammar samples).
        return None


def _build_stdlib_corpus(kind: str, root: str) -> Corpus:
    """Build `pystdlib` or `pydocs` from the *.py files under `root` (uncached)."""
    # Parsing ~1800 files allocates tens of millions of AST nodes, which keeps triggering the cyclic
    # collector for nothing (the trees hold no cycles and are freed by refcounting): pausing it saves ~30%.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _build_stdlib_corpus_gc_paused(kind, root)
    finally:
        if was_enabled:
            gc.enable()


def _build_stdlib_corpus_gc_paused(kind: str, root: str) -> Corpus:
    root_path = pathlib.Path(root)
    if not root_path.is_dir():
        raise _fail(f"standard library directory {root} not found; use file:PATH instead of {kind}")
    chunks: list[str] = []
    n_files = n_used = n_not_utf8 = n_unparsable = 0
    for rel, data in _stdlib_files(root_path):
        n_files += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # A few stdlib test files are deliberately latin-1 / koi8-r; skipping keeps the corpus UTF-8.
            n_not_utf8 += 1
            continue
        if kind == "pystdlib":
            # A header line per file keeps document boundaries visible to a model and to a reader.
            chunks.append(f"# file: {rel}\n{text}" + ("" if text.endswith("\n") else "\n"))
            n_used += 1
        else:
            tree = _parse(text, rel)
            if tree is None:
                n_unparsable += 1
                continue
            docs = list(_docstrings(tree))
            if docs:
                chunks.extend(docs)
                n_used += 1
    skipped = f"{n_not_utf8} skipped as not UTF-8"
    if kind == "pystdlib":
        body = "\n".join(chunks)  # each chunk ends with a newline, so files are separated by a blank line
    else:
        body = "\n\n".join(chunks)
        skipped += f", {n_unparsable} skipped as unparsable"
    what = "sources" if kind == "pystdlib" else "docstrings (via ast, not imported)"
    source = (
        f"Python {platform.python_version()} ({platform.python_implementation()}) standard library {what} "
        f"(the running interpreter's; its path is not recorded): {n_files} *.py files, {skipped}, {n_used} used"
    )
    return _make_corpus(kind, body, source, n_used)


# Building pydocs parses ~1800 files (~15 s on one core), and every `lab` process that trains on it would pay
# that again: the built text is also kept in the download cache, under a key of everything it is built from
# (the Python version and implementation, the stdlib directory, and each *.py file's path, size and mtime),
# and checked against its sha256 when read. A stale, damaged or unwritable entry only means a rebuild.
_STDLIB_CACHE_FORMAT = 1


def _stdlib_cache_path(kind: str, root: str) -> pathlib.Path | None:
    h = hashlib.sha256(
        f"{_STDLIB_CACHE_FORMAT}|{kind}|{root}|{platform.python_implementation()}|{sys.version}".encode()
    )
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
            for name in sorted(f for f in filenames if f.endswith(".py")):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{dirpath}/{name}|{st.st_size}|{st.st_mtime_ns};".encode())
    except OSError:
        return None
    return default_cache_dir() / "corpora" / f"{kind}-{h.hexdigest()[:24]}.json"


def _load_stdlib_uncached_in_process(kind: str, root: str) -> Corpus:
    path = _stdlib_cache_path(kind, root)
    if path is not None:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if _sha256(d["text"].encode("utf-8")) == d["sha256"]:
                return Corpus(kind, d["text"], d["sha256"], d["source"], d["n_documents"])
        except (OSError, ValueError, KeyError, TypeError, UnicodeError):
            pass  # not cached yet, or damaged: build it
    corpus = _build_stdlib_corpus(kind, root)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fields = ("text", "sha256", "source", "n_documents")
            atomic_write_text(path, json.dumps({k: getattr(corpus, k) for k in fields}))
        except OSError:
            pass  # an unwritable cache costs a rebuild next time, nothing else
    return corpus


# Keyed by (kind, root): at most once per process, and from the disk cache where it holds the same build.
_load_stdlib = functools.lru_cache(maxsize=None)(_load_stdlib_uncached_in_process)


def clear_cache(disk: bool = False) -> None:
    """Forget the in-process copies of the embedded corpora; with `disk`, also their built copies in the
    cache directory (the next load then rebuilds them from the standard library's files)."""
    _load_stdlib.cache_clear()
    if disk:
        for p in (default_cache_dir() / "corpora").glob("py*.json"):
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ downloads


def default_cache_dir() -> pathlib.Path:
    """Where downloads are cached: $LAB_CACHE if set, else ~/.cache/lab."""
    env = os.environ.get("LAB_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path("~/.cache/lab").expanduser()


def _file_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Path of the cached, sha256-checked copy of download `name`, downloading it the first time.

    A cached file is re-hashed on every use; if it no longer matches, this raises rather than silently
    downloading over it (the mismatch may be a local edit someone wants to keep). A download is written to
    a temporary file in the cache directory and renamed into place only once its hash is right, so a
    failed or interrupted download never leaves a file behind under the final name or a temporary one.
    """
    known = {**DOWNLOADS, **ASSETS}
    if name not in known:
        raise _fail(f"unknown download {name!r}; allowed: {', '.join(sorted(known))}")
    download = known[name]
    directory = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = directory / download.filename
    if target.exists():
        if not target.is_file():
            raise _fail(f"cache path {target} for {name} is not a file; delete it (rm -r {target}) and rerun")
        try:
            got = _file_sha256(target)
        except OSError as e:
            reason = e.strerror or e
            raise _fail(f"cannot read cached {name} at {target}: {reason}; delete it and rerun") from None
        if got != download.sha256:
            raise _fail(
                f"cached {name} at {target} is corrupted (sha256 {got}, expected {download.sha256}); "
                f"delete it (rm {target}) to download it again"
            )
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _fail(f"cannot create cache directory {directory}: {e.strerror or e}; set LAB_CACHE") from None
    _download(name, download, target)
    return target


def _download(name: str, download: Download, target: pathlib.Path) -> None:
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{download.filename}.", suffix=".part", dir=target.parent)
    except OSError as e:
        reason = e.strerror or e
        raise _fail(f"cannot write to cache directory {target.parent}: {reason}; set LAB_CACHE") from None
    tmp = pathlib.Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(download.url, timeout=60) as response:
                    for block in iter(lambda: response.read(_CHUNK), b""):
                        h.update(block)
                        out.write(block)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                # URLError subclasses OSError; its .reason is the useful part (DNS failure, refused, 404).
                reason = getattr(e, "reason", None) or e
                local = (
                    "--data file:PATH"
                    if name in DOWNLOADS
                    else f"LAB_REFERENCE_DATA=DIR (a directory with {name})"
                )
                raise _fail(
                    f"cannot download {name} from {download.url}: {reason}; offline, pass a local copy with {local}"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != download.sha256:
            raise _fail(
                f"download of {name} from {download.url} has sha256 {got}, expected {download.sha256}; "
                f"nothing was cached (the file changed upstream or the transfer was corrupted)"
            )
        os.replace(tmp, target)
    except BaseException:
        # Also on KeyboardInterrupt: a partial file must never survive.
        tmp.unlink(missing_ok=True)
        raise


def reference_file(name: str, source: str = "auto") -> pathlib.Path | None:
    """A pinned download used as a reference (e.g. GPT-2's ranks), found without the network unless asked.

    source "auto": $LAB_REFERENCE_DATA/<file>, else an already cached download, else None; "download":
    fetch it (sha256-checked, cached); "none": None; anything else is the path of a local copy.
    """
    known = {**DOWNLOADS, **ASSETS}
    if name not in known:
        raise _fail(f"unknown download {name!r}; allowed: {', '.join(sorted(known))}")
    if source in ("none", "download"):
        return fetch(name) if source == "download" else None
    if source == "auto":
        ref = os.environ.get("LAB_REFERENCE_DATA")
        paths = ([pathlib.Path(ref, known[name].filename)] if ref else []) + [
            default_cache_dir() / known[name].filename
        ]
        return next((p for p in paths if p.is_file()), None)
    path = pathlib.Path(source).expanduser()
    if not path.is_file():
        raise _fail(f"{name}: no such file {source!r}; allowed: auto, download, none, or the path of a copy")
    return path
