"""The `lab` command line.

    lab list                                   experiments and the claim each tests
    lab run e04 [--preset smoke|cpu|gpu] [--set train.steps=500 ...] [--seeds 3] [--data NAME]
    lab run all                                every experiment, then results/REPORT.md
    lab analyze e04 [--preset P | --results R] redraw plots and findings from files on disk only
    lab report [--preset P | --results R]      assemble REPORT.md from every findings.json
    lab compare DIR_A DIR_B [--out FILE]       two results trees side by side: which verdicts changed

`results/` holds the published runs: the cpu preset, nothing overridden. Any other run goes to `scratch/`
(ignored by git) unless `--results` says where: see lab.experiment.default_results.
    lab config e04 [--preset P] [--set ...]    print the resolved config (every settable key)
    lab test [PYTEST ARGS]                     ruff check + the test suite
    lab dashboard [--checkpoint RUN_DIR] [--preset cpu|smoke] [--port P]  the sampler dashboard (port 8765)
    lab tokenizer train --data NAME --vocab-size N --out DIR [--pattern gpt2|gpt4|REGEX] [--special S]
    lab tokenizer encode --tokenizer DIR       stdin -> token ids (streamed; --errors replace for non-UTF-8)
    lab tokenizer decode --tokenizer DIR       ids on stdin -> text
    lab tokenizer show --tokenizer DIR "text"  each token of "text" with its id

Bad input (unknown experiment, key or value, missing or bad data, a results directory written by a
different config) is reported in one line on stderr with exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from lab import config as config_lib
from lab import experiment as E
from lab.errors import ConfigError, DataError, LabError
from lab.runs import lock

# Kept here rather than imported from lab.train.sweep so that `lab tokenizer ...` never imports JAX (a
# process with JAX loaded must not fork, and tokenizer training forks workers); a test holds it equal.
STRATEGIES = ("auto", "vmap", "shard", "loop")

ROOT = Path(__file__).resolve().parent.parent


def _registry() -> dict[str, E.Experiment]:
    """The experiments package's registry: the CLI is the one place that names the package."""
    import experiments

    return E.registry(experiments)


def _reported() -> list[E.Experiment]:
    """The experiments REPORT.md covers: all but the template."""
    return [e for e in _registry().values() if not e.is_template]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage first)
        self.exit(2, f"lab: error: {message} (see `{self.prog} --help`)\n")


def _common_results(p):
    p.add_argument("--results", type=Path, default=E.RESULTS, help="results root (default: results/)")


def _results_for_preset(p):
    """`--results`, or by `--preset` the root `lab run` writes that preset to (E.default_results)."""
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results root (default: results/ for the cpu preset, scratch/<preset> for another)",
    )
    p.add_argument("--preset", default=E.DEFAULT_PRESET, help="which preset's default root (see `lab run`)")


