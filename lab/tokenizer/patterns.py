"""Regex pre-tokenization: the text is cut into pre-tokens (words, number runs, punctuation runs,
whitespace) and BPE never merges across a cut.

Two split patterns are named, as published with OpenAI's tokenizers (they are the specification of
those tokenizers, so they are spelled exactly as tiktoken spells them, possessive quantifiers included):

  gpt2   GPT-2 (Radford et al., 2019): contractions, optional-space + letters / numbers / other,
         whitespace runs with the last space left to start the next word
  gpt4   cl100k_base (GPT-3.5/GPT-4): case-insensitive contractions, digits in groups of at most 3,
         a word may take one leading non-letter (so "(foo" and "\\nfoo" differ from GPT-2), newlines
         attach to the punctuation before them

Both need the third-party `regex` module (Unicode classes \\p{L}, \\p{N} and possessive quantifiers);
Python's `re` has neither.
"""

from __future__ import annotations

import functools

import regex

from lab.errors import ConfigError

__all__ = ["GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "compile_pattern", "pattern_name"]

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def pattern_name(pattern: str) -> str | None:
    """ "gpt2" / "gpt4" when `pattern` is one of the named patterns, else None."""
    return next((name for name, p in PATTERNS.items() if p == pattern), None)


@functools.lru_cache(maxsize=16)
def compile_pattern(pattern: str) -> regex.Pattern:
    """`pattern` (a name from PATTERNS or a regex) compiled; a bad regex is a ConfigError naming it.

    A pattern that can match the empty string is refused: it would produce empty pre-tokens, which
    carry no bytes and would make encode loop without progress.
    """
    source = PATTERNS.get(pattern, pattern)
    try:
        compiled = regex.compile(source)
    except (regex.error, TypeError) as e:
        raise ConfigError(
            f"split pattern {pattern!r} is not a valid regex ({e}); use gpt2, gpt4 or a valid regex"
        ) from None
    if compiled.fullmatch("") is not None:
        raise ConfigError(
            f"split pattern {pattern!r} matches the empty string; every pre-token needs a character"
        )
    if pattern_name(source) is None:
        _check_backtracking(compiled, pattern)
    return compiled


# Catastrophic backtracking (a pattern such as "(a|aa)+$" takes exponential time on "aaa...a!") cannot be
# ruled out by reading a regex in general, so a custom pattern is tried before use: it splits runs of
# PROBE_LENGTH copies of each probe character (the usual character classes and every character the pattern
# itself names), each run followed by nothing, by a NUL and by "!" (what makes a greedy match fail at the
# end), under the regex module's timeout. The named patterns take about a millisecond on any of these; a
# pattern that needs PROBE_SECONDS on one is refused. This is a test, not a proof: it catches the patterns
# that blow up on a long run of one character, the usual kind, and may miss one that needs a subtler input.
PROBE_LENGTH = 4096
PROBE_SECONDS = 0.25
_PROBE_CHARS = "aA0 \n\t'_-.é東"


def _check_backtracking(compiled: regex.Pattern, pattern: str) -> None:
    chars = dict.fromkeys(_PROBE_CHARS + "".join(c for c in pattern if c.isprintable()))
    for c in chars:
        for tail in ("", "\x00", "!"):
            text = c * PROBE_LENGTH + tail
            try:
                for _ in compiled.finditer(text, timeout=PROBE_SECONDS):
                    pass
            except TimeoutError:
                raise ConfigError(
                    f"split pattern {pattern!r} backtracks catastrophically: splitting {PROBE_LENGTH} x "
                    f"{c!r} + {tail!r} takes over {PROBE_SECONDS:g} s (the named patterns take about 1 ms); "
                    f"use possessive quantifiers or atomic groups, or gpt2 / gpt4"
                ) from None


def resolve_pattern(pattern: str) -> str:
    """The regex source for a pattern name or a regex (validated)."""
    compile_pattern(pattern)
    return PATTERNS.get(pattern, pattern)
