"""The experiment contract and registry.

An experiment is a module `experiments/eNN_name.py` that defines a module-level ``EXPERIMENT``:

    EXPERIMENT = Experiment(
        name="e04_qkv", title=..., claim=...,          # the claim it tests, in one line
        config_class=E04Config,                        # a frozen dataclass with `seeds` and `data` fields
        presets={"smoke": ..., "cpu": ..., "gpu": ...}, # instances of config_class; sizes only
        run=run,                                       # run(cfg, out: Path, opts: RunOptions) -> None
        analyze=analyze,                               # analyze(cfg, out: Path) -> Findings
        check=check,                                   # optional: check(cfg) raises on bad data, early
    )

`run` trains and writes checkpoints and metrics under `out` (= results/<name>); `analyze` reads only
files under `out`, draws plots, writes tables and returns findings, which this module writes to
`out/findings.json` for `lab report`. The registry finds experiment modules by listing the package it
is handed (the CLI hands it `experiments`), so nothing in `lab/` imports the experiments.

`run` does every computation that needs JAX (training, evaluations, interventions, timings) and writes the
numbers to files; `analyze` reads them with NumPy (lab.runs, lab.analysis) and draws: `lab analyze`
never starts JAX's backends, and is tested in a process where JAX cannot compute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import config as config_lib
from lab.analysis.findings import Findings
from lab.errors import CheckpointError, ConfigError
from lab.fileio import atomic_write_json, is_writer, read_json
from lab.runs import check_or_write_config, check_runs_complete, lock

DEFAULT_PRESET = "cpu"
RESULTS = Path("results")  # the published results: every experiment at the default preset, nothing overridden
SCRATCH = Path("scratch")  # everything else a command writes by default (ignored by git)


@dataclass(frozen=True)
class RunOptions:
    strategy: str = "auto"  # sweep strategy (lab.train.sweep): auto | vmap | shard | loop
    fresh: bool = False  # discard what is on disk for this experiment and start over
    progress: bool = True
    allow_dirty: bool = (
        False  # recorded in config.json: results/ written from a tree with uncommitted changes
    )
    mesh: Any = None  # a lab.train.mesh.MeshConfig (`--set mesh.data=4`); None: the sweep strategies alone

    def train_kw(self) -> dict:
        """The keyword arguments of lab.train.train_sweep these options set: how every sweep uses devices."""
        return dict(strategy=self.strategy, progress=self.progress, mesh=self.mesh)


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    claim: str
    config_class: type
    presets: dict[str, Any]
    run: Callable[[Any, Path, RunOptions], None]
    analyze: Callable[[Any, Path], Findings]
    check: Callable[[Any], None] | None = None  # validate data etc. before anything is written
    # Config keys the experiment sets itself for each run, and from what (e03: {"model.n_heads": "heads"}):
    # `--set` refuses them, since a value given there would not be the one the runs use.
    set_per_run: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def per_run(self) -> dict[str, str]:
        """set_per_run, with model.vocab_size, which every experiment takes from its tokenizer or task."""
        return {
            "model.vocab_size": "its tokenizer or task (for BPE: data.bpe_vocab_size)",
            **self.set_per_run,
        }

    @property
    def id(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def is_template(self) -> bool:
        """e00_template: the pattern to copy; run by name only, never by `all` or in the report."""
        return self.id == "e00"

    def out_dir(self, results: Path = RESULTS) -> Path:
        return Path(results) / self.name


_NAME = re.compile(r"^e\d\d_\w+$")


def registry(package) -> dict[str, Experiment]:
    """All experiments of `package` (a package of eNN_name modules, e.g. `experiments`), keyed by short
    id ("e04"), in id order, the template (e00) included."""
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not _NAME.match(info.name):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        exp = getattr(module, "EXPERIMENT", None)
        if not isinstance(exp, Experiment):
            raise TypeError(f"{package.__name__}/{info.name}.py must define EXPERIMENT = Experiment(...)")
        found[exp.id] = exp
    return found


def find(reg: dict[str, Experiment], name: str) -> list[Experiment]:
    """The experiments of registry `reg` a command-line name selects: "all" (every experiment but the
    template), a short id or a full name."""
    if name == "all":
        return [e for e in reg.values() if not e.is_template]
    for exp in reg.values():
        if name in (exp.id, exp.name):
            return [exp]
    allowed = ", ".join([*(f"{e.id} ({e.name})" for e in reg.values()), "all"])
    raise ConfigError(f"unknown experiment {name!r}; allowed: {allowed}")


MAX_SEEDS = 10_000


# `--set` sections every experiment accepts, about how it runs rather than what it measures (lab.cli parses
# them into RunOptions: `mesh.*` is lab.train.mesh.MeshConfig); resolve_config leaves them out.
RUN_SECTIONS = ("mesh",)


def own_sets(sets) -> list[str]:
    """The `--set` assignments that belong to the experiment's config (not to a RUN_SECTIONS section)."""
    return [a for a in sets if a.strip().split(".", 1)[0] not in RUN_SECTIONS]


