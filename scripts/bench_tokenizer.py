"""Benchmark: BPE training time against Hugging Face `tokenizers`, and encoding speed against tiktoken.

    python scripts/bench_tokenizer.py [--data pystdlib,tinyshakespeare] [--vocab 4096,8192] [--write]

For each corpus and vocabulary size, in one process and on the same text: our trainer (lab.tokenizer,
pure Python, pre-token counting on all cores) against HF's byte-level BPE trainer (Rust, threaded) when
`tokenizers` is installed (`pip install -e .[bench]`); the time ratio ours / HF; and how many of our
tokens HF's vocabulary also has (the two break count ties differently, so the vocabularies differ a little
at the tail). Then encoding throughput on the whole corpus: our pure-Python encoder with an empty and with
a warm pre-token cache, tiktoken's Rust core on our ranks, and HF's encoder. Each time is the best of
--repeats runs. MB are megabytes of UTF-8 text (10^6 bytes).

Bad input (an unknown option or corpus, a missing, empty or corrupted file, a vocabulary size below 256,
--repeats below 1) is refused in one line on stderr with exit status 2, before anything is trained: every
corpus is loaded before the first timing.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # this checkout's lab, and _script_args beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def corpus_text(name: str) -> tuple[str, str]:
    from lab.data.corpora import load_corpus

    if name == "tinyshakespeare" and os.environ.get("LAB_REFERENCE_DATA"):
        local = Path(os.environ["LAB_REFERENCE_DATA"], "tinyshakespeare.txt")
        if local.exists():  # the same bytes as the pinned download, without the network
            return "tinyshakespeare", load_corpus(f"file:{local}").text
    c = load_corpus(name)
    return c.name, c.text


def best_of(repeats: int, fn, *args, **kwargs):
    """(fastest of `repeats` timings of fn(*args, **kwargs) in seconds, its result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times), out


