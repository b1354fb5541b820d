"""Project 4: "Q, K and V are not interchangeable" — transformer blocks, Q/K/V ablations and stacking.

Claim tested: the query, key and value projections play different roles, so swapping, zeroing or tying
them breaks the model. The nuance we measure: Q, K and V are three learned linear maps of the *same*
input with identically distributed initializations, so swapping two of them *before training* is a mere
relabeling (training sees the same problem up to names), while the same swap *on a trained model* is not.

Run:      lab run e04 [--preset smoke|cpu|gpu] [--set train.steps=500] [--seeds 3] [--data NAME]
Redraw:   lab analyze e04
Writes:   results/e04_qkv/
  runs/text/, runs/sort/     one sweep each over every training-time variant and seed, on the embedded
                             text corpus (byte-level) and on a sorting task
  runs/lr_sweep/             the intact text model at growing learning rates
  runs/depth/L<n>/           the intact text model with n stacked blocks
  runs/interventions.npz     val loss of each trained intact model (per seed) after every rewiring of the
                             whole model, and after zero_v / swap_qk in one (layer, head) at a time
  runs/samples.json          generated text and sorting outputs of the seed-0 models, decoded
  plots/*.png, tables/*.md, findings.json

Break (a), training time: `model.qkv` switches (swap_qk, swap_qv, swap_kv, zero_q, zero_k, zero_v,
tie_qk), each trained with the intact model's budget and seeds. Break (b), trained model: the same
rewiring applied to the trained intact weights (lab.model.surgery), whole-model and one head at a time,
measured as the jump in validation loss without retraining.

"Harmless" is an equivalence claim: the 95% CI of the difference lies inside ±margin, where the margin
is MARGIN_FRACTION of what training without V costs (zero_v vs intact, training time) on that task. It is
fixed by that rule before any swap or rewiring is judged, and zero_v's own training-time comparison is
judged without it (a directional claim, margin 0).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.analysis import Finding, Outputs, Table, cell, compare, compare_to, headline, summarize
from lab.config import check
from lab.data.pipeline import DataConfig, TextLM, text_lm
from lab.data.tasks import Sort
from lab.experiment import Experiment
from lab.model import PRESETS, ModelConfig
from lab.model.config import QKV
from lab.model.surgery import VARIANTS
from lab.runs import load_runs, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.viz import plots

ALL_VARIANTS = typing.get_args(QKV)
VARIANT_INDEX = {v: VARIANTS.index(v) for v in ALL_VARIANTS}  # row of surgery.ROUTES
SWAPS = ("swap_qk", "swap_qv", "swap_kv")
REMOVALS = ("zero_q", "zero_k", "zero_v", "tie_qk")
HEAD_VARIANTS = ("zero_v", "swap_qk")  # rewired one head at a time
TASKS = ("text", "sort")
INTERVENTION_CHUNK = 8  # trained-model rewirings evaluated per compiled call (x seeds parameter sets)
MARGIN_FRACTION = 0.1  # "harmless": within a tenth of what training without V costs (see the docstring)
MARGIN_FLOOR = 1e-3  # nats; the margin when zero_v costs (almost) nothing


@dataclass(frozen=True)
class SortSpec:
    n_items: int = 8  # symbols to sort; the sequence is 2 * n_items tokens
    n_symbols: int = 10
    steps: int = 300

    def __post_init__(self):
        check(self.n_items >= 2 and self.n_symbols >= 2, "sort.n_items and sort.n_symbols must be >= 2")
        check(self.steps >= 1, f"sort.steps must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class E04Config:
    model: ModelConfig = PRESETS["cpu"]
    train: TrainConfig = TrainConfig(steps=300, batch_size=16, warmup_steps=30, eval_every=50, ckpt_every=100)
    data: DataConfig = DataConfig()
    sort: SortSpec = SortSpec()
    seeds: int = 3
    variants: tuple[str, ...] = ALL_VARIANTS
    lr_sweep: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    lr_sweep_steps: int = 200
    depths: tuple[int, ...] = (1, 2, 4)
    sample_tokens: int = 160

    def __post_init__(self):
        check(self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}")
        bad = [v for v in self.variants if v not in ALL_VARIANTS]
        check(not bad, f"variants: unknown {bad}; allowed: {', '.join(ALL_VARIANTS)}")
        check(
            "intact" in self.variants and "zero_v" in self.variants,
            "variants must include 'intact' (the baseline) and 'zero_v' (its cost sets the margin)",
        )
        check(
            self.model.qkv == "intact",
            "model.qkv must stay 'intact' here; use `variants` to choose ablations",
        )
        check(
            self.model.kv_heads == self.model.n_heads,
            "e04 rewires Q, K and V into each other, so model.n_kv_heads must equal model.n_heads (or be none)",
        )
        check(self.model.mask == "causal", "e04 trains causal language models; model.mask must be 'causal'")
        for name in ("variants", "lr_sweep", "depths"):
            values = getattr(self, name)
            check(len(values) > 0, f"{name} must not be empty")
            check(len(set(values)) == len(values), f"{name} has a repeated value: {values}")
        check(all(lr > 0 for lr in self.lr_sweep), "lr_sweep values must be > 0")
        check(self.lr_sweep_steps >= 1, "lr_sweep_steps must be >= 1")
        check(all(d >= 1 for d in self.depths), "depths must be >= 1")
        check(self.sample_tokens >= 1, "sample_tokens must be >= 1")


PRESET_TABLE = {
    "smoke": E04Config(
        model=PRESETS["smoke"],
        train=TRAIN_PRESETS["smoke"],
        sort=SortSpec(n_items=4, n_symbols=6, steps=20),
        seeds=2,
        variants=("intact", "swap_qk", "zero_v"),
        lr_sweep=(1e-3, 1e4),
        lr_sweep_steps=20,
        depths=(1, 2),
        sample_tokens=16,
    ),
    "cpu": E04Config(),
    "gpu": E04Config(
        model=PRESETS["gpu"],
        train=TRAIN_PRESETS["gpu"].replace(steps=3000),
        data=DataConfig(name="pystdlib"),
        sort=SortSpec(n_items=16, n_symbols=32, steps=2000),
        variants=ALL_VARIANTS,
        lr_sweep=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0, 10.0, 100.0),
        lr_sweep_steps=1000,
        depths=(1, 2, 4, 6, 8),
        sample_tokens=400,
    ),
}


# --- run: training, then every measurement that needs a model -------------------------------------------
def check_config(cfg: E04Config) -> None:
    text_lm(cfg.data, cfg.model).check()  # raises DataError for a missing, empty, non-UTF-8 or unknown corpus


def variant_forward(cfg: ModelConfig, params, batch, extra):
    """The intact model run on weights rewired as Q/K/V variant `extra[0]` (an index into ALL_VARIANTS).

    Identical to training `cfg.replace(qkv=variant)` (tests/experiments check it), but the variant is a
    traced per-member number, so every variant and seed of one task trains in one vmapped program.
    """
    import jax.numpy as jnp

    from lab.model import apply
    from lab.model.surgery import ROUTES, mix

    route = jnp.asarray(ROUTES)[extra[0].astype(jnp.int32)]
    return apply(cfg, mix(params, route), batch["inputs"])


def _specs(cfg: E04Config) -> tuple[TextLM, dict[str, SweepSpec]]:
    """The corpus and every sweep, by its directory under runs/."""
    lm = text_lm(cfg.data, cfg.model)
    sort = Sort(cfg.sort.n_items, cfg.sort.n_symbols)
    seeds, init = range(cfg.seeds), [cfg.train.init_scale]
    variants = members_grid(seeds, [cfg.train.lr], init, [(float(VARIANT_INDEX[v]),) for v in cfg.variants])
    specs = {
        "text": SweepSpec.text(lm, cfg.train, variants, forward=variant_forward),
        "sort": SweepSpec(
            cfg.model.replace(vocab_size=sort.vocab_size, max_len=sort.seq_len),
            cfg.train.replace(steps=cfg.sort.steps),
            sort,
            variants,
            forward=variant_forward,
        ),
        "lr_sweep": SweepSpec.text(
            lm, cfg.train.replace(steps=cfg.lr_sweep_steps), members_grid(seeds, cfg.lr_sweep, init)
        ),
    }
    for d in cfg.depths:  # the intact members of the text sweep are the model's own depth
        if d != lm.model.n_layers:
            spec = SweepSpec.text(lm, cfg.train, members_grid(seeds, [cfg.train.lr], init))
            specs[f"depth/L{d}"] = spec.replace(model=lm.model.replace(n_layers=d))
    return lm, specs


def run(cfg: E04Config, out: Path, opts) -> None:
    from lab.train.loop import latest_state

    lm, specs = _specs(cfg)
    for name, spec in specs.items():
        train_sweep(
            out / "runs" / name, spec, strategy=opts.strategy, progress=opts.progress, desc=f"e04 {name}"
        )
    params = {}  # each checkpoint restored once; every variant and seed is a slice of it
    for t in TASKS:
        spec = specs[t]
        params[t] = latest_state(out / "runs" / t, spec.model, spec.train, list(spec.members))[1].params
    losses = {}
    for t in TASKS:
        losses.update({f"{t}_{k}": v for k, v in _interventions(cfg, specs[t], params[t]).items()})
    write_measurement(out / "runs" / "interventions.npz", losses, cfg)
    write_measurement(out / "runs" / "samples.json", _samples(cfg, lm, specs, params), cfg)


def _of(spec: SweepSpec, params, variant: str):
    """The members of `variant` (in seed order) from stacked parameters."""
    import jax

    idx = np.array([i for i, m in enumerate(spec.members) if ALL_VARIANTS[int(m.extra[0])] == variant])
    return jax.tree_util.tree_map(lambda x: x[idx], params)


def _interventions(cfg: E04Config, spec: SweepSpec, params) -> dict[str, np.ndarray]:
    """Validation loss of the trained intact model after each rewiring, per seed, without retraining:
    "whole" (len(ALL_VARIANTS), seeds) and, per HEAD_VARIANTS v, "heads_<v>" (layers, heads, seeds)."""
    import jax
    import jax.numpy as jnp

    from lab.model.surgery import rewire
    from lab.train.step import eval_step

    model, params = spec.model, _of(spec, params, "intact")
    plans = [(v, None, None) for v in ALL_VARIANTS]
    plans += [(v, l, h) for v in HEAD_VARIANTS for l in range(model.n_layers) for h in range(model.n_heads)]
    # Stacks of (plan x seed) parameter sets, CHUNK plans at a time (the last chunk padded, so one compiled,
    # vmapped eval serves all) to bound memory at large presets.
    ev = jax.vmap(lambda p, d: eval_step(p, d, cfg=model, tcfg=spec.train, task=spec.task), in_axes=(0, None))
    ev = jax.jit(ev)
    data = {k: jnp.asarray(v) for k, v in spec.data.items()}
    chunk = min(INTERVENTION_CHUNK, len(plans))
    losses = []
    for i in range(0, len(plans), chunk):
        group = plans[i : i + chunk]
        padded = group + [group[-1]] * (chunk - len(group))
        stacked = [jax.vmap(lambda p, v=v, l=l, h=h: rewire(p, v, l, h))(params) for v, l, h in padded]
        batch = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *stacked)
        losses.append(np.asarray(ev(batch, data)["val_loss"]).reshape(chunk, cfg.seeds)[: len(group)])
    losses = np.concatenate(losses)
    out = {"whole": losses[: len(ALL_VARIANTS)]}
    for k, v in enumerate(HEAD_VARIANTS):
        start = len(ALL_VARIANTS) + k * model.n_layers * model.n_heads
        out[f"heads_{v}"] = losses[start : start + model.n_layers * model.n_heads].reshape(
            model.n_layers, model.n_heads, cfg.seeds
        )
    return out


def _samples(cfg: E04Config, lm: TextLM, specs: dict, params: dict) -> dict:
    """Generated text per variant (seed 0), and sorting outputs, decoded."""
    import jax
    import jax.numpy as jnp

    from lab.infer import generate
    from lab.model.surgery import rewire

    tok, tmodel, stask, smodel = lm.text.tokenizer, lm.model, specs["sort"].task, specs["sort"].model
    prompt_ids = lm.text.val[:32].astype(np.int32)[None]
    key = jax.random.PRNGKey(0)
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    # Every variant is run as the intact model on rewired weights, so one compiled generator serves all.
    trained = [rewire(first(_of(specs["text"], params["text"], v)), v) for v in cfg.variants]
    intact0 = first(_of(specs["text"], params["text"], "intact"))
    after = [rewire(intact0, v) for v in cfg.variants]
    stack = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(trained + after))
    gen = jax.vmap(lambda p: generate(tmodel, p, prompt_ids, cfg.sample_tokens, temperature=0.8, key=key)[0])
    toks = np.asarray(gen(stack))[:, prompt_ids.shape[1] :]
    n = len(cfg.variants)
    text = [
        {"variant": v, "trained": tok.decode(toks[i]), "after": tok.decode(toks[n + i])}
        for i, v in enumerate(cfg.variants)
    ]
    # Sorting: greedy completion of two fixed inputs by the seed-0 model of each variant.
    prefix = stask.sample({}, "val", jax.random.PRNGKey(7), 2)["inputs"][:, : stask.n_items + 1]
    sorters = [rewire(first(_of(specs["sort"], params["sort"], v)), v) for v in cfg.variants]
    stack = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *sorters)
    outs = np.asarray(jax.vmap(lambda p: generate(smodel, p, prefix, stask.n_items))(stack))
    sort = []
    for i, v in enumerate(cfg.variants):
        for j in range(2):
            x, y = np.asarray(prefix[j, : stask.n_items]), outs[i, j, stask.n_items + 1 :]
            ok = bool(np.array_equal(np.sort(x), y))
            sort.append({"variant": v, "input": stask.decode(x), "output": stask.decode(y), "correct": ok})
    return {"prompt": tok.decode(prompt_ids[0]), "tokens": cfg.sample_tokens, "text": text, "sort": sort}


# --- analysis: everything below reads files under `out` with NumPy ----------------------------------------
@dataclass
class Measured:
    runs: dict  # RunData of every sweep, by its directory under runs/ ("text", "lr_sweep", "depth/L1")
    finals: dict  # (task, variant) -> (seeds,) final val loss, trained with the variant
    whole: dict  # task -> {variant: (seeds,)} val loss of the trained intact model, variant applied after
    heads: dict  # task -> {variant: (layers, heads, seeds)}, one head rewired
    margins: dict  # task -> the equivalence margin (nats)
    cmp: dict  # (task, variant, "train" | "after") -> Comparison against intact


def _variant_of(run) -> np.ndarray:
    """(M,) the Q/K/V variant name of each member of a variant sweep."""
    return np.array(ALL_VARIANTS)[run.extra(0).astype(int)]


def _margin(finals: dict, t: str) -> float:
    harm = summarize(finals[(t, "zero_v")]).mean - summarize(finals[(t, "intact")]).mean
    return max(MARGIN_FRACTION * harm, MARGIN_FLOOR) if np.isfinite(harm) else MARGIN_FLOOR


def _load(cfg: E04Config, out: Path) -> Measured:
    names = [*TASKS, "lr_sweep", *(f"depth/L{n}" for n in cfg.depths if n != cfg.model.n_layers)]
    runs = load_runs({name: out / "runs" / name for name in names})  # refuses runs of different corpora
    finals = {(t, v): runs[t].final_val_loss[_variant_of(runs[t]) == v] for t in TASKS for v in cfg.variants}
    m = read_measurement(out / "runs" / "interventions.npz", cfg)
    whole = {t: dict(zip(ALL_VARIANTS, m[f"{t}_whole"])) for t in TASKS}
    heads = {t: {v: m[f"{t}_heads_{v}"] for v in HEAD_VARIANTS} for t in TASKS}
    cmp = {}
    for t in TASKS:
        for v in ALL_VARIANTS[1:]:
            if v in cfg.variants:  # independent runs: Welch
                cmp[(t, v, "train")] = compare(finals[(t, "intact")], finals[(t, v)])
            cmp[(t, v, "after")] = compare(whole[t]["intact"], whole[t][v], paired_by_seed=True)
    return Measured(runs, finals, whole, heads, {t: _margin(finals, t) for t in TASKS}, cmp)


def _margin_for(d: Measured, t: str, v: str, phase: str) -> float:
    """zero_v's training-time comparison sets the margin, so it is judged without one."""
    return 0.0 if (v, phase) == ("zero_v", "train") else d.margins[t]