def resolve_config(exp: Experiment, preset: str = DEFAULT_PRESET, sets=(), seeds=None, data=None):
    """Preset + `--set` overrides + the `--seeds` and `--data` shortcuts, validated (RUN_SECTIONS keys such
    as mesh.* are left to the CLI)."""
    if preset not in exp.presets:
        raise ConfigError(f"unknown preset {preset!r} for {exp.id}; allowed: {', '.join(exp.presets)}")
    cfg = exp.presets[preset]
    keys = [a.partition("=")[0].strip() for a in sets]
    for key, flag, given in (("seeds", "--seeds", seeds), ("data.name", "--data", data)):
        if given is not None and key in keys:
            raise ConfigError(f"{flag} and --set {key}= both set {key}; give one")
    for key in keys:
        if key in exp.per_run:
            raise ConfigError(
                f"{key} is set by {exp.id} for each run from {exp.per_run[key]}; it cannot be --set"
            )
    cfg = config_lib.apply_overrides(cfg, own_sets(sets))
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        cfg = dataclasses.replace(cfg, seeds=seeds)
    if data is not None:
        cfg = config_lib.override(cfg, "data.name", data)
    if getattr(cfg, "seeds", 1) > MAX_SEEDS:  # a sweep lists its members before any memory check can see them
        raise ConfigError(f"seeds must be at most {MAX_SEEDS:,}, got {cfg.seeds}")
    return cfg


def default_results(preset: str = DEFAULT_PRESET, sets=(), seeds=None, data=None) -> Path:
    """Where `lab run` writes when `--results` is not given.

    The published tree `results/` holds only the default preset with nothing overridden, so no other run
    can collide with it or overwrite a committed file. Any other preset writes to `scratch/<preset>`; a run
    with overrides (`--set`, `--seeds`, `--data`) to `scratch/<preset>+<hash>`, where the hash (8 hex digits
    of sha256) is of the overrides as given, so different overrides never share a directory.
    """
    overrides = [
        *sets,
        *([f"seeds={seeds}"] if seeds is not None else []),
        *([f"data={data}"] if data else []),
    ]
    if not overrides:
        return RESULTS if preset == DEFAULT_PRESET else SCRATCH / preset
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return SCRATCH / f"{preset}+{digest}"


def write_config(
    exp: Experiment,
    cfg,
    out: Path,
    preset: str,
    fresh: bool = False,
    write: bool = True,
    allow_dirty: bool = False,
) -> None:
    """Record the experiment's resolved config; refuse to mix results of two configs in one directory.

    With write=False, only check (so `lab run all` can refuse before any experiment trains).
    """
    want = {"experiment": exp.name, "preset": preset, **config_lib.to_dict(cfg)}

    def upgrade(have: dict) -> dict:  # fields added to the experiment's config since, at their defaults
        head = {k: have[k] for k in ("experiment", "preset") if k in have}
        rest = {k: v for k, v in have.items() if k not in head}
        return {**head, **config_lib.fill_defaults(rest, exp.config_class)}

    check_or_write_config(out, want, fresh, write=write, upgrade=upgrade, allow_dirty=allow_dirty)


def load_config(exp: Experiment, out: Path):
    """(preset, config) recorded by `lab run` in out/config.json."""
    path = Path(out) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; run `lab run {exp.id}` first")
    try:
        stored = dict(read_json(path)["config"])
        stored.pop("experiment", None)
        preset = stored.pop("preset", "")
        return preset, config_lib.from_dict(exp.config_class, stored)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a config written by this version of lab ({e})") from None


def analyze(exp: Experiment, out: Path) -> Findings:
    """Findings from the files under `out`, written to out/findings.json. Refused while another process
    writes `out` (lab.runs.lock), and if any training run under out/runs is unfinished or torn
    (lab.runs.check_complete): measurements of half-trained models are never analyzed."""
    out = Path(out)
    preset, cfg = load_config(exp, out)
    with lock(out, "analyzing"):
        check_runs_complete(out / "runs")
        findings = exp.analyze(cfg, out)
        findings.experiment, findings.title, findings.claim = exp.name, exp.title, exp.claim
        findings.preset = preset
        findings.seeds = cfg.seeds
        findings.generated_by = f"lab analyze {exp.id}"
        atomic_write_json(out / "findings.json", findings.to_dict())
    return findings


# Written by `run` once `exp.run` has returned: training and measurement of this config are done, so running
# the same command again only analyzes. A local marker (ignored by git): a fresh clone of the published
# results has their measurement files but no checkpoints, and `lab run` there trains and measures again.
MEASURED = "measured.json"


def run(exp: Experiment, cfg, out: Path, preset: str, opts: RunOptions = RunOptions()) -> Findings | None:
    """Train and measure (exp.run), then analyze, holding `out`'s one-writer lock throughout. If `out`
    already holds this config trained and measured to the end (its MEASURED marker), only analyze.
    On processes 1.. of a multi-process job: train and measure alongside process 0, write nothing, return
    None."""
    from lab import runtime  # (imports JAX's multi-process helpers only when a run starts)

    out = Path(out)
    with lock(out):
        if is_writer():  # in a multi-process job process 0 writes; the others follow its decisions
            write_config(exp, cfg, out, preset, fresh=opts.fresh, allow_dirty=opts.allow_dirty)
        marker, want = out / MEASURED, json.loads(json.dumps(config_lib.to_dict(cfg)))  # tuples as lists
        if runtime.agree(_measured_config(marker) != want):
            if is_writer():
                marker.unlink(missing_ok=True)
            exp.run(cfg, out, opts)
            atomic_write_json(marker, {"config": want})
        elif opts.progress and is_writer():
            print(f"{exp.id}: already trained and measured in {out}; analyzing only (--fresh redoes it)")
        runtime.sync(f"measured {out}")
        if not is_writer():
            return None  # analysis is NumPy over process 0's files: process 0's job
        return analyze(exp, out)


def _measured_config(marker: Path):
    try:
        return read_json(marker)["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
