"""Generic machinery for frozen-dataclass configs.

Every config in the lab is a frozen (hence hashable) dataclass, so it can be a static argument to
`jax.jit`. Nested configs are fields that are themselves dataclasses. This module turns command-line
overrides such as ``--set train.steps=500 --set model.n_layers=2`` into a new config, checking each key
against the dataclass fields and each value against the field's annotated type; out-of-range values are
refused by the dataclasses' own ``__post_init__`` checks. Errors are `ConfigError`s that name the key and
what is allowed. The `check*` helpers serve those checks; `check_path` does the same for a path option
(`lab run --results`, `--out`, the scripts' output paths).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from lab.errors import ConfigError


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted keys of a (nested) config, in field order."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(keys(value, prefix + f.name + "."))
        else:
            out.append(prefix + f.name)
    return out


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a comma-separated list of " + describe_type(typing.get_args(tp)[0])
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse the command-line text for `key` into a value of type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        for a in allowed:
            if str(a) == text:
                return a
        raise ConfigError(f"{key}={text!r} is not allowed; {key} must be {describe_type(tp)}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_value(text, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}={text!r} has the wrong type; {key} must be {describe_type(tp)}")
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if "" in parts:
            raise ConfigError(f"{key}={text!r} has an empty item; give comma-separated values, e.g. a,b")
        return tuple(parse_value(p, elem, key) for p in parts)
    if tp is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r} has the wrong type; {key} must be true or false")
    if tp is int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r} has the wrong type; {key} must be an integer") from None
        if not -(2**31) <= value < 2**31:  # steps, sizes and seeds become int32 arrays and loop bounds
            raise ConfigError(f"{key}={text[:40]!r} is out of range; integers must lie in [-2**31, 2**31)")
        return value
    if tp is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r} has the wrong type; {key} must be a number") from None
        if not math.isfinite(value):  # inf and nan parse as floats, and would train to NaN
            raise ConfigError(f"{key}={text!r} is not allowed; {key} must be a finite number")
        return value
    if tp is str:
        return text
    raise ConfigError(f"{key} cannot be set from the command line (type {describe_type(tp)})")


def override(cfg: Any, key: str, text: str, _prefix: str = "") -> Any:
    """Return a copy of `cfg` with the dotted `key` set from `text`."""
    head, _, rest = key.partition(".")
    full = _prefix + head
    names = [f.name for f in dataclasses.fields(cfg)]
    if head not in names:
        raise ConfigError(
            f"unknown config key {_prefix + key!r}; allowed keys: {', '.join(keys(cfg, _prefix))}"
        )
    current = getattr(cfg, head)
    if dataclasses.is_dataclass(current):
        if not rest:
            raise ConfigError(
                f"{full!r} is a section; set one of its keys: {', '.join(keys(current, full + '.'))}"
            )
        value = override(current, rest, text, full + ".")
    else:
        if rest:
            raise ConfigError(f"unknown config key {_prefix + key!r}; {full!r} has no sub-keys")
        value = parse_value(text, _hints(type(cfg))[head], full)
    # A __post_init__ check that fails here names its own key(s) in its message.
    return dataclasses.replace(cfg, **{head: value})


def apply_overrides(cfg: Any, assignments: list[str]) -> Any:
    """Apply ``key=value`` strings in order; a key given twice is refused (which one was meant?)."""
    given = {}
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"--set expects key=value, got {a!r}")
        key, _, text = a.partition("=")
        key, text = key.strip(), text.strip()
        if key in given:
            raise ConfigError(f"--set {key} is given twice ({given[key]!r}, then {text!r}); give it once")
        given[key] = text
        cfg = override(cfg, key, text)
    return cfg


ABSENT = "lab_absent"  # field metadata: the value a record written before the field existed was made with


def since(default: Any, absent: Any) -> Any:
    """A config field added with a `default` that changes what the code does (say, `first_seed`: fresh seeds
    where older runs trained seeds 0..): records written before the field existed were made as with
    `absent`, and reading them (`from_dict`, `fill_defaults`) fills in that value, not today's default, so
    an old run is neither mislabelled nor taken for a new one."""
    return dataclasses.field(default=default, metadata={ABSENT: absent})


def _json(value: Any) -> Any:
    return to_dict(value) if dataclasses.is_dataclass(value) else json.loads(json.dumps(value))


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config written by `to_dict`; unknown keys are an error."""
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(f"unknown config key {name!r} for {cls.__name__}")
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            value = from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    for f in dataclasses.fields(cls):  # absent from an older record: what that record was made with
        if f.name not in data and ABSENT in f.metadata:
            kwargs[f.name] = f.metadata[ABSENT]
    return cls(**kwargs)