def _verdict(d: Measured, t: str, v: str, phase: str, claim: str) -> str:
    """The rule's verdict on "harmless" (equal within the margin) or "hurts" (greater loss than intact)."""
    direction = {"harmless": "equal", "hurts": "greater", "helps": "less"}[claim]
    margin = _margin_for(d, t, v, phase)
    return (
        "inconclusive"
        if direction == "equal" and margin == 0
        else d.cmp[(t, v, phase)].verdict(direction, margin)
    )


def _label(d: Measured, t: str, v: str, phase: str) -> str:
    """The claim the rule supports for one comparison: harmless, hurts or helps; 'unclear' if none."""
    return next(
        (c for c in ("harmless", "hurts", "helps") if _verdict(d, t, v, phase, c) == "supported"), "unclear"
    )


def _variants_table(cfg: E04Config, d: Measured) -> Table:
    table = Table(
        "Final validation loss (nats/token), mean ± sd over seeds",
        [
            "task",
            "variant",
            "trained with variant: val loss",
            "vs intact",
            "",
            "applied to trained intact model: val loss",
            "jump",
            "",
        ],
        note=f"Margins for 'harmless' (a tenth of what zero_v costs at training time): text "
        f"±{d.margins['text']:.3f}, sort ±{d.margins['sort']:.3f}. Training-time rows compare independent "
        "runs (Welch t-test); trained-model rows compare the same seeds before and after rewiring (paired "
        "t-test).",
    )
    for t in TASKS:
        for v in ALL_VARIANTS:
            ran, base = v in cfg.variants, v == "intact"
            a = "" if base or not ran else d.cmp[(t, v, "train")].fmt()
            table.add(
                t,
                v,
                summarize(d.finals[(t, v)]).fmt() if ran else "not run",
                a,
                "—" if base else (_label(d, t, v, "train") if ran else ""),
                summarize(d.whole[t][v]).fmt(),
                "" if base else d.cmp[(t, v, "after")].fmt(),
                "—" if base else _label(d, t, v, "after"),
            )
    return table


