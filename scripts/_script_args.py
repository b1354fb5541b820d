"""What the benchmark scripts share for bad input: an argparse parser whose errors are one line on stderr with
exit status 2 (argparse's own prints the usage text first), and checks that refuse an out-of-range number or
an output path that cannot be written before any work starts, creating nothing.

A script imports it after putting its own folder on sys.path (a script run as `python scripts/x.py` has it
there already; a test that loads the script from its file does not).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lab.config import check_path
from lab.errors import ConfigError


class Parser(argparse.ArgumentParser):
    """Give `prog` (the script's file name): under pytest argparse's default would be pytest's."""

    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def at_least(p: argparse.ArgumentParser, args: argparse.Namespace, **minimum: int) -> None:
    """Refuse an option below its minimum (`steps=1`: --steps >= 1); an option left at None is not checked."""
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is not None and value < low:
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def int_list(p: argparse.ArgumentParser, flag: str, text: str, low: int) -> list[int]:
    """`text` as comma-separated whole numbers >= low, or a one-line refusal naming `flag`."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < low:
        p.error(f"{flag} must be whole numbers >= {low} separated by commas, got {text!r}")
    return values


def writable(p: argparse.ArgumentParser, flag: str, path: Path, *, directory: bool = False) -> Path:
    """Refuse an output path the script could not write at its end (lab.config.check_path: an existing path
    of the other kind, a nearest existing ancestor that is no directory or not writable), and for a file also
    an existing non-regular file. Creates nothing; returns the absolute path."""
    if "\0" in str(path):
        p.error(f"{flag} {str(path)[:120]!r}: a path cannot hold a NUL byte")
    path = Path(os.path.abspath(path))
    try:
        check_path(flag, path, write=True, directory=directory)
    except ConfigError as e:
        p.error(str(e))
    if not directory and path.exists() and not path.is_file():
        p.error(f"{flag} {path} is not a regular file (a device, pipe or socket); give a file name")
    return path