def fill_defaults(stored: dict, cls: type) -> dict:
    """`stored` (a config dict written by `to_dict`, perhaps by an older version of the lab) with every
    field of `cls` that it lacks filled in with that field's default, recursively.

    A field added to a config class after a run was recorded is then compared at its default value: if
    the current config uses the default (the behaviour the old code had), the run is still the same run.
    A field whose default is not the old behaviour is declared with `since` and filled with its `absent`.
    """
    out = dict(stored)
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if f.name in out:
            if dataclasses.is_dataclass(tp) and isinstance(out[f.name], dict):
                out[f.name] = fill_defaults(out[f.name], tp)
            continue
        if ABSENT in f.metadata:
            out[f.name] = _json(f.metadata[ABSENT])
        elif f.default is not dataclasses.MISSING:
            out[f.name] = _json(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _json(f.default_factory())
    return out


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two config dicts, e.g. ``model.n_layers: 2 vs 4``."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff(va, vb, prefix + k + "."))
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} vs {vb!r}")
    return out


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds; used in ``__post_init__`` range checks."""
    if not condition:
        raise ConfigError(message)


def check_finite(cfg, prefix: str = "") -> None:
    """Every float field of `cfg` (or float in a tuple field) is finite: no inf, no NaN."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, tuple) else (value,)
        check(
            not any(isinstance(v, float) and not math.isfinite(v) for v in values),
            f"{prefix}{f.name} must be a finite number, got {value}",
        )


# --- declarative range checks for experiment configs (each names the key and what is allowed) ------------
def check_at_least(cfg, minimum, *names: str) -> None:
    """Each named field of `cfg` (a number, or a tuple of numbers) is >= minimum."""
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        check(all(v >= minimum for v in values), f"{name} must be >= {minimum}, got {value}")


def check_distinct(cfg, *names: str) -> None:
    """Each named tuple field of `cfg` is non-empty and has no repeated value."""
    for name in names:
        value = getattr(cfg, name)
        check(len(value) > 0, f"{name} must not be empty")
        check(len(set(value)) == len(value), f"{name} has a repeated value: {value}")


def check_choices(cfg, name: str, allowed, required=()) -> None:
    """The tuple field `name` of `cfg` names only `allowed` values, including every one of `required`."""
    value = getattr(cfg, name)
    bad = [v for v in value if v not in allowed]
    check(not bad, f"{name}: unknown {bad}; allowed: {', '.join(map(str, allowed))}")
    missing = [r for r in required if r not in value]
    check(not missing, f"{name} must include {', '.join(map(repr, missing))}")


def check_causal(model, why: str) -> None:
    """A model config whose experiment needs a causal language model (`why` says what for)."""
    check(model.mask == "causal", f"model.mask must be 'causal': {why}")


def check_path(flag: str, path: Path, write: bool, directory: bool = True) -> None:
    """Refuse `flag`'s path in one line, before any work: one that cannot be read as asked, or exists as the
    other kind (a file where a directory is wanted, or the reverse); to write, one whose nearest existing
    ancestor is no directory or cannot be written in. Creates nothing."""
    path = Path(path)
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as e:  # a name too long, a symlink loop, a NUL byte
        raise ConfigError(f"{flag} {str(path)[:120]!r}: {getattr(e, 'strerror', None) or e}") from None
    if directory and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} exists and is not a directory; give a directory (new or existing)")
    if not directory and path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    if not write:
        return
    dest = path if directory else path.parent
    existing = dest
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: {existing} is not a directory; give a path inside a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable; give a path you can write to")
    if existing != dest:  # os.access says yes to root in /proc or on a read-only mount: try it
        import tempfile

        try:
            os.rmdir(tempfile.mkdtemp(prefix=".lab-probe-", dir=existing))
        except OSError as e:
            raise ConfigError(f"{flag} {path}: cannot create it in {existing} ({e.strerror or e})") from None