def _root(args) -> Path:
    if args.results is not None:
        return args.results
    presets = sorted({p for e in _registry().values() for p in e.presets})
    if args.preset not in presets:
        raise ConfigError(f"unknown preset {args.preset!r}; allowed: {', '.join(presets)}")
    return E.default_results(args.preset)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lab", description="Sixteen LLM-engineering projects, built, broken and measured.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="list experiments and their claims").set_defaults(func=cmd_list)

    def config_args(p):
        p.add_argument("experiment", help="an id like e04, a full name, or 'all'")
        p.add_argument("--preset", default=E.DEFAULT_PRESET, help="smoke | cpu (default) | gpu")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. train.steps=500 (repeatable)",
        )
        p.add_argument("--seeds", type=int, default=None, help="number of seeds per variant")
        p.add_argument(
            "--data",
            default=None,
            help="corpus: pydocs | pystdlib | tinyshakespeare | file:PATH (a regular UTF-8 text file of at "
            "most 1 GiB)",
        )

    p = sub.add_parser("run", help="train, checkpoint and analyze")
    config_args(p)
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results root (default: results/ for the cpu preset with nothing overridden, which is what is "
        "published; scratch/<preset> for another preset; scratch/<preset>+<hash> with overrides)",
    )
    p.add_argument("--fresh", action="store_true", help="discard this experiment's results and start over")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="how sweeps use devices: auto (default), vmap, shard or loop",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="join a job of several processes (jax.distributed) whose process 0 listens at HOST:PORT; with "
        "--num-processes and --process-id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)",
    )
    p.add_argument(
        "--num-processes", type=int, default=None, help="processes in the job (with --coordinator)"
    )
    p.add_argument(
        "--process-id", type=int, default=None, help="this process's index, 0.. (with --coordinator)"
    )
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write the published results/ although tracked code has uncommitted changes (recorded in "
        "config.json; without it such a run is refused, so the commit recorded is the code that ran)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("analyze", help="redraw plots and findings from files on disk")
    p.add_argument("experiment")
    _results_for_preset(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="write results/REPORT.md from every findings.json")
    _results_for_preset(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two results trees side by side: both verdicts, and which changed")
    p.add_argument("a", type=Path, metavar="DIR_A", help="a results tree, e.g. results")
    p.add_argument("b", type=Path, metavar="DIR_B", help="another, e.g. scratch/gpu")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the Markdown to FILE instead of stdout")
    p.add_argument(
        "--fail-on-change", action="store_true", help="exit 1 if a verdict present in both changed"
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("config", help="print the resolved config")
    config_args(p)
    p.set_defaults(func=cmd_config)

    add_tokenizer_commands(sub)

    p = sub.add_parser("dashboard", help="serve the interactive sampler dashboard on 127.0.0.1")
    p.add_argument("--checkpoint", type=Path, default=None, help="a run directory of a text model (default: "
                   "the dashboard's own model, trained on first use)")  # fmt: skip
    p.add_argument("--preset", default="cpu", help="size of the default model: cpu (the default; about 2 "
                   "minutes of training on 2 cores) | smoke (seconds; writes gibberish; for tests)")  # fmt: skip
    p.add_argument("--member", type=int, default=0, help="which member (seed) of the run's sweep")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    p.add_argument("--max-tokens", type=int, default=256, help="longest generation a request may ask for")
    p.add_argument("--max-concurrent", type=int, default=2, help="generations allowed at once")
    p.add_argument("--scratch", type=Path, default=E.SCRATCH, help="where the default model is kept, under "
                   "dashboard/PRESET (default: scratch/, which git ignores)")  # fmt: skip
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("test", help="ruff check, then pytest (extra arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_test)
    return parser


def add_tokenizer_commands(sub) -> None:
    tok = sub.add_parser("tokenizer", help="train, inspect and use byte-level BPE tokenizers")
    tsub = tok.add_subparsers(dest="tokenizer_command", required=True, parser_class=_Parser)

    p = tsub.add_parser("train", help="train a byte-level BPE on a corpus and save it to a directory")
    p.add_argument("--data", required=True, help="corpus: pydocs | pystdlib | tinyshakespeare | file:PATH")
    p.add_argument("--vocab-size", type=int, required=True, help="256 bytes + merges + special tokens")
    p.add_argument("--out", type=Path, required=True, help="new directory to write the tokenizer to")
    p.add_argument("--pattern", default="gpt2", help="split pattern: gpt2 (default), gpt4, or a regex")
    p.add_argument("--special", action="append", default=[], help="a special token, e.g. '<|endoftext|>'")
    p.add_argument(
        "--workers", type=int, default=None, help="processes for pre-tokenization (default: cores)"
    )
    p.set_defaults(func=cmd_tokenizer_train)

    for name, helptext, func in (
        ("encode", "encode stdin to token ids (streamed)", cmd_tokenizer_encode),
        ("decode", "decode token ids on stdin to text", cmd_tokenizer_decode),
        ("show", "show each token of a text with its id", cmd_tokenizer_show),
    ):
        p = tsub.add_parser(name, help=helptext)
        p.add_argument(
            "--tokenizer",
            type=Path,
            required=True,
            help="a directory from `train`, a .tiktoken file, or gpt2 (GPT-2's ranks, downloaded once)",
        )
        if name == "show":
            p.add_argument("text", help="the text to tokenize")
        if name != "decode":
            p.add_argument(
                "--allow-special", action="store_true", help="encode special-token strings as one token"
            )
            p.add_argument(
                "--errors",
                choices=("strict", "replace"),
                default="strict",
                help="input that is not valid UTF-8: strict refuses it (default), replace encodes U+FFFD",
            )
        p.set_defaults(func=func)


def cmd_tokenizer_train(args) -> int:
    import time

    from lab.data.corpora import load_corpus
    from lab.tokenizer import compile_pattern, describe, save, train_bpe

    # Everything that can be refused is refused before the (long) training starts.
    if args.vocab_size < 256 + len(set(args.special)):
        raise ConfigError(
            f"--vocab-size {args.vocab_size} is too small: at least 256 bytes + {len(set(args.special))} "
            f"special tokens = {256 + len(set(args.special))}"
        )
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    compile_pattern(args.pattern)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ConfigError(f"--out {args.out} already exists and is not empty; choose a new directory")
    config_lib.check_path("--out", args.out, write=True)  # a directory that can be made, before training
    corpus = load_corpus(args.data)
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=args.vocab_size, desc="merges", unit="tok", disable=not sys.stderr.isatty()) as bar:
        tok = train_bpe(
            corpus.text,
            args.vocab_size,
            pattern=args.pattern,
            special_tokens=args.special,
            workers=args.workers,
            name=args.out.name,
            progress=lambda done, total: bar.update(256 + done - bar.n),
        )
    seconds = time.perf_counter() - t0
    save(tok, args.out)
    info = describe(tok)
    print(
        f"trained {info['vocab_size']} tokens ({len(tok.merges)} merges, pattern {info['pattern']}) on "
        f"{corpus.name} ({len(corpus.text) / 1e6:.1f}M characters) in {seconds:.1f} s -> {args.out}"
    )
    if tok.vocab_size < args.vocab_size:
        print(f"note: the corpus ran out of pairs; {tok.vocab_size} < --vocab-size {args.vocab_size}")
    return 0


def _load_tokenizer(path):
    """A tokenizer directory or .tiktoken file; `gpt2` names GPT-2's published ranks (a sha256-pinned
    download, found in $LAB_REFERENCE_DATA or the cache first)."""
    from lab.tokenizer import load

    if str(path) == "gpt2" and not Path(path).exists():
        from lab.data.corpora import fetch, reference_file

        path = reference_file("gpt2.tiktoken") or fetch("gpt2.tiktoken")
    return load(path)


class NotUtf8Error(DataError):
    """Input bytes that are not UTF-8, refused under --errors strict."""


def _stdin_chunks(errors: str):
    """stdin as text, decoded from its bytes as UTF-8 (the text layer's surrogateescape would let invalid
    bytes through as lone surrogates, which encode then turns into U+FFFD unseen). With errors="strict" a
    byte that is not UTF-8 is a DataError naming its offset."""
    import codecs

    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream with no bytes under it (tests hand in a StringIO)
        yield from iter(lambda: sys.stdin.read(1 << 16), "")
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0  # bytes read before the current chunk
    while True:
        chunk = raw.read(1 << 16)
        pending = decoder.getstate()[0]  # bytes of a character cut by the previous chunk
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            data = pending + chunk
            at = offset - len(pending) + e.start
            raise NotUtf8Error(
                f"stdin is not valid UTF-8: byte {data[e.start]:#04x} at offset {at} ({e.reason}); "
                f"pass --errors replace to encode U+FFFD in place of such bytes"
            ) from None
        offset += len(chunk)
        if text:
            yield text
        if not chunk:
            return


def _argument_text(text: str, errors: str) -> str:
    """A command-line argument as UTF-8 text: Python hands bytes that are not UTF-8 over as lone surrogates
    U+DC80..U+DCFF (surrogateescape); they are refused, or with errors="replace" become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as e:
        if errors == "replace":
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        ch = ord(text[e.start])
        what = f"byte {ch - 0xDC00:#04x}" if 0xDC80 <= ch <= 0xDCFF else f"lone surrogate U+{ch:04X}"
        raise NotUtf8Error(
            f"the text is not valid UTF-8: {what} at character {e.start}; pass --errors replace to use "
            f"U+FFFD in its place"
        ) from None


def cmd_tokenizer_encode(args) -> int:
    tok = _load_tokenizer(args.tokenizer)
    allowed = "all" if args.allow_special else "none"
    out, line = sys.stdout, []
    try:
        for i in tok.encode_iterable(_stdin_chunks(args.errors), allowed_special=allowed):
            line.append(str(i))
            if len(line) >= 4096:
                out.write(" ".join(line) + " ")
                line = []
    except NotUtf8Error:
        raise
    except DataError as e:
        raise DataError(f"{e} (on the command line: --allow-special)") from None
    out.write(" ".join(line) + "\n")
    return 0


def cmd_tokenizer_decode(args) -> int:
    tok = _load_tokenizer(args.tokenizer)
    try:
        words = sys.stdin.read().split()
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"stdin is not valid UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start}); token ids are "
            "integers separated by spaces"
        ) from None
    try:
        ids = [int(w) for w in words]
    except ValueError:
        bad = next(w for w in words if not _is_int_text(w))
        raise ConfigError(f"token ids must be integers separated by spaces, got {bad[:30]!r}") from None
    try:
        sys.stdout.write(tok.decode(ids))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return 0


def _is_int_text(word: str) -> bool:
    """Whether int() reads `word` ("--5" and "²" pass str.isdigit tests but are not integers)."""
    try:
        int(word)
        return True
    except ValueError:
        return False


def cmd_tokenizer_show(args) -> int:
    tok = _load_tokenizer(args.tokenizer)
    text = _argument_text(args.text, args.errors)
    pieces = tok.tokens(text, allowed_special="all" if args.allow_special else "none")
    for i, b in pieces:
        print(f"{i:>7}  {b.decode('utf-8', errors='backslashreplace')!r}")
    n_bytes = len(text.encode("utf-8"))
    print(f"{len(pieces)} tokens, {n_bytes} bytes, {n_bytes / max(len(pieces), 1):.2f} bytes/token ({tok!r})")
    return 0


def cmd_dashboard(args) -> int:
    if args.preset not in DASHBOARD_PRESETS:
        raise ConfigError(
            f"unknown preset {args.preset!r} for the dashboard; allowed: {', '.join(DASHBOARD_PRESETS)}"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    if not args.host.strip():  # "" binds every interface; say 0.0.0.0 to mean that
        raise ConfigError("--host must name an address (127.0.0.1, or 0.0.0.0 for every interface), got ''")
    if not 1 <= args.max_tokens <= 4096:
        raise ConfigError(f"--max-tokens must be in [1, 4096], got {args.max_tokens}")
    if not 1 <= args.max_concurrent <= 64:
        raise ConfigError(f"--max-concurrent must be in [1, 64], got {args.max_concurrent}")
    from lab.runtime import init_jax

    init_jax()
    from lab.infer.dashboard import make_server
    from lab.infer.load import load_text_model

    run_dir, note, prompt = args.checkpoint, "", "def "
    if run_dir is None:  # the default model (e05's cpu-preset model is smaller-budget and writes worse text)
        run_dir = args.scratch / "dashboard" / args.preset
        train_default_model(run_dir, args.preset, progress=sys.stderr.isatty())
        note = DASHBOARD_PRESETS[args.preset]["note"]
        prompt = "Return the "  # docstrings (pydocs) rarely hold code; they often start so
    model = load_text_model(run_dir, args.member)
    try:
        server = make_server(
            model, args.host, args.port, args.max_tokens, args.max_concurrent, note=note, prompt=prompt
        )
    except OSError as e:
        raise ConfigError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror or e}); try another --port"
        ) from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"serving {model.description}", *([note] if note else []), sep="\n")
    print(f"open http://{args.host}:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    _stop_on_signals()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the server cleanly, even where SIGINT was inherited as ignored (a
    process started in the background by a shell, or by a pytest-xdist worker)."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


_BETTER = ("For better text, train project 5's model on an accelerator (`./lab.sh run e05 --preset gpu`) and "
           "serve it with --checkpoint scratch/gpu/e05_sampling/runs/lm, or pass --checkpoint RUN_DIR with any "
           "text model's run.")  # fmt: skip
# The dashboard's default model at each --preset: the sizes of lab.model.PRESETS[preset] and
# lab.train.config.TRAIN_PRESETS[preset] (TrainConfig() where there is none) with `train` replaced, always
# byte-level on `pydocs` (needs no network). `takes` and `note` are what the user is told.
DASHBOARD_PRESETS = {
    "cpu": {
        "train": dict(steps=4000, batch_size=16, lr=6e-3, warmup_steps=100, eval_every=500, ckpt_every=500),
        "takes": "about 2 minutes on 2 cores",
        "note": f"This is the dashboard's default model, trained for about 2 minutes on a CPU. {_BETTER}",
    },
    "smoke": {
        "train": {},
        "takes": "seconds",
        "note": "This is the smoke-test model (seconds of training): it writes gibberish. Restart without "
        f"--preset smoke for the default model (about 2 minutes of training on a CPU). {_BETTER}",
    },
}


def train_default_model(run_dir: Path, preset: str = "cpu", progress: bool = True) -> Path:
    """The dashboard's default model at `preset` (DASHBOARD_PRESETS) in `run_dir`: trained once through the
    one training driver, resumed if interrupted, then reused as it is (without rebuilding the corpus). A model
    stored there by a different config (an older lab's default, say) is refused in one line saying what to do.
    """
    import json

    from lab.errors import CheckpointError
    from lab.fileio import read_json
    from lab.model import PRESETS, ModelConfig
    from lab.train import checkpoint as ckpt
    from lab.train.config import TRAIN_PRESETS, TrainConfig

    run_dir = Path(run_dir)
    model = PRESETS[preset]
    tcfg = TRAIN_PRESETS.get(preset, TrainConfig()).replace(**DASHBOARD_PRESETS[preset]["train"])

    def refuse(why: str):
        raise CheckpointError(
            f"{run_dir} holds a default model {why}: delete it to train this version's (rm -r {run_dir}), "
            f"or serve it as it is with --checkpoint {run_dir}"
        )

    def differ(have: dict, want: dict):  # refuse if they differ, naming the first differences
        d = config_lib.diff(have, want)
        if d:
            refuse(f"trained with a different config ({'; '.join(d[:2])}{'; ...' if len(d) > 2 else ''}; "
                   "stored vs now)")  # fmt: skip

    if (run_dir / "config.json").is_file():  # check what is stored before anything is loaded or trained
        try:
            stored = read_json(run_dir / "config.json")["config"]
            have = {
                k: config_lib.fill_defaults(stored[k], c)
                for k, c in (("model", ModelConfig), ("train", TrainConfig))
            }
        except (OSError, ValueError, KeyError, TypeError):
            refuse("whose config.json is unreadable")
        want = {"model": config_lib.to_dict(model), "train": config_lib.to_dict(tcfg)}
        for d in (have, want):
            d["model"].pop("vocab_size", None)  # the tokenizer's, known once the corpus is loaded
        differ(have, want)
        if (run_dir / "checkpoints").is_dir():
            mngr = ckpt.manager(run_dir / "checkpoints")
            try:
                if (mngr.latest_step() or 0) >= tcfg.steps:
                    return run_dir
            finally:
                mngr.close()
    from lab.data.pipeline import DataConfig, text_lm
    from lab.train import SweepSpec, members_grid, train_sweep
    from lab.train.loop import run_config

    takes = DASHBOARD_PRESETS[preset]["takes"]
    if (run_dir / "checkpoints").is_dir():
        print(
            f"resuming the training of the {preset} default model in {run_dir} ({takes} in all)", flush=True
        )
    else:
        print(
            f"no trained model yet: training the {preset} default model into {run_dir} ({takes}, once)",
            flush=True,
        )
    lm = text_lm(DataConfig("pydocs"), model)
    spec = SweepSpec.text(lm, tcfg, members_grid([0], [tcfg.lr]))
    try:
        train_sweep(run_dir, spec, progress=progress, desc=f"dashboard {preset} model")
    except CheckpointError:  # e.g. an unfinished model of another corpus (another Python's standard library)
        have = read_json(run_dir / "config.json")["config"] if (run_dir / "config.json").is_file() else None
        if have is None:
            raise
        differ(have, json.loads(json.dumps(run_config(spec))))  # as JSON sees it: tuples are lists
        raise
    return run_dir


def cmd_list(args) -> int:
    for exp in _registry().values():
        note = " (template: the pattern for a new experiment)" if exp.is_template else ""
        print(f"{exp.id}  {exp.name:<22} {exp.claim}{note}")
    return 0


def cmd_config(args) -> int:
    for exp in E.find(_registry(), args.experiment):
        cfg = E.resolve_config(exp, args.preset, args.set, args.seeds, args.data)
        print(f"# {exp.name} --preset {args.preset}")
        for c in (cfg, _run_settings(args.set)):  # the experiment's keys, then mesh.* (any experiment)
            for key in config_lib.keys(c):
                value = c
                for part in key.split("."):
                    value = getattr(value, part)
                per_run = exp.per_run.get(key) if c is cfg else None
                print(f"{key} = {value}" + (f"  # set for each run from {per_run}" if per_run else ""))
    return 0


def _check_results(root: Path, write: bool) -> None:
    """Refuse a `--results` root that is not a directory (or, to write, cannot be made or written) in one
    line, before anything is written."""
    config_lib.check_path("--results", root, write)


def _check_clean_for_published(results: Path, allow_dirty: bool) -> None:
    """Published results come from a clean commit (DESIGN, convention 13): a run into this checkout's
    results/ from a tree whose tracked code has uncommitted changes is refused unless --allow-dirty."""
    from lab.provenance import changed_files

    if allow_dirty or Path(results).resolve() != (ROOT / E.RESULTS).resolve():
        return
    changed = changed_files()
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ConfigError(
            f"the published results/ are written only from a clean commit, but {len(changed)} tracked "
            f"file(s) have uncommitted changes ({shown}); commit them, write elsewhere with --results DIR, "
            "or pass --allow-dirty (recorded in config.json)"
        )


def _run_settings(sets):
    """The RUN_SECTIONS (lab.experiment) that `--set` assigns, e.g. mesh.data=4: settings every experiment
    accepts about how it runs, parsed and checked like any config."""
    from dataclasses import make_dataclass

    from lab.train.mesh import MeshConfig

    sections = {"mesh": MeshConfig}
    assert set(sections) == set(E.RUN_SECTIONS)
    cls = make_dataclass("RunSettings", [(k, v, v()) for k, v in sections.items()], frozen=True)
    return config_lib.apply_overrides(cls(), [a for a in sets if a not in E.own_sets(sets)])


def _cpu_devices(mesh, num_processes: int | None) -> int | None:
    """Host devices per process for a CPU run: exactly the mesh asked for (sweep x data x fsdp, shared out
    over the processes), unless LAB_CPU_DEVICES says otherwise; None for the default
    (lab.runtime.default_cpu_devices)."""
    if mesh.is_default or os.environ.get("LAB_CPU_DEVICES"):
        return None
    want = (mesh.sweep or 1) * mesh.data * mesh.fsdp
    return max(1, want // (num_processes or 1))


def cmd_run(args) -> int:
    exps = E.find(_registry(), args.experiment)
    if args.results is None:
        args.results = E.default_results(args.preset, args.set, args.seeds, args.data)
    _check_results(args.results, write=True)
    _check_clean_for_published(args.results, args.allow_dirty)
    # Resolve and check every config before anything trains or writes.
    resolved = [(exp, E.resolve_config(exp, args.preset, args.set, args.seeds, args.data)) for exp in exps]
    for exp, cfg in resolved:
        E.write_config(exp, cfg, exp.out_dir(args.results), args.preset, args.fresh, write=False)
        if exp.check is not None:
            exp.check(cfg)
    settings = _run_settings(args.set)
    from lab.runtime import init_jax, process_args

    # the flags, or JAX's variables: checked now, and how many processes share the mesh
    flags = (args.coordinator, args.num_processes, args.process_id)
    init_jax(_cpu_devices(settings.mesh, process_args(*flags)[1]), *flags)
    from lab.fileio import is_writer
    from lab.ops.long_attention import fused_choice
    from lab.train.memory import check_config_fits
    from lab.train.mesh import check_config

    try:
        fused_choice()  # read when a fused model first runs: checked before anything trains
    except ValueError as e:
        raise ConfigError(str(e)) from None

    for exp, cfg in resolved:  # sizes that cannot fit in memory are refused before anything is written
        check_config_fits(cfg, what=f"{exp.id} --preset {args.preset}")
        check_config(settings.mesh, cfg, what=f"{exp.id} --preset {args.preset}")
    opts = E.RunOptions(
        strategy=args.strategy,
        fresh=args.fresh,
        progress=not args.no_progress,
        allow_dirty=args.allow_dirty,
        mesh=settings.mesh,
    )
    with contextlib.ExitStack() as locks:  # one writer per experiment directory, taken before any write
        for exp, _ in resolved:
            locks.enter_context(lock(exp.out_dir(args.results)))
        for exp, cfg in resolved:
            findings = E.run(exp, cfg, exp.out_dir(args.results), args.preset, opts)
            if findings is not None:  # None on processes 1.. of a multi-process job: process 0 reports
                print(f"{exp.id}: {findings.verdict.upper()} — {findings.summary}")
    if not is_writer():
        return 0
    from lab.report import write_report

    print(f"report: {write_report(_reported(), args.results)}")
    if args.results != E.RESULTS:  # say how to find this run again
        print(f"redraw with: lab analyze {args.experiment} --results {args.results}")
    return 0


def cmd_analyze(args) -> int:
    # NumPy only: analysis reads what `run` wrote and never starts JAX (tests/cli check it cannot).
    root = _root(args)
    _check_results(root, write=False)
    for exp in E.find(_registry(), args.experiment):
        findings = E.analyze(exp, exp.out_dir(root))
        print(f"{exp.id}: {findings.verdict.upper()} — {findings.summary}")
    return 0


def cmd_report(args) -> int:
    from lab.report import write_report

    root = _root(args)
    _check_results(root, write=True)  # it writes REPORT.md there
    print(write_report(_reported(), root))
    return 0


def cmd_compare(args) -> int:
    # JSON only, like analyze: it never loads the registry (the experiments' modules import JAX).
    from lab.compare import compare_trees, render

    if args.out is not None:
        config_lib.check_path("--out", args.out, write=True, directory=False)
    c = compare_trees(args.a, args.b)
    text, changed = render(c), len(c.changes())
    if args.out is None:
        print(text, end="")
    else:
        from lab.fileio import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"{args.out}: {changed} verdict(s) changed")
    return 1 if args.fail_on_change and changed else 0


def cmd_test(args) -> int:
    return run_tests(args.pytest_args)


def run_tests(pytest_args: list[str]) -> int:
    """ruff check, ruff format --check, then pytest with `pytest_args`, from the repository root."""
    for cmd in (["check"], ["format", "--check"]):
        rc = subprocess.call([sys.executable, "-m", "ruff", *cmd, str(ROOT)], cwd=ROOT)
        if rc != 0:
            print(
                f"lab test: `ruff {' '.join(cmd)}` failed; `ruff check --fix` / `ruff format` repair most of it",
                file=sys.stderr,
            )
            return rc
    extra = [a for a in pytest_args if a != "--"]
    return subprocess.call([sys.executable, "-m", "pytest", *_test_workers(extra), *extra], cwd=ROOT)


def _test_workers(pytest_args: list[str]) -> list[str]:
    """pytest-xdist options: one worker per core plus one (at most 4) on a machine with several cores, unless
    the arguments choose (`-n`, `-p no:xdist`).

    Most of the suite's time is XLA compiling tiny programs, one core each, so two cores nearly halve it.
    The extra worker fills the time the others wait (subprocesses starting, another worker's smoke run,
    sockets): on 2 cores, two workers kept 1.86 cores busy (542 s), three 1.93 (514 s; 2026-12-04).
    An experiment's tests share its smoke run, so whole files go to a worker (tests/experiments/conftest.py),
    in the order tests/conftest.py sorts them (longest first), not re-sorted by xdist.
    """
    if any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in pytest_args):
        return []
    from lab.runtime import available_cores

    cores = available_cores()
    workers = min(cores + 1, 4)
    return ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"] if cores > 1 else []


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"] and not {"-h", "--help"} & set(argv[1:2]):
        return run_tests(argv[1:])  # everything after `test` goes to pytest, options included
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:
        print(f"lab: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's, not the lab's: a full disk, a directory that vanished, permissions
        where = f": {e.filename}" if e.filename else ""
        print(f"lab: error: {e.strerror or e}{where} ({type(e).__name__}, errno {e.errno})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def entry() -> None:
    """The `lab` command: main's exit status. After an error, library threads may still wait for work that
    will never come (Orbax's signalling threads after a checkpoint save failed wait forever, and a
    non-daemon thread keeps the interpreter from exiting): they get two seconds to end, then the process
    exits anyway, with its error already said and the failed save's temporary files already removed."""
    import threading
    import time

    code = main()
    if code:
        deadline = time.monotonic() + 2.0
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join(max(0.0, deadline - time.monotonic()))
        if any(
            t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
        ):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