def _curves_plots(cfg: E04Config, d: Measured, outs: Outputs) -> None:
    for t in TASKS:
        fig, axes = plots.figure()
        ax = axes[0, 0]
        for v in cfg.variants:
            r = d.runs[t]
            plots.band(ax, r.train_steps, r.train_loss[_variant_of(r) == v], v)
        ax.set_yscale("log")
        title = f"e04 {t}: training loss per Q/K/V variant (mean ± sd over {cfg.seeds} seeds)"
        plots.finish(ax, title, "step", "train loss (nats/token, log scale)")
        plots.save(fig, outs.plot(f"loss_curves_{t}.png"))
    fig, axes = plots.figure(ncols=2, width=5.5)
    for ax, t in zip(axes[0], TASKS):
        xs = np.arange(len(ALL_VARIANTS))
        a = [summarize(d.finals[(t, v)]) if v in cfg.variants else None for v in ALL_VARIANTS]
        b = [summarize(d.whole[t][v]) for v in ALL_VARIANTS]
        ax.bar(
            xs - 0.2,
            [s.mean if s else np.nan for s in a],
            0.4,
            yerr=[s.sd if s else 0 for s in a],
            label="trained with the variant",
            capsize=2,
        )
        ax.bar(
            xs + 0.2,
            [s.mean for s in b],
            0.4,
            yerr=[s.sd for s in b],
            label="variant applied to the trained intact model",
            capsize=2,
        )
        ax.set_xticks(xs, ALL_VARIANTS, rotation=45, ha="right")
        ax.set_yscale("log")
        plots.finish(ax, f"{t}: final val loss (mean ± sd)", "Q/K/V variant", "val loss (nats/token, log)")
    plots.save(fig, outs.plot("before_after_training.png"))


