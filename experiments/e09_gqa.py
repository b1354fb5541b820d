"""Project 9: "Most speedups come from architectural constraints" — grouped-query attention (GQA).

Claim tested: constraining groups of query heads to share one key/value head (G key/value heads instead
of H; G = 1 is multi-query attention) shrinks the KV cache by H/G and so speeds up memory-bound decoding,
at a small cost in quality that a converted multi-head checkpoint recovers with brief uptraining
(Ainslie et al. 2023). Measured:
  1. quality: a multi-head (MHA) model trained on text, converted to each G by mean-pooling its key/value
     heads (lab.model.gqa) and uptrained `uptrain_steps` more steps (evaluated before and after), against
     the same GQA shapes trained from scratch. G = H must reproduce the MHA exactly, and its uptraining is
     the control (what the extra steps alone buy);
  2. KV-cache bytes vs G, measured arrays vs the formula;
  3. decode latency vs G, batch and context (greedy decode steps ending on a full fixed-shape cache), with
     random weights of the same shape (speed does not depend on their values), repeated `decode_repeats`
     times. A speedup is decided on the log scale: log(seconds of MHA) - log(seconds of G), whose 95% CI
     (Welch, over repeats) must exclude 0 (1x).

Run:      lab run e09 [--preset smoke|cpu|gpu] [--set uptrain_steps=60] [--seeds 3] [--data NAME]
Redraw:   lab analyze e09
Writes:   results/e09_gqa/
  runs/mha/               the multi-head sweep over seeds (metrics, checkpoints)
  runs/scratch/G<g>/      GQA with g key/value heads trained from scratch
  runs/uptrain/G<g>/      the converted MHA members uptrained (metrics: step 0 = right after conversion)
  runs/decode.json        per (G, context, batch): seconds per decode step per repeat, cache bytes
  plots/*.png, tables/*.md, findings.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, beside, compare, contrast, headline, summarize
from lab.config import check, check_at_least, check_causal, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.experiment import Experiment
from lab.infer.timing import decode_step_seconds
from lab.model import PRESETS, ModelConfig, init
from lab.model.gqa import gqa_config, mha_to_gqa
from lab.model.transformer import cache_memory
from lab.ops import kv_cache
from lab.progress import weighted
from lab.runs import load_runs, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.viz import plots

CLAIM = "Most speedups come from architectural constraints: sharing K/V heads (GQA/MQA) speeds up decoding."
# A speedup under 1.2x is too small to call one (fixed with the claim, before measuring; the pre-foundation
# rule's threshold). Speedups are decided on the log scale, so the margin is ±log(1 + this): a speedup whose
# CI lies inside [1/1.2, 1.2] is no speedup worth the name (refuted).
SPEEDUP_MARGIN = 0.2
LOG_MARGIN = float(np.log1p(SPEEDUP_MARGIN))


@dataclass(frozen=True)
class E09Config:
    model: ModelConfig = PRESETS["cpu"]  # the multi-head model (n_kv_heads unset)
    train: TrainConfig = TrainConfig(steps=300, warmup_steps=30, ckpt_every=300)  # batch 16, eval every 100
    data: DataConfig = DataConfig()
    groups: tuple[int, ...] = (1, 2, 4)  # key/value heads G; n_heads = MHA, 1 = MQA
    uptrain_steps: int = 30  # 10% of pretraining (Ainslie et al. used 5%)
    seeds: int = 3
    decode_contexts: tuple[int, ...] = (128, 1024)  # cache length when timing a decode step
    decode_batches: tuple[int, ...] = (1, 64)
    decode_steps: int = 16  # decode steps per timed call
    # Timed calls per (G, context, batch): a speedup's CI comes from these (Welch over repeats of log time),
    # so too few leave every speedup inconclusive. 20 add ~15 s to the cpu preset on 2 cores.
    decode_repeats: int = 20

    def __post_init__(self):
        h = self.model.n_heads
        check_at_least(self, 1, "seeds", "uptrain_steps", "groups", "decode_contexts", "decode_batches")
        check_at_least(self, 2, "decode_repeats")  # a CI needs two values
        check(self.model.kv_heads == h, "model must be multi-head: leave model.n_kv_heads unset")
        check_causal(self.model, "e09 trains causal language models")
        check_distinct(self, "groups", "decode_contexts", "decode_batches")
        check(all(h % g == 0 for g in self.groups), f"groups must divide model.n_heads ({h})")
        check(h in self.groups, f"groups must include model.n_heads ({h}): the MHA reference and control")
        check(
            min(self.groups) < h, f"groups must include a G below model.n_heads ({h}): the shared K/V heads"
        )
        msg = f"decode_steps must be in [1, min(decode_contexts)), got {self.decode_steps}"
        check(1 <= self.decode_steps < min(self.decode_contexts), msg)


# fmt: off
PRESET_TABLE = {
    "smoke": E09Config(model=PRESETS["smoke"], train=TRAIN_PRESETS["smoke"].replace(steps=10), groups=(1, 2),
                       uptrain_steps=10, decode_contexts=(32,), decode_batches=(1, 4), decode_steps=4,
                       decode_repeats=3),
    "cpu": E09Config(),
    "gpu": E09Config(model=PRESETS["gpu"].replace(n_heads=8, d_model=512), train=TRAIN_PRESETS["gpu"],
                     data=DataConfig(name="pystdlib"), groups=(1, 2, 4, 8), uptrain_steps=150,
                     decode_contexts=(256, 4096), decode_batches=(1, 16, 128), decode_steps=32),
}
# fmt: on


# --- run ---------------------------------------------------------------------------------------------------
def run(cfg: E09Config, out: Path, opts) -> None:
    lm = text_lm(cfg.data, cfg.model)
    runs, h, kw = out / "runs", lm.model.n_heads, opts.train_kw()
    members = members_grid(range(cfg.seeds), [cfg.train.lr], [cfg.train.init_scale])
    spec = SweepSpec.text(lm, cfg.train, members)
    train_sweep(runs / "mha", spec, desc="e09 MHA", **kw)
    for g in (g for g in cfg.groups if g != h):
        scratch = spec.replace(model=gqa_config(lm.model, g))
        train_sweep(runs / "scratch" / f"G{g}", scratch, desc=f"e09 GQA G={g} from scratch", **kw)
    # Uptraining: each MHA member converted to G heads, trained on with a fresh optimizer; its seed decides
    # the batches; step 0's evaluation is the converted model's. Eval and checkpoint at the end only.
    k = cfg.uptrain_steps
    log = max(d for d in range(1, min(cfg.train.log_every, k) + 1) if k % d == 0)  # logs end at step k
    ut = cfg.train.replace(steps=k, warmup_steps=max(1, k // 10), log_every=log, eval_every=k, ckpt_every=k)
    up = spec.replace(train=ut)
    _, state = latest_state(runs / "mha", lm.model, cfg.train, members)
    for g in cfg.groups:
        grouped = up.replace(model=gqa_config(lm.model, g), init_params=mha_to_gqa(state.params, g))
        train_sweep(runs / "uptrain" / f"G{g}", grouped, desc=f"e09 convert + uptrain G={g}", **kw)
    write_measurement(runs / "decode.json", _decode(cfg, lm.model, opts), cfg)


def _decode(cfg, model, opts) -> dict:
    """Seconds per decode step over a full cache, per (G, context, batch), repeated `decode_repeats` times."""
    rows = []
    grid = [(g, c, b) for g in cfg.groups for c in cfg.decode_contexts for b in cfg.decode_batches]
    cost = lambda gcb: _decode_seconds(cfg, model, *gcb)
    label = lambda gcb: "G={}, context {}, batch {}".format(*gcb)
    for g, c, b in weighted(grid, cost, "e09 decode timing", opts.progress, label):
        m = gqa_config(model, g).replace(max_len=c)
        s = decode_step_seconds(m, init(m, jax.random.PRNGKey(0)), b, c, cfg.decode_steps, cfg.decode_repeats)
        rows.append({"groups": g, "context": c, "batch": b, "seconds_per_step": s} | cache_memory(m, b, c))
    return {"n_heads": model.n_heads, "layers": model.n_layers, "head_dim": model.head_dim, "rows": rows}


# What one decode-timing unit is expected to cost, for the progress bar's ETA only: seconds on the 2-core CPU
# the cpu preset is sized for (fitted to a run of it); results never use these.
COMPILE_S = 1.0  # compiling a model's initialization, or its decode steps
CALL_S = 5e-3  # the fixed cost of one timed call (a fresh cache, dispatch)
CACHE_BYTES_PER_S = 3e9  # reading the K/V cache in a decode step


def _decode_seconds(cfg, model, g: int, c: int, b: int) -> float:
    """A decode-timing unit: compiling its decode steps (and, at the first batch of each (G, context), the
    model's initialization), then decode_repeats + 1 calls of decode_steps steps, each step reading the whole
    cache."""
    m = gqa_config(model, g)
    cache = kv_cache.cache_bytes(m.n_layers, b, m.kv_heads, m.head_dim, c, jnp.dtype(m.dtype).itemsize)
    compiles = 2 if b == cfg.decode_batches[0] else 1
    calls = cfg.decode_repeats + 1
    return compiles * COMPILE_S + calls * (CALL_S + cfg.decode_steps * cache / CACHE_BYTES_PER_S)


# --- analysis: reads the run directories and runs/decode.json ----------------------------------------------
def _ms(x) -> str:
    return summarize(x).fmt()


def _quality(cfg: E09Config, out: Path) -> dict:
    """Per-seed val losses: the MHA, each G converted ("before"), uptrained ("after"), from scratch."""
    h, runs = cfg.model.n_heads, out / "runs"
    dirs = {"mha": runs / "mha", **{f"up{g}": runs / "uptrain" / f"G{g}" for g in cfg.groups}}
    r = load_runs({**dirs, **{f"scratch{g}": runs / "scratch" / f"G{g}" for g in cfg.groups if g != h}})
    q = {"mha": r["mha"].final_val_loss, "up": {g: r[f"up{g}"] for g in cfg.groups}}
    q["before"] = {g: q["up"][g].val_loss[:, 0] for g in cfg.groups}  # step 0: converted, untrained
    q["after"] = {g: q["up"][g].val_loss[:, -1] for g in cfg.groups}
    q["scratch"] = {g: r[f"scratch{g}"].final_val_loss if g != h else q["mha"] for g in cfg.groups}
    return q


def _quality_outputs(cfg: E09Config, q: dict, outs: Outputs) -> None:
    gs, h, k, steps = sorted(cfg.groups), cfg.model.n_heads, cfg.uptrain_steps, cfg.train.steps
    fig, axes = plots.figure(ncols=2, width=5.5)
    ax = axes[0, 0]
    plots.points(ax, gs, [q["before"][g] for g in gs], "converted (mean-pooled), no training")
    plots.points(ax, gs, [q["after"][g] for g in gs], f"converted + {k} uptraining steps")
    plots.points(ax, gs, [q["scratch"][g] for g in gs], f"trained from scratch ({steps} steps)")
    ax.axhline(summarize(q["mha"]).mean, color="grey", linestyle=":", label="MHA (G = H)")
    plots.log_axes(ax, 2, ylog=False, xticks=gs)
    title = "e09: validation loss vs key/value heads G (mean ± sd)"
    plots.finish(ax, title, "key/value heads G (H = MHA, 1 = MQA)", "val loss (nats/token)")
    for g in gs:
        plots.band(axes[0, 1], q["up"][g].train_steps, q["up"][g].train_loss, f"G = {g}")
    title = "e09: uptraining the converted models"
    plots.finish(axes[0, 1], title, "uptraining step", "train loss (nats/token)")
    plots.save(fig, outs.plot("quality.png"))
    title = f"Validation loss vs G (mean ± sd over {cfg.seeds} seeds; MHA trained {steps} steps)"
    cols = ["G (kv heads)", "converted", f"+ {k} uptraining steps", f"from scratch ({steps} steps)"]
    t = Table(title, cols)
    for g in gs:
        name = f"{g}{' (MHA)' if g == h else ' (MQA)' if g == 1 else ''}"
        t.add(name, *(_ms(q[x][g]) for x in ("before", "after", "scratch")))
    outs.table("quality.md", t)


def _exact_finding(cfg: E09Config, q: dict) -> Finding:
    h, mha = cfg.model.n_heads, q["mha"]
    exact = float(np.max(np.abs(q["before"][h] - mha)))
    ev = f"val loss of the G = {h} conversion minus the MHA's own final val loss: max |diff| = {exact:g} "
    ev += f"over {cfg.seeds} seeds ({_ms(q['before'][h])} vs {_ms(mha)})"
    claim = "Converting with G = H reproduces the multi-head model exactly"
    return Finding(claim, "supported" if exact == 0.0 else "refuted", ev)


def _recovery_finding(cfg: E09Config, q: dict) -> Finding:
    """Per G < H, paired by seed: the conversion raises the loss, and after uptraining the gap to the MHA
    with the same extra steps is less than half the rise (uptraining recovered most of it)."""
    h, k, mha = cfg.model.n_heads, cfg.uptrain_steps, q["mha"]
    control, ev, parts = q["after"][h], [], []
    for g in sorted(set(cfg.groups) - {h}):
        jump, rec = compare(mha, q["before"][g], True), compare(control, q["after"][g], True)
        most = compare(0.5 * (q["before"][g] - mha), q["after"][g] - control, True)
        parts += [jump.verdict("greater"), most.verdict("less")]
        e = f"G={g}: conversion {_ms(mha)} → {_ms(q['before'][g])} ({jump.fmt()}); after {k} steps "
        e += f"{_ms(q['after'][g])} vs MHA + {k} steps {_ms(control)} ({rec.fmt(p=False)}; gap left minus "
        ev.append(e + f"half the rise: {most.fmt()})")
    claim = "Mean-pooling K/V heads costs loss, and brief uptraining recovers most of it"
    return Finding(claim, headline(parts), "; ".join(ev))


def _scratch_finding(cfg: E09Config, q: dict) -> Finding:
    k, steps, ev, parts = cfg.uptrain_steps, cfg.train.steps, [], []
    for g in sorted(set(cfg.groups) - {cfg.model.n_heads}):
        c = compare(q["scratch"][g], q["after"][g])
        parts.append(c.verdict("less"))
        up, fresh = _ms(q["after"][g]), _ms(q["scratch"][g])  # uptrained, trained from scratch
        ev.append(f"G={g}: uptrained ({steps}+{k} steps) {up} vs scratch ({steps} steps) {fresh} ({c.fmt()})")
    claim = "An uptrained conversion reaches a lower loss than the same GQA model trained from scratch"
    note = ". The uptrained models saw more steps in total, as in Ainslie et al., whose point is that "
    note += "uptraining is cheaper than pretraining a GQA model."
    return Finding(claim, headline(parts), "; ".join(ev) + note)


def _decode_data(cfg: E09Config, dec: dict) -> dict:
    """Per (G, context, batch): seconds per step (per repeat), the speedup vs MHA as a Comparison on the log
    scale (log MHA seconds - log G seconds, Welch over repeats: its diff and CI are log speedups), cache
    MiB; whether the bytes equal the formula."""
    rows, h = {(r["groups"], r["context"], r["batch"]): r for r in dec["rows"]}, cfg.model.n_heads
    d = {"secs": {key: np.array(r["seconds_per_step"]) for key, r in rows.items()}, "dec": dec}
    d["log"] = {key: np.log(s) for key, s in d["secs"].items()}
    d["speed"] = {(g, c, b): compare(x, d["log"][(h, c, b)]) for (g, c, b), x in d["log"].items()}
    d["repeats"] = sorted({len(s) for s in d["secs"].values()})
    d["mib"] = {key: r["measured_bytes"] / 2**20 for key, r in rows.items()}
    d["exact"] = [r["measured_bytes"] == r["formula_bytes"] for r in rows.values()]
    g1, cs, bs = min(cfg.groups), cfg.decode_contexts, cfg.decode_batches
    d["big"], d["small"] = (g1, max(cs), max(bs)), (g1, min(cs), min(bs))  # the largest and smallest cache
    return d


def _x(c, ci: bool = True) -> str:
    """A log-scale Comparison as a speedup: "2.54× [95% CI 1.90×, 3.39×]" (the CI only where it exists)."""
    s = f"{np.exp(c.diff):.2f}×"
    if ci and np.all(np.isfinite(c.ci95)):
        s += " [95% CI {:.2f}×, {:.2f}×]".format(*np.exp(c.ci95))
    return s


def _speed_word(c) -> str:
    """What the rule says about one speedup (log-scale Comparison) against 1× with the margin."""
    if c.verdict("greater", LOG_MARGIN) == "supported":
        return "faster"
    if c.verdict("less", LOG_MARGIN) == "supported":
        return "slower"
    if c.verdict("equal", LOG_MARGIN) == "supported":
        return f"within ×/÷{1 + SPEEDUP_MARGIN:g} of MHA"
    return "undecided"


def _repeats(d: dict) -> str:
    n = d["repeats"]
    return f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"


def _decode_outputs(cfg: E09Config, d: dict, outs: Outputs) -> None:
    gs, cases = sorted(cfg.groups), [(c, b) for c in cfg.decode_contexts for b in cfg.decode_batches]
    fig, axes = plots.figure(ncols=2, width=5.5)
    for c, b in cases:
        plots.points(axes[0, 0], gs, [1e3 * d["secs"][(g, c, b)] for g in gs], f"context {c}, batch {b}")
        axes[0, 1].plot(gs, [d["mib"][(g, c, b)] for g in gs], marker="o", label=f"context {c}, batch {b}")
    for ax in axes[0]:
        plots.log_axes(ax, 2, xticks=gs)
    title = "e09: decode step latency vs G (full cache, mean ± sd)"
    plots.finish(axes[0, 0], title, "key/value heads G", "ms per decode step (log)")
    plots.finish(axes[0, 1], "e09: KV-cache memory vs G (measured arrays)", "key/value heads G", "MiB (log)")
    plots.save(fig, outs.plot("decode.png"))
    title = f"Decode step vs G ({d['dec']['layers']} layers, {cfg.model.n_heads} query heads of "
    title += f"{d['dec']['head_dim']}; mean ± sd over {_repeats(d)} repeats)"
    cols = [
        "context",
        "batch",
        "G",
        "ms / step",
        "tokens/s",
        "speedup vs MHA",
        "by the rule",
        "KV cache (MiB)",
    ]
    note = (
        "Speedup: exp of the mean log-time difference to MHA, with its 95% CI (Welch over repeats); 'by the "
    )
    m = f"×/÷{1 + SPEEDUP_MARGIN:g}"
    note += f"rule': faster or slower when the CI excludes 1× and does not lie wholly within {m}; within {m} "
    note += "of MHA when it does; undecided otherwise."
    t = Table(title, cols, note=note)
    for (c, b), g in ((case, g) for case in cases for g in gs):
        s, sp, mib = d["secs"][(g, c, b)], d["speed"][(g, c, b)], d["mib"][(g, c, b)]
        ref = g == cfg.model.n_heads
        speed, word = ("1 (reference)", "—") if ref else (_x(sp), _speed_word(sp))
        t.add(c, b, g, summarize(1e3 * s).fmt(3), summarize(b / s).fmt(0), speed, word, f"{mib:.2f}")
    outs.table("decode.md", t)


def _bytes_finding(cfg: E09Config, d: dict) -> Finding:
    (g1, c, b), h, mib = d["big"], cfg.model.n_heads, d["mib"]
    ev = f"measured = formula in {sum(d['exact'])}/{len(d['exact'])} cases; at context {c}, batch {b}: "
    ev += f"{mib[(h, c, b)]:.1f} MiB for MHA vs {mib[(g1, c, b)]:.2f} MiB for G={g1} "
    ev += f"({mib[(h, c, b)] / mib[(g1, c, b)]:.3g}× less; H/G = {h // g1})"
    return Finding("KV-cache bytes shrink by H/G", "supported" if all(d["exact"]) else "refuted", ev)


def _speed_of(cfg: E09Config, d: dict, g: int) -> tuple[list[str], str]:
    """G key/value heads against MHA, on the log scale: faster where the cache is largest (the speedup's CI
    above 1×; refuted inside ×/÷(1 + SPEEDUP_MARGIN)), and more so there than where it is smallest (the
    difference of the two log speedups, a contrast of four groups of repeats, above 0). Returns the two
    verdicts and the evidence."""
    (_, cb, bb), (_, cs, bs), h, lg = d["big"], d["small"], cfg.model.n_heads, d["log"]
    faster = d["speed"][(g, cb, bb)]
    more = contrast([lg[(g, cb, bb)], lg[(h, cb, bb)], lg[(g, cs, bs)], lg[(h, cs, bs)]], [-1, 1, 1, -1])
    verdicts = [faster.verdict("greater", LOG_MARGIN), more.verdict("greater")]
    cases = sorted({(c, b) for (_, c, b) in d["speed"]}, key=lambda cb: d["mib"][(h, *cb)])
    said = {}
    for c, b in cases:
        said.setdefault(_speed_word(d["speed"][(g, c, b)]), []).append(f"context {c} × batch {b}")
    every = "; ".join(
        f"context {c} × batch {b} ({d['mib'][(h, c, b)]:.2f} MiB MHA cache): {_x(d['speed'][(g, c, b)])}"
        for c, b in cases
    )
    ratio, top = d["mib"][(h, cb, bb)] / d["mib"][(g, cb, bb)], float(np.exp(faster.ci95[1]))  # measured
    ev = f"G={g} vs MHA per decode step, {_repeats(d)} timed calls each: {every}. By the rule per case: "
    ev += "; ".join(f"{word} at {', '.join(where)}" for word, where in said.items())
    ev += f". Largest cache against 1× (margin ×/÷{1 + SPEEDUP_MARGIN:g}): {verdicts[0]}; log speedup there "
    ev += f"minus at the smallest: {more.fmt(2)}: {verdicts[1]}. G={g} reads {ratio:.3g}× fewer cache bytes per "
    ev += "step and computes K and V with H/G times fewer weights, while the query and output projections, "
    ev += "the MLP, the norms and the per-call overhead are the same for every G"
    if np.isfinite(top):
        ev += (
            f"; at the largest cache the speedup's CI ends {'below' if top < ratio else 'at or above'} that "
        )
        ev += f"{ratio:.3g}× ({top:.2f}×)"
    return verdicts, ev


def _speed_finding(cfg: E09Config, d: dict) -> Finding:
    """Every G below n_heads (GQA and MQA) against MHA, each by `_speed_of`; the parts composed by headline."""
    shared = sorted(g for g in cfg.groups if g < cfg.model.n_heads)
    parts = [_speed_of(cfg, d, g) for g in shared]
    claim = (
        f"Fewer K/V heads (G = {', '.join(map(str, shared))}) speed up decoding where reading the K/V cache "
        "dominates a step, and more there than where the cache is smallest"
    )
    return Finding(claim, headline([v for vs, _ in parts for v in vs]), " | ".join(ev for _, ev in parts))


def analyze(cfg: E09Config, out: Path):
    outs, q, h = Outputs(out), _quality(cfg, out), cfg.model.n_heads
    d = _decode_data(cfg, read_measurement(out / "runs" / "decode.json", cfg))
    big, small = d["big"], d["small"]
    _quality_outputs(cfg, q, outs)
    _decode_outputs(cfg, d, outs)
    parts = [_exact_finding(cfg, q), _recovery_finding(cfg, q)]
    parts += [_bytes_finding(cfg, d), _speed_finding(cfg, d)]
    aside = _scratch_finding(cfg, q)  # not part of the claim: the uptrained models saw more steps
    g1, speed = big[0], parts[3]
    fewest = f"{'MQA ' if g1 == 1 else ''}(G={g1})"
    summary = f"Decoding ({speed.verdict}, every G < {h}): {fewest} vs MHA, {_x(d['speed'][big])} at context "
    summary += f"{big[1]} × batch {big[2]} ({_speed_word(d['speed'][big])}) and {_x(d['speed'][small])} at "
    summary += f"context {small[1]} × batch {small[2]} ({_speed_word(d['speed'][small])}), with a "
    summary += f"{d['mib'][(h, big[1], big[2])] / d['mib'][big]:.3g}× smaller cache (measured). Quality "
    summary += f"({parts[1].verdict}): converting a trained MHA model by mean-pooling took the "
    summary += f"val loss from {_ms(q['mha'])} to {_ms(q['before'][g1])} for G={g1}; {cfg.uptrain_steps} "
    summary += f"uptraining steps brought it to {_ms(q['after'][g1])} (MHA with the same steps: "
    summary += f"{_ms(q['after'][h])})."
    return outs.findings(headline(parts), summary, [*parts[:2], beside(aside), *parts[2:]])


EXPERIMENT = Experiment(
    name="e09_gqa",
    title="Grouped-query attention: a smaller KV cache, paid for in quality, recovered by uptraining",
    claim=CLAIM,
    config_class=E09Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=lambda cfg: text_lm(cfg.data, cfg.model).check(),
)
