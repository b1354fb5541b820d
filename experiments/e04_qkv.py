"""Project 4: "Q, K and V are not interchangeable" — transformer blocks, Q/K/V ablations and stacking.

Claim tested: the query, key and value projections play different roles, so swapping, zeroing or tying
them breaks the model. The nuance we measure: Q, K and V are three learned linear maps of the *same*
input with identically distributed initializations, so swapping two of them *before training* is a mere
relabeling (training sees the same problem up to names), while the same swap *on a trained model* is not.

Run:      lab run e04 [--preset smoke|cpu|gpu] [--set train.steps=500] [--seeds 3] [--data NAME]
Redraw:   lab analyze e04
Writes:   results/e04_qkv/
  runs/text/<variant>/, runs/sort/<variant>/   sweeps over seeds of each training-time variant, on the
                                               embedded text corpus (byte-level) and on a sorting task
  runs/lr_sweep/                               the intact text model at growing learning rates
  runs/depth/L<n>/                             the intact text model with n stacked blocks
  plots/*.png, tables/*.md, findings.json

Break (a), training time: `model.qkv` switches (swap_qk, swap_qv, swap_kv, zero_q, zero_k, zero_v,
tie_qk), each trained with the intact model's budget and seeds. Break (b), trained model: the same
rewiring applied to the trained intact weights (lab.model.surgery), whole-model and one head at a time,
measured as the jump in validation loss without retraining.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis.findings import Finding, Findings
from lab.analysis.stats import paired, summarize, welch
from lab.config import check
from lab.data.pipeline import DataConfig, TextData, load_text_data
from lab.data.tasks import Sort, TextWindows
from lab.errors import CheckpointError
from lab.experiment import Experiment
from lab.fileio import atomic_write_text
from lab.infer import generate
from lab.model import PRESETS, ModelConfig, apply
from lab.model.config import QKV
from lab.model.surgery import ROUTES, VARIANTS, mix, rewire
from lab.runs import load_run
from lab.train import Member, SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.train.step import eval_step
from lab.viz import plots

ALL_VARIANTS = typing.get_args(QKV)
VARIANT_INDEX = {v: VARIANTS.index(v) for v in ALL_VARIANTS}  # row of surgery.ROUTES
SWAPS = ("swap_qk", "swap_qv", "swap_kv")
REMOVALS = ("zero_q", "zero_k", "zero_v", "tie_qk")
TASKS = ("text", "sort")
INTERVENTION_CHUNK = 8  # trained-model rewirings evaluated per compiled call (x seeds parameter sets)


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
        check("intact" in self.variants, "variants must include 'intact' (the baseline)")
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


# --- the tasks, built the same way by run and analyze -----------------------------------------------------
def _text(cfg: E04Config) -> tuple[TextData, ModelConfig, TextWindows]:
    text = load_text_data(cfg.data)
    model = cfg.model.replace(vocab_size=text.tokenizer.vocab_size)
    return text, model, TextWindows(model.max_len, model.vocab_size)


def _sort(cfg: E04Config) -> tuple[ModelConfig, Sort, TrainConfig]:
    task = Sort(cfg.sort.n_items, cfg.sort.n_symbols)
    model = cfg.model.replace(vocab_size=task.vocab_size, max_len=task.seq_len)
    return model, task, cfg.train.replace(steps=cfg.sort.steps)


def _lr_train(cfg: E04Config) -> TrainConfig:
    return cfg.train.replace(steps=cfg.lr_sweep_steps)


def check_config(cfg: E04Config) -> None:
    text, _, task = _text(cfg)  # raises DataError for a missing, empty, non-UTF-8 or unknown corpus
    task.check_data(text.arrays)


def variant_forward(cfg: ModelConfig, params, batch, extra):
    """The intact model run on weights rewired as Q/K/V variant `extra[0]` (an index into ALL_VARIANTS).

    Identical to training `cfg.replace(qkv=variant)` (tests/experiments check it), but the variant is a
    traced per-member number, so every variant and seed of one task trains in one vmapped program.
    """
    route = jnp.asarray(ROUTES)[extra[0].astype(jnp.int32)]
    return apply(cfg, mix(params, route), batch["inputs"])


def _variant_members(cfg: E04Config) -> list[Member]:
    return [
        Member(seed, cfg.train.lr, cfg.train.init_scale, (float(VARIANT_INDEX[v]),))
        for v in cfg.variants
        for seed in range(cfg.seeds)
    ]


def run(cfg: E04Config, out: Path, opts) -> None:
    text, tmodel, ttask = _text(cfg)
    smodel, stask, stcfg = _sort(cfg)
    members = _variant_members(cfg)
    kw = dict(strategy=opts.strategy, progress=opts.progress)
    train_sweep(
        out / "runs" / "text",
        SweepSpec(
            model=tmodel,
            train=cfg.train,
            task=ttask,
            data=text.arrays,
            members=members,
            data_info=text.info,
            forward=variant_forward,
        ),
        desc="e04 text, all variants",
        **kw,
    )
    train_sweep(
        out / "runs" / "sort",
        SweepSpec(model=smodel, train=stcfg, task=stask, data={}, members=members, forward=variant_forward),
        desc="e04 sort, all variants",
        **kw,
    )
    train_sweep(
        out / "runs" / "lr_sweep",
        SweepSpec(
            model=tmodel,
            train=_lr_train(cfg),
            task=ttask,
            data=text.arrays,
            members=members_grid(range(cfg.seeds), cfg.lr_sweep, [cfg.train.init_scale]),
            data_info=text.info,
        ),
        desc="e04 lr sweep",
        **kw,
    )
    for depth in cfg.depths:
        if depth == tmodel.n_layers:
            continue  # the intact members of the text sweep are this depth
        train_sweep(
            out / "runs" / "depth" / f"L{depth}",
            SweepSpec(
                model=tmodel.replace(n_layers=depth),
                train=cfg.train,
                task=ttask,
                data=text.arrays,
                members=members_grid(range(cfg.seeds), [cfg.train.lr], [cfg.train.init_scale]),
                data_info=text.info,
            ),
            desc=f"e04 depth {depth}",
            **kw,
        )


# --- analysis: everything below reads files under `out` ---------------------------------------------------
def _members_of(run) -> list[Member]:
    return [Member(m["seed"], m["lr"], m["init_scale"], tuple(m["extra"])) for m in run.members]


def _variant_of(run) -> np.ndarray:
    """(M,) the Q/K/V variant name of each member of a variant sweep."""
    return np.array([ALL_VARIANTS[int(m["extra"][0])] for m in run.members])


def _restore_params(run, model, tcfg):
    """Stacked trained parameters of every member of a variant sweep, from its newest checkpoint."""
    _, state = latest_state(run.run_dir, model, tcfg, _members_of(run))
    return state.params


def _of(run, params, variant: str):
    """The members of `variant` (in seed order) from stacked parameters."""
    idx = np.where(_variant_of(run) == variant)[0]
    return jax.tree_util.tree_map(lambda x: x[idx], params)


def _trained_interventions(cfg, run, params, model, task, tcfg, data):
    """Validation loss of the trained intact model after each rewiring, per seed, without retraining.

    Returns (whole: {variant: (seeds,)}, per_head: {variant: (layers, heads, seeds)}, intact: (seeds,)).
    """
    params = _of(run, params, "intact")
    plans = [(v, None, None) for v in ALL_VARIANTS]
    head_variants = ("zero_v", "swap_qk")
    plans += [(v, l, h) for v in head_variants for l in range(model.n_layers) for h in range(model.n_heads)]
    # Stacks of (plan x seed) parameter sets, CHUNK plans at a time (the last chunk padded, so one compiled,
    # vmapped eval serves all) to bound memory at large presets.
    ev = jax.jit(jax.vmap(lambda p, d: eval_step(p, d, cfg=model, tcfg=tcfg, task=task), in_axes=(0, None)))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    chunk = min(INTERVENTION_CHUNK, len(plans))
    losses = []
    for i in range(0, len(plans), chunk):
        group = plans[i : i + chunk]
        padded = group + [group[-1]] * (chunk - len(group))
        stacked = [jax.vmap(lambda p, v=v, l=l, h=h: rewire(p, v, l, h))(params) for v, l, h in padded]
        batch = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *stacked)
        out = np.asarray(ev(batch, data)["val_loss"]).reshape(chunk, cfg.seeds)
        losses.append(out[: len(group)])
    losses = np.concatenate(losses)
    whole = {v: losses[i] for i, (v, l, _h) in enumerate(plans) if l is None}
    per_head = {
        v: np.stack(
            [
                np.stack([losses[plans.index((v, l, h))] for h in range(model.n_heads)])
                for l in range(model.n_layers)
            ]
        )
        for v in head_variants
    }
    return whole, per_head, whole["intact"]


def _samples(cfg, runs, params, text, tmodel, smodel, stask):
    """Generated text per variant (seed 0), and sorting outputs, as Markdown."""
    lines = ["### Samples", ""]
    prompt_ids = text.val[:32].astype(np.int32)[None]
    prompt = text.tokenizer.decode(prompt_ids[0])
    key = jax.random.PRNGKey(0)
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    # Every variant is run as the intact model on rewired weights, so one compiled generator serves all.
    trained = [rewire(first(_of(runs["text"], params["text"], v)), v) for v in cfg.variants]
    intact0 = first(_of(runs["text"], params["text"], "intact"))
    after = [rewire(intact0, v) for v in cfg.variants]
    stack = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(trained + after))
    gen = jax.vmap(lambda p: generate(tmodel, p, prompt_ids, cfg.sample_tokens, temperature=0.8, key=key)[0])
    toks = np.asarray(gen(stack))
    lines += [
        f"Text, temperature 0.8, seed-0 model, {cfg.sample_tokens} new tokens after the prompt "
        f"`{_inline(prompt)}`.",
        "",
        "| variant | trained with the variant | intact model, variant applied after training |",
        "|---|---|---|",
    ]
    n = len(cfg.variants)
    for i, v in enumerate(cfg.variants):
        a = text.tokenizer.decode(toks[i][prompt_ids.shape[1] :])
        b = text.tokenizer.decode(toks[n + i][prompt_ids.shape[1] :])
        lines.append(f"| {v} | `{_inline(a)}` | `{_inline(b)}` |")
    # Sorting: greedy completion of two fixed inputs by the seed-0 model of each variant.
    batch = stask.sample({}, "val", jax.random.PRNGKey(7), 2)
    prefix = batch["inputs"][:, : stask.n_items + 1]
    sorters = [rewire(first(_of(runs["sort"], params["sort"], v)), v) for v in cfg.variants]
    stack = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *sorters)
    outs = np.asarray(jax.vmap(lambda p: generate(smodel, p, prefix, stask.n_items))(stack))
    lines += [
        "",
        "Sorting, greedy, seed-0 model of each training-time variant.",
        "",
        "| variant | input | output | correct |",
        "|---|---|---|---|",
    ]
    for i, v in enumerate(cfg.variants):
        for j in range(2):
            x = np.asarray(prefix[j, : stask.n_items])
            y = outs[i, j, stask.n_items + 1 :]
            ok = "yes" if np.array_equal(np.sort(x), y) else "no"
            lines.append(f"| {v} | {stask.decode(x)} | {stask.decode(y)} | {ok} |")
    return "\n".join(lines) + "\n"


def _inline(s: str) -> str:
    """One Markdown table cell: newlines shown as ⏎, control bytes escaped, table syntax defused."""
    s = s.replace("\n", "⏎").replace("|", "¦").replace("`", "'")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in s)


def _fmt_cmp(c) -> str:
    return f"Δ {c.diff:+.3f} [95% CI {c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], p={c.p:.2g}"


def _classify(c, margin: float) -> str:
    """'harmless' if the 95% CI of the difference lies inside ±margin, 'hurts' if it lies above +margin
    (or is significant and larger than the margin), 'helps' symmetric, else 'unclear'."""
    lo, hi = c.ci95
    if np.isfinite(lo) and -margin < lo and hi < margin:
        return "harmless"
    if c.diff > margin and (c.significant() or (np.isfinite(lo) and lo > 0)):
        return "hurts"
    if c.diff < -margin and c.significant():
        return "helps"
    return "unclear"


def analyze(cfg: E04Config, out: Path) -> Findings:
    text, tmodel, ttask = _text(cfg)
    smodel, stask, stcfg = _sort(cfg)
    runs = {t: load_run(out / "runs" / t) for t in TASKS}
    variant_of = {t: _variant_of(runs[t]) for t in TASKS}
    recorded = runs["text"].config.get("data", {}).get("sha256")
    if recorded != text.info["sha256"]:
        raise CheckpointError(
            f"the corpus {cfg.data.name!r} has changed since training (sha256 {recorded} on disk, "
            f"{text.info['sha256']} now); rerun `lab run e04 --fresh`"
        )
    finals = {(t, v): runs[t].final_val_loss[variant_of[t] == v] for t in TASKS for v in cfg.variants}
    tables, plot_files, findings = [], [], []

    # ---- (b) trained-model interventions --------------------------------------------------------------
    params = {  # each checkpoint restored once; every variant and seed is a slice of it
        "text": _restore_params(runs["text"], tmodel, cfg.train),
        "sort": _restore_params(runs["sort"], smodel, stcfg),
    }
    trained = {
        "text": _trained_interventions(
            cfg, runs["text"], params["text"], tmodel, ttask, cfg.train, text.arrays
        ),
        "sort": _trained_interventions(cfg, runs["sort"], params["sort"], smodel, stask, stcfg, {}),
    }

    # The equivalence margin: a tenth of what removing V costs at training time (zero_v leaves attention
    # with nothing to move; if it was not run, the largest training-time harm). "Harmless" then means
    # "its 95% interval fits inside a tenth of the cost of breaking attention outright".
    margins = {}
    for t in TASKS:
        base = summarize(finals[(t, "intact")]).mean
        if "zero_v" in cfg.variants:
            harm = summarize(finals[(t, "zero_v")]).mean - base
        else:
            harm = max(
                [summarize(finals[(t, v)]).mean - base for v in cfg.variants if v != "intact"] or [0.0]
            )
        margins[t] = max(0.1 * harm, 1e-3) if np.isfinite(harm) else 1e-3

    # ---- table: training-time variants vs trained-model rewiring ---------------------------------------
    rows = [
        "| task | variant | trained with variant: val loss | vs intact | | "
        "applied to trained intact model: val loss | jump | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {}
    for t in TASKS:
        base = finals[(t, "intact")]
        whole, _, intact_after = trained[t]
        for v in ALL_VARIANTS:
            trained_cell = cmp_cell = cls_a = ""
            if v in cfg.variants:
                c = welch(base, finals[(t, v)])
                cls_a = "—" if v == "intact" else _classify(c, margins[t])
                trained_cell = summarize(finals[(t, v)]).fmt()
                cmp_cell = "" if v == "intact" else _fmt_cmp(c)
                verdicts[(t, v, "train")] = (cls_a, c)
            cb = paired(intact_after, whole[v])
            cls_b = "—" if v == "intact" else _classify(cb, margins[t])
            verdicts[(t, v, "after")] = (cls_b, cb)
            rows.append(
                f"| {t} | {v} | {trained_cell or 'not run'} | {cmp_cell} | {cls_a} | {summarize(whole[v]).fmt()} | "
                f"{'' if v == 'intact' else _fmt_cmp(cb)} | {cls_b} |"
            )
    table = (
        "### Final validation loss (nats/token), mean ± sd over seeds\n\n"
        f"Margins for 'harmless' (a tenth of what zero_v costs at training time): text ±{margins['text']:.3f}, "
        f"sort ±{margins['sort']:.3f}. Training-time rows compare independent runs (Welch t-test); "
        "trained-model rows compare the same seeds before and after rewiring (paired t-test).\n\n"
        + "\n".join(rows)
        + "\n"
    )
    atomic_write_text(out / "tables" / "qkv_variants.md", table)
    tables.append("tables/qkv_variants.md")

    # ---- plots: loss curves per variant; before/after bars ----------------------------------------------
    for t in TASKS:
        fig, axes = plots.figure()
        ax = axes[0, 0]
        for v in cfg.variants:
            r = runs[t]
            plots.band(ax, r.train_steps, r.train_loss[variant_of[t] == v], v)
        ax.set_yscale("log")
        plots.finish(
            ax,
            f"e04 {t}: training loss per Q/K/V variant (mean ± sd over {cfg.seeds} seeds)",
            "step",
            "train loss (nats/token, log scale)",
        )
        plot_files.append(str(plots.save(fig, out / "plots" / f"loss_curves_{t}.png").relative_to(out)))

    fig, axes = plots.figure(ncols=2, width=5.5)
    for ax, t in zip(axes[0], TASKS):
        xs = np.arange(len(ALL_VARIANTS))
        a = [summarize(finals[(t, v)]) if v in cfg.variants else None for v in ALL_VARIANTS]
        b = [summarize(trained[t][0][v]) for v in ALL_VARIANTS]
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
    plot_files.append(str(plots.save(fig, out / "plots" / "before_after_training.png").relative_to(out)))

    # ---- per-head ablation heatmaps ---------------------------------------------------------------------
    fig, axes = plots.figure(ncols=2, nrows=2, width=4.5, height=3.0)
    head_notes = []
    for row, t in enumerate(TASKS):
        _, per_head, intact_after = trained[t]
        for col, v in enumerate(("zero_v", "swap_qk")):
            jump = (per_head[v] - intact_after[None, None, :]).mean(axis=-1)  # (layers, heads)
            ax = axes[row, col]
            im = ax.imshow(jump, cmap="magma", aspect="auto")
            plots.colorbar(fig, im, ax, "Δ val loss (nats/token)")
            ax.grid(False)
            ax.set_xticks(range(jump.shape[1]))
            ax.set_yticks(range(jump.shape[0]))
            ax.set_title(f"{t}: {v} in one head")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            li, hi = np.unravel_index(np.nanargmax(jump), jump.shape)
            head_notes.append(
                f"{t} {v}: {np.nanmin(jump):+.3f} to {np.nanmax(jump):+.3f} nats "
                f"(largest: layer {li} head {hi})"
            )
    fig.suptitle("e04: loss jump when one head of the trained model is rewired (mean over seeds)")
    plot_files.append(str(plots.save(fig, out / "plots" / "head_interventions.png").relative_to(out)))

    fmt = lambda x: summarize(x).fmt()

    def evidence(variants, phase, describe):
        """(classes, evidence strings) for `variants` on both tasks, before or after training."""
        classes, ev = [], []
        for t in TASKS:
            for v in variants:
                cls, c = verdicts[(t, v, phase)]
                classes.append(cls)
                ev.append(f"{t} {v}: {describe(t, v)} ({_fmt_cmp(c)}; {cls})")
        return classes, ev

    # ---- finding 1: swaps before training are relabelings ------------------------------------------------
    swaps_run = [v for v in SWAPS if v in cfg.variants]
    classes, ev = evidence(
        swaps_run, "train", lambda t, v: f"{fmt(finals[(t, v)])} vs intact {fmt(finals[(t, 'intact')])}"
    )
    f1 = _verdict_all(classes, "harmless", "hurts")
    findings.append(
        Finding(
            "Swapping two projections before training costs nothing (a relabeling)",
            f1,
            "; ".join(ev) or "not run",
        )
    )

    # ---- finding 2: removing or tying a projection hurts -------------------------------------------------
    rem_run = [v for v in REMOVALS if v in cfg.variants]
    classes, ev = evidence(rem_run, "train", lambda t, v: fmt(finals[(t, v)]))
    f2 = _verdict_all(classes, "hurts", "harmless")
    if "zero_q" in rem_run and "zero_k" in rem_run:
        same = all(np.array_equal(finals[(t, "zero_q")], finals[(t, "zero_k")]) for t in TASKS)
        ev.append(
            "zero_q and zero_k "
            + ("give identical numbers" if same else "differ")
            + ": either way every score q·k is 0, so attention is a uniform average over the visible prefix"
        )
    if "tie_qk" in rem_run:
        tie = [verdicts[(t, "tie_qk", "train")][0] for t in TASKS]
        ev.append(
            "tie_qk makes every score symmetric (k_i·k_j = k_j·k_i); "
            + (
                "it hurt where marked, since a query can no longer look for something unlike itself"
                if "hurts" in tie
                else "it cost little here: the causal mask and the row-wise softmax still make attention "
                "asymmetric, so a symmetric score matrix constrains less than it seems"
            )
        )
    findings.append(
        Finding("Zeroing Q, K or V, or tying Q = K, at training time hurts", f2, "; ".join(ev) or "not run")
    )

    # ---- finding 3: the same swaps on a trained model hurt ----------------------------------------------
    whole = {t: trained[t][0] for t in TASKS}
    classes, ev = evidence(SWAPS, "after", lambda t, v: f"{fmt(whole[t]['intact'])} → {fmt(whole[t][v])}")
    f3 = _verdict_all(classes, "hurts", "harmless")
    findings.append(
        Finding(
            "Swapping the projections of a trained model breaks it",
            f3,
            "; ".join(ev) + ". One head at a time: " + "; ".join(head_notes),
        )
    )

    # ---- finding 4: learning-rate sweep ---------------------------------------------------------------
    lr_run = load_run(out / "runs" / "lr_sweep")
    f4, lr_table, lr_plot = _lr_findings(cfg, out, lr_run)
    findings.append(f4)
    tables.append(lr_table)
    plot_files.append(lr_plot)

    # ---- finding 5: stacking blocks ---------------------------------------------------------------------
    f5, depth_table, depth_plot = _depth_findings(cfg, out, finals[("text", "intact")])
    findings.append(f5)
    tables.append(depth_table)
    plot_files.append(depth_plot)

    # ---- samples ----------------------------------------------------------------------------------------
    atomic_write_text(out / "tables" / "samples.md", _samples(cfg, runs, params, text, tmodel, smodel, stask))
    tables.append("tables/samples.md")

    # ---- headline ---------------------------------------------------------------------------------------
    swap_before = [verdicts[(t, v, "train")][0] for t in TASKS for v in swaps_run]
    swap_after = [verdicts[(t, v, "after")][0] for t in TASKS for v in SWAPS]
    if "hurts" in swap_after and "harmless" in swap_before and "hurts" not in swap_before:
        verdict = "qualified"
        summary = (
            "Q, K and V are not interchangeable in a trained model: rewiring them afterwards raised the loss "
            f"in {swap_after.count('hurts')} of {len(swap_after)} task/swap cases. Before training they are: a "
            f"model trained with two projections swapped matched the intact one ({swap_before.count('harmless')} "
            f"of {len(swap_before)} cases harmless within the margin, none worse), because the three are "
            "identically initialized linear maps of the same input, so a swap only renames them. Removing or "
            f"tying a projection at training time is a different question (finding 2: {f2})."
        )
    elif "hurts" in swap_after and "hurts" in swap_before:
        verdict, summary = (
            "supported",
            "Swapping projections hurt both when trained that way and after training.",
        )
    elif swap_after and all(c == "harmless" for c in swap_after):
        verdict, summary = "refuted", "Rewiring a trained model's projections did not hurt it."
    else:
        verdict = "inconclusive"
        summary = (
            f"Not enough evidence at this budget (swaps before training: {swap_before}; after: {swap_after})."
        )
    text_unclear = [v for v in swaps_run if verdicts[("text", v, "train")][0] == "unclear"]
    if text_unclear and "zero_v" in cfg.variants:
        cost = summarize(finals[("text", "zero_v")]).mean - summarize(finals[("text", "intact")]).mean
        summary += (
            f" On the text corpus at this budget attention still does little (training without V costs only "
            f"{cost:+.3f} nats), so the text comparisons ({', '.join(text_unclear)}) are too close to call; "
            "the sorting task, which cannot be solved without attention, carries the evidence."
        )
    return Findings(
        verdict=verdict,
        summary=summary,
        findings=findings,
        tables=tables,
        plots=plot_files,
    )


def _verdict_all(classes: list[str], good: str, bad: str) -> str:
    if not classes:
        return "inconclusive"
    if all(c == good for c in classes):
        return "supported"
    if all(c == bad for c in classes):
        return "refuted"
    if any(c == good for c in classes):
        return "qualified"
    return "inconclusive"


def _lr_findings(cfg: E04Config, out: Path, run) -> tuple[Finding, str, str]:
    lrs = np.array([m["lr"] for m in run.members])
    levels = sorted(set(lrs.tolist()))
    initial = np.nanmean(run.val_loss[:, 0])  # loss of the untrained model (all members start alike)
    fig, axes = plots.figure(ncols=2, width=5.5)
    ax = axes[0, 0]
    rows = [
        "### Learning-rate sweep (intact text model)",
        "",
        f"{cfg.lr_sweep_steps} steps, {cfg.seeds} seeds per learning rate; the untrained model's val loss "
        f"is {initial:.3f}. 'Diverged' = a non-finite loss or gradient (training of that run stopped "
        "there); 'blew up' = finite but ending above the untrained loss.",
        "",
        "| peak lr | final val loss | diverged | blew up |",
        "|---|---|---|---|",
    ]
    stable, broken = [], []
    for lr in levels:
        idx = np.where(lrs == lr)[0]
        line = plots.band(ax, run.train_steps, run.train_loss[idx], f"lr {lr:g}")
        div = run.diverged_at[idx]
        for d in div[div >= 0]:
            ax.axvline(d, color=line.get_color(), linestyle=":", linewidth=1)
            ax.plot([d], [initial], marker="x", color=line.get_color(), markersize=8)
        fin = run.final_val_loss[idx]
        blew = int(np.sum(np.isfinite(fin) & (fin > initial)))
        ndiv = int(np.sum(div >= 0))
        rows.append(
            f"| {lr:g} | {summarize(fin).fmt()} | {ndiv}/{len(idx)}"
            f"{' (steps ' + ', '.join(str(int(d)) for d in div[div >= 0]) + ')' if ndiv else ''} | "
            f"{blew}/{len(idx)} |"
        )
        (broken if ndiv or blew else stable).append((lr, ndiv, blew, len(idx)))
    ax.set_yscale("log")
    plots.finish(
        ax,
        "e04: training loss vs step per peak learning rate (x = divergence)",
        "step",
        "train loss (nats/token, log scale)",
    )
    ax = axes[0, 1]
    means = [summarize(run.final_val_loss[lrs == lr]) for lr in levels]
    plots.points(ax, levels, [run.final_val_loss[lrs == lr] for lr in levels], "final val loss (finite runs)")
    ax.axhline(initial, color="grey", linestyle="--", label="untrained model")
    ax.set_xscale("log")
    plots.finish(
        ax, "e04: final validation loss vs peak learning rate", "peak learning rate", "val loss (nats/token)"
    )
    plot = str(plots.save(fig, out / "plots" / "lr_sweep.png").relative_to(out))
    atomic_write_text(out / "tables" / "lr_sweep.md", "\n".join(rows) + "\n")
    best = levels[int(np.nanargmin([m.mean if m.n else np.inf for m in means]))]
    ev = f"best peak lr {best:g} ({summarize(run.final_val_loss[lrs == best]).fmt()})"
    if broken:
        calm = [lr for lr, *_ in stable if lr < broken[0][0]]
        if calm:
            ev += f"; every run stayed finite and below the untrained loss up to lr {max(calm):g}"
        for lr, ndiv, blew, n in broken:
            first = run.diverged_at[(lrs == lr) & (run.diverged_at >= 0)]
            ev += f"; lr {lr:g}: {ndiv}/{n} runs non-finite"
            ev += (f" (first at step {int(first.min())})" if ndiv else "") + f", {blew}/{n} blew up"
    else:
        ev += f"; no run diverged or blew up up to lr {levels[-1]:g}"
    if any(ndiv for _, ndiv, _, _ in broken):
        verdict = "supported"
    elif broken:
        verdict = "qualified"  # the loss explodes but stays finite: clipping and pre-norm hold it
    else:
        verdict = "refuted"
    return (
        Finding("Past a learning-rate threshold the intact model's training explodes", verdict, ev),
        "tables/lr_sweep.md",
        plot,
    )


def _depth_findings(cfg: E04Config, out: Path, intact_finals) -> tuple[Finding, str, str]:
    depths = sorted(cfg.depths)
    finals = {
        d: intact_finals
        if d == cfg.model.n_layers
        else load_run(out / "runs" / "depth" / f"L{d}").final_val_loss
        for d in depths
    }
    fig, axes = plots.figure()
    ax = axes[0, 0]
    s = [summarize(finals[d]) for d in depths]
    plots.points(ax, depths, [finals[d] for d in depths], f"intact model, {cfg.train.steps} steps")
    ax.set_xticks(depths)
    plots.finish(
        ax,
        "e04: stacking blocks — final val loss vs depth (mean ± sd)",
        "blocks (n_layers)",
        "val loss (nats/token)",
    )
    plot = str(plots.save(fig, out / "plots" / "depth.png").relative_to(out))
    rows = [
        "### Stacking blocks (intact text model, same steps)",
        "",
        "| blocks | final val loss |",
        "|---|---|",
    ] + [f"| {d} | {x.fmt()} |" for d, x in zip(depths, s)]
    atomic_write_text(out / "tables" / "depth.md", "\n".join(rows) + "\n")
    if len(depths) < 2:
        return (
            Finding("Stacking more blocks lowers the loss", "inconclusive", "one depth only"),
            "tables/depth.md",
            plot,
        )
    c = welch(finals[depths[0]], finals[depths[-1]])
    ev = (
        f"{depths[0]} block(s) {s[0].fmt()} vs {depths[-1]} blocks {s[-1].fmt()} ({_fmt_cmp(c)}), "
        "at equal steps (deeper models cost more compute per step)"
    )
    verdict = (
        "supported"
        if c.diff < 0 and c.significant()
        else ("refuted" if c.diff > 0 and c.significant() else "inconclusive")
    )
    return (
        Finding("Stacking more blocks lowers the loss at equal steps", verdict, ev),
        "tables/depth.md",
        plot,
    )


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