def _head_jump(d: Measured, t: str, v: str) -> np.ndarray:
    """(layers, heads) loss jump when one head of the trained intact model is rewired, mean over seeds."""
    return (d.heads[t][v] - d.whole[t]["intact"][None, None, :]).mean(axis=-1)


def _heads_plot(d: Measured, outs: Outputs) -> None:
    fig, axes = plots.figure(ncols=2, nrows=2, width=4.5, height=3.0)
    for row, t in enumerate(TASKS):
        for col, v in enumerate(HEAD_VARIANTS):
            jump = _head_jump(d, t, v)
            ax = axes[row, col]
            im = ax.imshow(jump, cmap="magma", aspect="auto")
            plots.colorbar(fig, im, ax, "Δ val loss (nats/token)")
            ax.grid(False)
            ax.set_xticks(range(jump.shape[1]))
            ax.set_yticks(range(jump.shape[0]))
            ax.set_title(f"{t}: {v} in one head")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
    fig.suptitle("e04: loss jump when one head of the trained model is rewired (mean over seeds)")
    plots.save(fig, outs.plot("head_interventions.png"))


def _evidence(d: Measured, variants, phase: str, claim: str, describe) -> tuple[list[str], list[str]]:
    """(verdicts of `claim` by the rule, evidence strings) for `variants` on both tasks in `phase`."""
    verdicts, ev = [], []
    for t in TASKS:
        for v in variants:
            verdicts.append(_verdict(d, t, v, phase, claim))
            ev.append(f"{t} {v}: {describe(t, v)} ({d.cmp[(t, v, phase)].fmt()}; {_label(d, t, v, phase)})")
    return verdicts, ev