def hf_train(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    chunks = _chunks(text)
    tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    return tok


def _chunks(text: str, size: int = 1 << 20) -> list[str]:
    """~1 MB pieces cut after a newline, so no word is split between pieces."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def _cold_encode(tok, text: str) -> list[int]:
    """Our pure-Python encoder with an empty pre-token cache (a fresh copy of the tokenizer)."""
    from lab.tokenizer.bpe import Tokenizer

    return Tokenizer(tok.ranks, tok.pattern, tok.special_tokens).encode_ordinary(text, backend="python")


SMOKE_HELP = "tiny sizes, to check the script runs end to end (tests/test_readme.py); figures mean nothing; writes nothing"


def main(argv=None) -> int:
    from _script_args import Parser, at_least, int_list

    from lab.data.corpora import corpus_names
    from lab.errors import LabError

    p = Parser(prog="bench_tokenizer.py", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="pystdlib,tinyshakespeare",
        help=f"comma-separated corpora, of: {', '.join(corpus_names())}, file:PATH",
    )
    p.add_argument("--vocab", default="4096,8192", help="comma-separated vocabulary sizes, each >= 256")
    p.add_argument("--repeats", type=int, default=2, help="runs per timing (the best is kept)")
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = p.parse_args(argv)
    at_least(p, args, repeats=1)
    int_list(p, "--vocab", args.vocab, 256)  # 256 byte tokens, then the merges
    names = args.data.split(",")
    unknown = [n for n in names if n not in corpus_names() and not n.startswith("file:")]
    if unknown:
        p.error(f"--data: unknown corpus {unknown[0]!r}; allowed: {', '.join(corpus_names())}, or file:PATH")
    if args.smoke:
        args.data, args.vocab, args.repeats, args.write = "pydocs", "300", 1, False
        names = [args.data]
    corpora = []
    for name in names:  # all of them before any timing: a missing or corrupted file is refused first
        try:
            corpora.append(corpus_text(name))
        except LabError as e:
            p.exit(2, f"bench_tokenizer.py: error: --data {name}: {e}\n")

    from lab.tokenizer import byte_to_char, train_bpe
    from lab.tokenizer.bpe import Tokenizer

    try:
        import tokenizers  # noqa: F401

        have_hf = True
    except ImportError:
        have_hf = False
        print("Hugging Face `tokenizers` is not installed (pip install -e .[bench]); its columns are skipped")
    to_char = byte_to_char()

    train_rows, enc_rows = [], []
    for label, text in corpora:
        mb = len(text.encode("utf-8")) / 1e6
        ours_tok = None
        for vocab in [int(v) for v in args.vocab.split(",")]:
            t_ours, ours_tok = best_of(args.repeats, train_bpe, text, vocab, pattern="gpt2")
            row = {"corpus": label, "MB": mb, "vocab": vocab, "ours_s": t_ours}
            if have_hf:
                t_hf, hf = best_of(args.repeats, hf_train, text, vocab)
                hf_vocab = set(hf.get_vocab())
                made = ours_tok.vocab_size  # fewer than vocab where the corpus ran out of pairs
                ours_strings = ["".join(to_char[b] for b in ours_tok.token_bytes(i)) for i in range(made)]
                row.update(
                    hf_s=t_hf, ratio=t_ours / t_hf, shared=sum(s in hf_vocab for s in ours_strings) / made
                )
            train_rows.append(row)
            print(row, flush=True)

        # Encoding the whole corpus with the last-trained tokenizer.
        t_cold, ids = best_of(args.repeats, _cold_encode, ours_tok, text)
        warm = Tokenizer(ours_tok.ranks, ours_tok.pattern, ours_tok.special_tokens)
        warm.encode_ordinary(text, backend="python")
        t_warm, _ = best_of(args.repeats, warm.encode_ordinary, text, backend="python")
        t_tt, tt_ids = best_of(args.repeats, ours_tok.to_tiktoken().encode_ordinary, text)
        assert tt_ids == ids, "tiktoken and our encoder disagree"
        row = {"corpus": label, "MB": mb, "vocab": ours_tok.vocab_size, "tokens": len(ids),
               "python_cold": mb / t_cold, "python_warm": mb / t_warm, "tiktoken": mb / t_tt}  # fmt: skip
        if have_hf:
            lines = text.splitlines(keepends=True)  # HF's batch encoder is fastest on many short strings
            t_hf, _ = best_of(args.repeats, hf.encode_batch, lines)
            row["hf"] = mb / t_hf
        enc_rows.append(row)
        print(row, flush=True)

    md = render(train_rows, enc_rows, args, have_hf)
    print(md)
    if args.write:
        from lab.report import update_benchmarks

        print(f"wrote {update_benchmarks('tokenizer', md)}")
    return 0


def render(train_rows, enc_rows, args, have_hf) -> str:
    cmd = "python scripts/bench_tokenizer.py" + (
        f" --data {args.data}" if args.data != "pystdlib,tinyshakespeare" else ""
    )
    cmd += (f" --vocab {args.vocab}" if args.vocab != "4096,8192" else "") + " --write"
    lines = [
        "## BPE tokenizer: training and encoding",
        "",
        f"`{cmd}` ({os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"best of {args.repeats}; GPT-2 split pattern, no special tokens)",
        "",
        "| corpus | MB | vocab | ours (s) | HF tokenizers (s) | ours / HF | our tokens also in HF's vocab |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in train_rows:
        hf = f"{r['hf_s']:.2f} | {r['ratio']:.2f}x | {100 * r['shared']:.1f}%" if have_hf else "— | — | —"
        lines.append(f"| {r['corpus']} | {r['MB']:.1f} | {r['vocab']} | {r['ours_s']:.2f} | {hf} |")
    lines += [
        "",
        "Encoding the whole corpus (MB/s of UTF-8 text; one thread each except HF, whose `encode_batch` over lines is threaded):",
        "",
        "| corpus | vocab | tokens | ours, Python, empty cache | ours, Python, warm cache | tiktoken on our ranks | HF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in enc_rows:
        hf = f"{r['hf']:.1f}" if have_hf else "—"
        lines.append(
            f"| {r['corpus']} | {r['vocab']} | {r['tokens']:,} | {r['python_cold']:.1f} | {r['python_warm']:.1f} "
            f"| {r['tiktoken']:.1f} | {hf} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
