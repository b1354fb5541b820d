"""The `lab` command line.

    lab list                                   experiments and the claim each tests
    lab run e04 [--preset smoke|cpu|gpu] [--set train.steps=500 ...] [--seeds 3] [--data NAME]
    lab run all                                every experiment, then results/REPORT.md
    lab analyze e04                            redraw plots and findings from files on disk only
    lab report                                 assemble results/REPORT.md
    lab config e04 [--preset P] [--set ...]    print the resolved config (every settable key)
    lab test [PYTEST ARGS]                     ruff check + the test suite

Bad input (unknown experiment, key or value, missing or bad data, a results directory written by a
different config) is reported in one line on stderr with exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lab import config as config_lib
from lab import experiment as E
from lab.errors import LabError
from lab.train.sweep import STRATEGIES

ROOT = Path(__file__).resolve().parent.parent


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the whole usage first)
        self.exit(
            2,
            f"lab: error: {message} (see `lab {self.prog.split()[-1]} --help`)\n"
            if " " in self.prog
            else f"lab: error: {message} (see `lab --help`)\n",
        )


def _common_results(p):
    p.add_argument("--results", type=Path, default=E.RESULTS, help="results root (default: results/)")


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
        p.add_argument("--data", default=None, help="corpus: pydocs | pystdlib | tinyshakespeare | file:PATH")

    p = sub.add_parser("run", help="train, checkpoint and analyze")
    config_args(p)
    _common_results(p)
    p.add_argument("--fresh", action="store_true", help="discard this experiment's results and start over")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="how sweeps use devices (default: auto)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("analyze", help="redraw plots and findings from files on disk")
    p.add_argument("experiment")
    _common_results(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="write results/REPORT.md from every findings.json")
    _common_results(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="print the resolved config")
    config_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("test", help="ruff check, then pytest (extra arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_test)
    return parser


def cmd_list(args) -> int:
    for exp in E.registry().values():
        print(f"{exp.id}  {exp.name:<22} {exp.claim}")
    return 0


def cmd_config(args) -> int:
    for exp in E.find(args.experiment):
        cfg = E.resolve_config(exp, args.preset, args.set, args.seeds, args.data)
        print(f"# {exp.name} --preset {args.preset}")
        for key in config_lib.keys(cfg):
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            print(f"{key} = {value}")
    return 0


def cmd_run(args) -> int:
    exps = E.find(args.experiment)
    # Resolve and check every config before anything trains or writes.
    resolved = [(exp, E.resolve_config(exp, args.preset, args.set, args.seeds, args.data)) for exp in exps]
    for exp, cfg in resolved:
        E.write_config(exp, cfg, exp.out_dir(args.results), args.preset, args.fresh, write=False)
        if exp.check is not None:
            exp.check(cfg)
    from lab.runtime import init_jax

    init_jax()
    opts = E.RunOptions(strategy=args.strategy, fresh=args.fresh, progress=not args.no_progress)
    for exp, cfg in resolved:
        findings = E.run(exp, cfg, exp.out_dir(args.results), args.preset, opts)
        print(f"{exp.id}: {findings.verdict.upper()} — {findings.summary}")
    from lab.report import write_report

    print(f"report: {write_report(E.registry().values(), args.results)}")
    return 0


def cmd_analyze(args) -> int:
    from lab.runtime import init_jax

    init_jax()
    for exp in E.find(args.experiment):
        findings = E.analyze(exp, exp.out_dir(args.results))
        print(f"{exp.id}: {findings.verdict.upper()} — {findings.summary}")
    return 0


def cmd_report(args) -> int:
    from lab.report import write_report

    print(write_report(E.registry().values(), args.results))
    return 0


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
    return subprocess.call([sys.executable, "-m", "pytest", *extra], cwd=ROOT)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"] and not {"-h", "--help"} & set(argv[1:2]):
        return run_tests(argv[1:])  # everything after `test` goes to pytest, options included
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:
        print(f"lab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