def _fmt(x) -> str:
    return summarize(x).fmt()


def swaps_before_training(cfg: E04Config, d: Measured) -> Finding:
    swaps = [v for v in SWAPS if v in cfg.variants]
    base = lambda t: _fmt(d.finals[(t, "intact")])
    verdicts, ev = _evidence(
        d, swaps, "train", "harmless", lambda t, v: f"{_fmt(d.finals[(t, v)])} vs intact {base(t)}"
    )
    claim = "Swapping two projections before training costs nothing (a relabeling)"
    return Finding(claim, headline(verdicts), "; ".join(ev) or "not run")


def removals_hurt(cfg: E04Config, d: Measured) -> Finding:
    removals = [v for v in REMOVALS if v in cfg.variants]
    verdicts, ev = _evidence(d, removals, "train", "hurts", lambda t, v: _fmt(d.finals[(t, v)]))
    if "zero_q" in removals and "zero_k" in removals:
        same = all(np.array_equal(d.finals[(t, "zero_q")], d.finals[(t, "zero_k")]) for t in TASKS)
        ev.append(
            "zero_q and zero_k "
            + ("give identical numbers" if same else "differ")
            + ": either way every score q·k is 0, so attention is a uniform average over the visible prefix"
        )
    if "tie_qk" in removals:
        hurt = any(_label(d, t, "tie_qk", "train") == "hurts" for t in TASKS)
        ev.append(
            "tie_qk makes every score symmetric (k_i·k_j = k_j·k_i); "
            + (
                "it hurt where marked, since a query can no longer look for something unlike itself"
                if hurt
                else "it cost little here: the causal mask and the row-wise softmax still make attention "
                "asymmetric, so a symmetric score matrix constrains less than it seems"
            )
        )
    claim = "Zeroing Q, K or V, or tying Q = K, at training time hurts"
    return Finding(claim, headline(verdicts), "; ".join(ev) or "not run")


