"""Template: "Width buys an algorithm" — the pattern every experiment follows; copy this file to start one.

Claim tested: on sorting (lab.data.tasks.Sort), a wider transformer (d_model 64) learns more of the
algorithm than a narrow one (d_model 16) at equal training steps: lower validation loss, and more
held-out inputs sorted exactly. It is a small claim on purpose; the file shows the shape:

  config     a frozen dataclass with `seeds` (and `data` for corpus experiments), and presets that change
             sizes only (smoke: what the tests run; cpu: the default; gpu: one accelerator)
  run        all JAX work: train sweeps through the one driver (lab.train.train_sweep), then measure the
             trained models and write the numbers (lab.runs.write_measurement)
  analyze    NumPy only: read the files (lab.runs), draw (lab.viz), decide each finding by the one rule
             (lab.analysis: compare(...).verdict(...), headline) and return the findings
  EXPERIMENT the registry entry

This template is run by its test and by name (`lab run e00`); `lab run all` and the report leave it out.

Run:      lab run e00 [--preset smoke|cpu|gpu] [--set widths=16,32] [--seeds 3]
Redraw:   lab analyze e00
Writes:   results/e00_template/
  runs/D<d>/            one sweep over seeds per width d (config.json, metrics.jsonl, checkpoints/)
  runs/exact_match.json per width: the fraction of held-out inputs each seed sorts exactly (greedy,
                        teacher-forced answer positions all correct)
  plots/loss.png, tables/width.md, findings.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, compare, headline, summarize
from lab.analysis.findings import evidence_summary
from lab.config import check, check_at_least
from lab.data.tasks import Sort
from lab.experiment import Experiment
from lab.model import ModelConfig, apply
from lab.runs import load_run, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.viz import plots


@dataclass(frozen=True)
class E00Config:
    model: ModelConfig = ModelConfig(n_layers=1, n_heads=2)
    train: TrainConfig = TrainConfig(steps=300, batch_size=32, lr=3e-3, warmup_steps=30, ckpt_every=300)
    n_items: int = 5  # symbols to sort
    n_symbols: int = 8
    widths: tuple[int, int] = (16, 64)  # d_model of the (narrow, wide) model
    eval_inputs: int = 512  # held-out inputs for exact match
    seeds: int = 3

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "eval_inputs")
        check(len(self.widths) == 2 and self.widths[0] < self.widths[1], "widths must be (narrow, wide)")
        for d in self.widths:  # each width must make a valid model (d_model divisible by n_heads, ...)
            self.model.replace(d_model=d)
        Sort(self.n_items, self.n_symbols)  # refuses bad sizes with a message naming them


PRESET_TABLE = {
    "smoke": E00Config(train=TRAIN_PRESETS["smoke"], n_items=3, n_symbols=4, eval_inputs=32, seeds=2),
    "cpu": E00Config(),
    "gpu": E00Config(
        model=ModelConfig(n_layers=2, n_heads=8),
        train=TRAIN_PRESETS["gpu"],
        n_items=16,
        n_symbols=32,
        widths=(64, 512),
    ),
}


def _spec(cfg: E00Config, width: int) -> SweepSpec:
    task = Sort(cfg.n_items, cfg.n_symbols)
    model = cfg.model.replace(d_model=width, vocab_size=task.vocab_size, max_len=task.seq_len)
    return SweepSpec(model, cfg.train, task, members_grid(range(cfg.seeds), [cfg.train.lr]))


# --- run: every JAX computation, written to files ------------------------------------------------------------
def exact_match(spec: SweepSpec, params, n: int) -> np.ndarray:
    """(members,) the fraction of `n` held-out inputs whose every answer token is the model's argmax."""
    batch = spec.task.sample({}, "val", jax.random.PRNGKey(123), n)
    logits = jax.vmap(lambda p: apply(spec.model, p, batch["inputs"]))(params)
    hit = (jnp.argmax(logits, -1) == batch["targets"]) | ~batch["mask"]
    return np.asarray(jnp.all(hit, axis=-1).mean(axis=-1), np.float64)


def run(cfg: E00Config, out: Path, opts) -> None:
    scores = {}
    for width in cfg.widths:
        spec = _spec(cfg, width)
        run_dir = out / "runs" / f"D{width}"
        train_sweep(run_dir, spec, **opts.train_kw(), desc=f"e00 d_model {width}")
        _, state = latest_state(run_dir, spec.model, spec.train, list(spec.members))
        scores[str(width)] = exact_match(spec, state.params, cfg.eval_inputs).tolist()
    write_measurement(out / "runs" / "exact_match.json", scores, cfg)


# --- analyze: NumPy only, from the files -------------------------------------------------------------------
def finding_loss(cfg, runs) -> Finding:
    narrow, wide = (runs[d].final_val_loss for d in cfg.widths)
    c = compare(narrow, wide)
    return Finding(
        f"d_model {cfg.widths[1]} reaches a lower validation loss than d_model {cfg.widths[0]} at equal steps",
        c.verdict("less"),
        f"{summarize(wide).fmt()} vs {summarize(narrow).fmt()} nats/answer token ({c.fmt()})",
    )


def finding_exact(cfg, scores) -> Finding:
    narrow, wide = (scores[str(d)] for d in cfg.widths)
    c = compare(narrow, wide)
    return Finding(
        f"d_model {cfg.widths[1]} sorts more held-out inputs exactly than d_model {cfg.widths[0]}",
        c.verdict("greater"),
        f"{summarize(wide).fmt()} vs {summarize(narrow).fmt()} of {cfg.eval_inputs} inputs ({c.fmt()})",
    )


def analyze(cfg: E00Config, out: Path):
    runs = {d: load_run(out / "runs" / f"D{d}") for d in cfg.widths}
    scores = read_measurement(out / "runs" / "exact_match.json", cfg)
    outs = Outputs(out)
    title = f"Sorting {cfg.n_items} of {cfg.n_symbols} symbols after {cfg.train.steps} steps (mean ± sd)"
    table = Table(title, ["d_model", "val loss (nats/answer token)", "exact match"])
    for d in cfg.widths:
        table.add(d, summarize(runs[d].final_val_loss).fmt(), summarize(scores[str(d)]).fmt())
    outs.table("width.md", table)
    fig, axes = plots.figure()
    for d in cfg.widths:
        plots.band(axes[0, 0], runs[d].val_steps, runs[d].val_loss, f"d_model {d}")
    plots.finish(
        axes[0, 0], "e00: validation loss while training (mean ± sd)", "step", "val loss (nats/token)"
    )
    plots.save(fig, outs.plot("loss.png"))
    findings = [finding_loss(cfg, runs), finding_exact(cfg, scores)]
    summary = evidence_summary(findings)
    return outs.findings(headline(findings), summary, findings)


EXPERIMENT = Experiment(
    name="e00_template",
    title="Template: width buys an algorithm",
    claim="On sorting, a wider transformer learns more of the algorithm than a narrow one at equal steps.",
    config_class=E00Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    set_per_run={"model.d_model": "widths", "model.max_len": "the task (n_items)"},
)