def swaps_after_training(cfg: E04Config, d: Measured) -> Finding:
    before = lambda t: _fmt(d.whole[t]["intact"])
    verdicts, ev = _evidence(d, SWAPS, "after", "hurts", lambda t, v: f"{before(t)} → {_fmt(d.whole[t][v])}")
    notes = []
    for t in TASKS:
        for v in HEAD_VARIANTS:
            jump = _head_jump(d, t, v)
            li, hi = np.unravel_index(np.nanargmax(jump), jump.shape)
            notes.append(
                f"{t} {v}: {np.nanmin(jump):+.3f} to {np.nanmax(jump):+.3f} nats (largest: layer {li} head {hi})"
            )
    claim = "Swapping the projections of a trained model breaks it"
    return Finding(claim, headline(verdicts), "; ".join(ev) + ". One head at a time: " + "; ".join(notes))


def _lr_levels(run) -> tuple[float, list]:
    """The untrained model's val loss, and per peak lr: (lr, member indices, diverged, blew up)."""
    lrs, initial = run.member_values("lr"), float(np.nanmean(run.val_loss[:, 0]))  # all start alike
    levels = []
    for lr in sorted(set(lrs.tolist())):
        idx = np.where(lrs == lr)[0]
        fin = run.final_val_loss[idx]
        levels.append(
            (lr, idx, int(np.sum(run.diverged_at[idx] >= 0)), int(np.sum(np.isfinite(fin) & (fin > initial))))
        )
    return initial, levels


def _lr_plot(run, outs: Outputs) -> None:
    initial, levels = _lr_levels(run)
    fig, axes = plots.figure(ncols=2, width=5.5)
    ax = axes[0, 0]
    for lr, idx, _, _ in levels:
        line = plots.band(ax, run.train_steps, run.train_loss[idx], f"lr {lr:g}")
        div = run.diverged_at[idx]
        for step in div[div >= 0]:
            ax.axvline(step, color=line.get_color(), linestyle=":", linewidth=1)
            ax.plot([step], [initial], marker="x", color=line.get_color(), markersize=8)
    ax.set_yscale("log")
    title = "e04: training loss vs step per peak learning rate (x = divergence)"
    plots.finish(ax, title, "step", "train loss (nats/token, log scale)")
    ax = axes[0, 1]
    lrs = [lr for lr, *_ in levels]
    plots.points(
        ax, lrs, [run.final_val_loss[idx] for _, idx, _, _ in levels], "final val loss (finite runs)"
    )
    ax.axhline(initial, color="grey", linestyle="--", label="untrained model")
    ax.set_xscale("log")
    title = "e04: final validation loss vs peak learning rate"
    plots.finish(ax, title, "peak learning rate", "val loss (nats/token)")
    plots.save(fig, outs.plot("lr_sweep.png"))


def lr_threshold(cfg: E04Config, d: Measured, outs: Outputs) -> Finding:
    """Supported when the smallest peak lr trains (val loss below the untrained model's) and the largest
    explodes: every run non-finite, or finite runs ending above the untrained loss."""
    run = d.runs["lr_sweep"]
    initial, levels = _lr_levels(run)
    _lr_plot(run, outs)
    table = Table(
        "Learning-rate sweep (intact text model)",
        ["peak lr", "final val loss", "diverged", "blew up"],
        note=f"{cfg.lr_sweep_steps} steps, {cfg.seeds} seeds per learning rate; the untrained model's val loss "
        f"is {initial:.3f}. 'Diverged' = a non-finite loss or gradient (training of that run stopped "
        "there); 'blew up' = finite but ending above the untrained loss.",
    )
    for lr, idx, ndiv, blew in levels:
        div = run.diverged_at[idx]
        steps = f" (steps {', '.join(str(int(s)) for s in div[div >= 0])})" if ndiv else ""
        table.add(f"{lr:g}", _fmt(run.final_val_loss[idx]), f"{ndiv}/{len(idx)}{steps}", f"{blew}/{len(idx)}")
    outs.table("lr_sweep.md", table)
    means = [summarize(run.final_val_loss[idx]) for _, idx, _, _ in levels]
    best, idx, _, _ = levels[int(np.nanargmin([m.mean if m.n else np.inf for m in means]))]
    ev = f"best peak lr {best:g} ({_fmt(run.final_val_loss[idx])})"
    broken = [(lr, idx, ndiv, blew) for lr, idx, ndiv, blew in levels if ndiv or blew]
    calm = [lr for lr, _, ndiv, blew in levels if not (ndiv or blew) and broken and lr < broken[0][0]]
    if calm:
        ev += f"; every run stayed finite and below the untrained loss up to lr {max(calm):g}"
    for lr, idx, ndiv, blew in broken:
        first = run.diverged_at[idx][run.diverged_at[idx] >= 0]
        ev += f"; lr {lr:g}: {ndiv}/{len(idx)} runs non-finite"
        ev += (f" (first at step {int(first.min())})" if ndiv else "") + f", {blew}/{len(idx)} blew up"
    if not broken:
        ev += f"; no run diverged or blew up up to lr {levels[-1][0]:g}"
    low, top = run.final_val_loss[levels[0][1]], levels[-1][1]
    explodes = (
        "supported"
        if np.all(run.diverged_at[top] >= 0)
        else compare_to(run.final_val_loss[top], initial).verdict("greater")
    )
    verdict = headline([compare_to(low, initial).verdict("less"), explodes])
    return Finding("Past a learning-rate threshold the intact model's training explodes", verdict, ev)


def stacking_blocks(cfg: E04Config, d: Measured, outs: Outputs) -> Finding:
    depths = sorted(cfg.depths)
    own = d.finals[("text", "intact")]
    finals = {n: own if n == cfg.model.n_layers else d.runs[f"depth/L{n}"].final_val_loss for n in depths}
    fig, axes = plots.figure()
    ax = axes[0, 0]
    s = [summarize(finals[n]) for n in depths]
    plots.points(ax, depths, [finals[n] for n in depths], f"intact model, {cfg.train.steps} steps")
    ax.set_xticks(depths)
    title = "e04: stacking blocks — final val loss vs depth (mean ± sd)"
    plots.finish(ax, title, "blocks (n_layers)", "val loss (nats/token)")
    plots.save(fig, outs.plot("depth.png"))
    table = Table("Stacking blocks (intact text model, same steps)", ["blocks", "final val loss"])
    for n, x in zip(depths, s):
        table.add(n, x.fmt())
    outs.table("depth.md", table)
    if len(depths) < 2:
        return Finding("Stacking more blocks lowers the loss", "inconclusive", "one depth only")
    c = compare(finals[depths[0]], finals[depths[-1]])
    ev = (
        f"{depths[0]} block(s) {s[0].fmt()} vs {depths[-1]} blocks {s[-1].fmt()} ({c.fmt()}), "
        "at equal steps (deeper models cost more compute per step)"
    )
    return Finding("Stacking more blocks lowers the loss at equal steps", c.verdict("less"), ev)


def _samples_tables(s: dict) -> tuple[Table, Table]:
    text = Table(
        "Samples",
        ["variant", "trained with the variant", "intact model, variant applied after training"],
        note=f"Text, temperature 0.8, seed-0 model, {s['tokens']} new tokens after the prompt "
        f"`{cell(s['prompt'])}`.",
    )
    for r in s["text"]:
        text.add(r["variant"], f"`{cell(r['trained'])}`", f"`{cell(r['after'])}`")
    sort = Table(
        "Sorting samples",
        ["variant", "input", "output", "correct"],
        note="Sorting, greedy, seed-0 model of each training-time variant.",
    )
    for r in s["sort"]:
        sort.add(r["variant"], r["input"], r["output"], "yes" if r["correct"] else "no")
    return text, sort


def _summary(cfg: E04Config, d: Measured, f2: Finding) -> str:
    swaps = [v for v in SWAPS if v in cfg.variants]
    before = [_label(d, t, v, "train") for t in TASKS for v in swaps]
    after = [_label(d, t, v, "after") for t in TASKS for v in SWAPS]
    if "hurts" in after and "harmless" in before and "hurts" not in before:
        summary = (
            "Q, K and V are not interchangeable in a trained model: rewiring them afterwards raised the loss "
            f"in {after.count('hurts')} of {len(after)} task/swap cases. Before training they are: a "
            f"model trained with two projections swapped matched the intact one ({before.count('harmless')} "
            f"of {len(before)} cases harmless within the margin, none worse), because the three are "
            "identically initialized linear maps of the same input, so a swap only renames them. Removing or "
            f"tying a projection at training time is a different question (finding 2: {f2.verdict})."
        )
    elif "hurts" in after and "hurts" in before:
        summary = "Swapping projections hurt both when trained that way and after training."
    elif after and all(c == "harmless" for c in after):
        summary = "Rewiring a trained model's projections did not hurt it."
    else:
        summary = f"Not enough evidence at this budget (swaps before training: {before}; after: {after})."
    text_unclear = [v for v in swaps if _label(d, "text", v, "train") == "unclear"]
    if text_unclear:
        cost = summarize(d.finals[("text", "zero_v")]).mean - summarize(d.finals[("text", "intact")]).mean
        summary += (
            f" On the text corpus at this budget attention still does little (training without V costs only "
            f"{cost:+.3f} nats), so the text comparisons ({', '.join(text_unclear)}) are too close to call; "
            "the sorting task, which cannot be solved without attention, carries the evidence."
        )
    return summary


def analyze(cfg: E04Config, out: Path):
    d = _load(cfg, out)
    outs = Outputs(out)
    outs.table("qkv_variants.md", _variants_table(cfg, d))
    _curves_plots(cfg, d, outs)
    _heads_plot(d, outs)
    f1, f2, f3 = swaps_before_training(cfg, d), removals_hurt(cfg, d), swaps_after_training(cfg, d)
    findings = [f1, f2, f3, lr_threshold(cfg, d, outs), stacking_blocks(cfg, d, outs)]
    outs.table("samples.md", *_samples_tables(read_measurement(out / "runs" / "samples.json", cfg)))
    # The claim, by the rule: swapping hurts before training (the swaps' "hurts" verdicts), zeroing or
    # tying hurts (finding 2), and swapping a trained model's projections hurts (finding 3).
    swaps = [v for v in SWAPS if v in cfg.variants]
    before = headline([_verdict(d, t, v, "train", "hurts") for t in TASKS for v in swaps])
    return outs.findings(headline([before, f2, f3]), _summary(cfg, d, f2), findings)


EXPERIMENT = Experiment(
    name="e04_qkv",
    title="Transformer blocks: Q, K and V are not interchangeable",
    claim="Q, K and V are not interchangeable: swapping, zeroing or tying them breaks a transformer.",
    config_class=E04Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=check_config,
)
