"""Project 10: "Training stability is engineered, not guaranteed" — normalization and activations.

Claim tested: the normalization layers (and where they sit) are what keep a transformer trainable at a
high learning rate; without them the residual stream grows with depth and training fails more often. The
MLP nonlinearity matters less: gated units (SwiGLU, GeGLU, Shazeer 2020) at an equal parameter count
are compared with GELU (exact and tanh) and ReLU.

Run:      lab run e10 [--preset smoke|cpu|gpu] [--set train.steps=500] [--seeds 3] [--data NAME]
Redraw:   lab analyze e10
Writes:   results/e10_norms_activations/
  runs/<norm>-<placement>-<activation>/   one sweep per variant: seeds x {normal, high} peak learning
                                          rate as vmapped members (byte-level text, next-token loss)
  runs/activations.npz                    captured from each checkpoint on 8 validation windows: residual
                                          RMS per depth; violin statistics of seed 0's residual/MLP values
  plots/*.png, tables/*.md, findings.json

Variants. Norms (with GELU): layernorm, rmsnorm and none, pre-norm (GPT-2: x + f(norm(x)), final norm)
and post-norm (Vaswani et al.: norm(x + f(x)); post with "none" is refused, it would be pre with none).
Activations (with pre-LayerNorm): gelu, gelu_tanh, relu, swiglu, geglu; a gated MLP has three matrices,
so its hidden size is round(2 d_ff / 3) (lab.model.config.ModelConfig.ff_dim): MLP parameters then match
the two-matrix MLP's to within d_model per block (exactly here: d_ff = 256 -> 171, 3 x 64 x 171 = 32832
vs 2 x 64 x 256 = 32768, +0.2%).

Gradient clipping is off in this experiment (train.grad_clip=0): it is itself a stabilizer, and with it on,
Adam's bounded steps plus clipping could hide what the norms do (not measured here: `--set train.grad_clip=1`
runs that comparison). "Failed" below means a run whose
loss went non-finite (recorded as divergence, lab.train.step) or that ended above the untrained model's
validation loss; comparisons count a failed run at the untrained model's loss (it learned nothing).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.analysis import Finding, Findings, Outputs, Table, beside, compare, contrast, headline, summarize
from lab.config import check, check_at_least, check_causal, check_choices, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.experiment import Experiment
from lab.model import PRESETS, ModelConfig
from lab.model.config import GATED_ACTIVATIONS, Activation, Norm, NormPlacement
from lab.model.transformer import stacked_capture
from lab.runs import load_runs, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.viz import plots

NORMS = typing.get_args(Norm)
PLACEMENTS = typing.get_args(NormPlacement)
ACTIVATIONS = typing.get_args(Activation)
# post-norm needs a norm: "none-post" is not a variant (it would be pre-norm with none)
NORM_VARIANTS = tuple(f"{n}-{p}" for p in PLACEMENTS for n in NORMS if not (n == "none" and p == "post"))
BASE_NORM, BASE_ACT = "layernorm-pre", "gelu"
BASE = f"{BASE_NORM}-{BASE_ACT}"
ACT_BATCH = 8  # validation windows whose activations are recorded from each checkpoint
# nats: "trains as well as" for RMSNorm vs LayerNorm, the margin its claim has stated since e10 was written
EQUAL_MARGIN = 0.02


@dataclass(frozen=True)
class E10Config:
    model: ModelConfig = PRESETS["cpu"].replace(n_layers=4)
    train: TrainConfig = TrainConfig(steps=150, warmup_steps=15, eval_every=50, ckpt_every=150, grad_clip=0.0)
    data: DataConfig = DataConfig()
    seeds: int = 3
    lrs: tuple[float, ...] = (1e-3, 3e-2)  # a normal and a high peak learning rate
    norms: tuple[str, ...] = NORM_VARIANTS  # "<norm>-<placement>", each trained with gelu
    activations: tuple[str, ...] = ACTIVATIONS  # each trained with pre-LayerNorm

    def __post_init__(self):
        check_at_least(self, 1, "seeds")
        check(len(self.lrs) == 2, f"lrs must be (normal, high), got {self.lrs}")
        check(0 < self.lrs[0] < self.lrs[1], f"lrs must be increasing and > 0, got {self.lrs}")
        check_choices(self, "norms", NORM_VARIANTS, required=(BASE_NORM,))
        check_choices(self, "activations", ACTIVATIONS, required=(BASE_ACT,))
        check_distinct(self, "norms", "activations")
        check_causal(self.model, "e10 trains language models")
        m = self.model
        check(
            f"{m.norm}-{m.norm_placement}-{m.activation}" == BASE,
            "model.norm, model.norm_placement and model.activation are set per variant here; "
            "choose them with `norms` and `activations`",
        )


# fmt: off
PRESET_TABLE = {
    # smoke: the gated MLPs are checked in tests/model; three programs keep this fast
    "smoke": E10Config(model=PRESETS["smoke"], seeds=2,
                       train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20, grad_clip=0.0),
                       norms=("layernorm-pre", "none-pre", "rmsnorm-post"), activations=("gelu",)),
    "cpu": E10Config(),
    "gpu": E10Config(model=PRESETS["gpu"].replace(n_layers=8), lrs=(6e-4, 1e-2),
                     train=TRAIN_PRESETS["gpu"].replace(grad_clip=0.0), data=DataConfig(name="pystdlib")),
}
# fmt: on


# --- variants -----------------------------------------------------------------------------------------------
def _groups(cfg: E10Config) -> dict[str, list[tuple[str, str]]]:
    """(variant name, label) of the norm variants (with the baseline activation) and the activation ones."""
    return {
        "norms": [(f"{n}-{BASE_ACT}", n) for n in cfg.norms],
        "activations": [(f"{BASE_NORM}-{a}", a) for a in cfg.activations],
    }


def variants(cfg: E10Config) -> list[str]:
    """Every trained model, "<norm>-<placement>-<activation>": each norm variant with GELU, each activation
    with pre-LayerNorm (the baseline once)."""
    return list(dict.fromkeys(name for items in _groups(cfg).values() for name, _ in items))


def check_config(cfg: E10Config) -> None:
    text_lm(cfg.data, cfg.model).check()  # the variants' names and model settings are checked by E10Config


def run(cfg: E10Config, out: Path, opts) -> None:
    lm = text_lm(cfg.data, cfg.model)
    members = members_grid(range(cfg.seeds), cfg.lrs, [cfg.train.init_scale])
    tokens = lm.text.val[: ACT_BATCH * cfg.model.max_len].reshape(ACT_BATCH, -1).astype(np.int32)
    acts = {"sha256": np.array(lm.text.info["sha256"])}
    for name in variants(cfg):
        norm, placement, act = name.split("-")
        spec = SweepSpec.text(lm, cfg.train, members)
        spec = spec.replace(model=lm.model.replace(norm=norm, norm_placement=placement, activation=act))
        run_dir = out / "runs" / name
        train_sweep(run_dir, spec, **opts.train_kw(), desc=f"e10 {name}")
        _, state = latest_state(run_dir, spec.model, cfg.train, members)
        inter = stacked_capture(spec.model, state.params, tokens)
        res = np.asarray(inter["residual"])  # (M, L+1, B, T, D)
        acts[f"{name}:rms"] = np.sqrt(np.mean(res**2, axis=(2, 3, 4)))  # (M, L+1)
        for kind, x in (("residual", res), ("mlp", np.asarray(inter["mlp_hidden"]))):  # seed 0, normal lr
            if name.endswith(f"-{BASE_ACT}") if kind == "residual" else name.startswith(f"{BASE_NORM}-"):
                # each layer's violin as matplotlib draws it, kept instead of the values
                stats = plots.violin_stats(x[0].reshape(x.shape[1], -1))
                acts |= {f"{name}:{kind}:{k}": v for k, v in stats.items()}
    write_measurement(out / "runs" / "activations.npz", acts, cfg)


# --- analysis: reads the sweeps' metrics and runs/activations.npz -------------------------------------------
@dataclass
class _Runs:
    cfg: E10Config
    runs: dict  # variant name -> lab.runs.RunData
    initial: float  # the untrained model's validation loss (the baseline's first evaluation, every member)

    def at(self, name: str, lr: float) -> np.ndarray:
        """(M,) which members of a variant's sweep trained at peak learning rate `lr`."""
        return self.runs[name].member_values("lr") == lr

    def failed(self, name: str, lr: float) -> np.ndarray:
        """(seeds,) which runs of a variant at peak learning rate `lr` failed (diverged, or ended above the
        untrained loss)."""
        return self.runs[name].failed(self.initial)[self.at(name, lr)]

    def counted(self, name: str, lr: float) -> np.ndarray:
        """(seeds,) final val loss of a variant at peak learning rate `lr`, a failed run counted as untrained."""
        loss = self.runs[name].final_val_loss[self.at(name, lr)]
        return np.where(self.failed(name, lr), self.initial, loss)

    def compare(self, a: str, b: str, lr: float, p: bool = False):
        """(Comparison of b against a, evidence) on final val loss, a failed run counted as untrained; the
        evidence shows the mean ± sd of the runs that did not fail, and counts the failed ones."""
        loss = {n: self.runs[n].final_val_loss[self.at(n, lr)] for n in (a, b)}
        failed = {n: self.failed(n, lr) for n in (a, b)}
        c = compare(self.counted(a, lr), self.counted(b, lr))
        s = {n: f"{n} {summarize(loss[n], failed[n], 'failed').fmt(count=True)}" for n in (a, b)}
        note = " (failed runs counted at the untrained loss)" if failed[a].any() or failed[b].any() else ""
        return c, f"{s[b]} vs {s[a]} at lr {lr:g}: {c.fmt(p=p)}{note}"


def _table(r: _Runs, outs: Outputs) -> None:
    cfg = r.cfg
    columns = ["variant", "norm", "placement", "activation", "lr", "final val loss", "diverged", "failed"]
    t = Table(
        "Final validation loss per variant and peak learning rate",
        [*columns, "max grad norm"],
        note=f"{cfg.train.steps} steps, {cfg.seeds} seeds per cell, gradient clipping "
        f"{'off' if cfg.train.grad_clip == 0 else cfg.train.grad_clip}; the untrained model's val loss is "
        f"{r.initial:.3f} nats. Failed = non-finite loss (diverged) or final val loss above the untrained "
        "one; failed runs are counted, not averaged (— when every run failed). Max grad norm: the largest "
        "logged (10-step mean) global gradient norm, mean over the runs that did not fail, and the largest "
        "of the failed ones.",
    )
    for name in variants(cfg):
        run = r.runs[name]
        for lr in cfg.lrs:
            idx, failed = r.at(name, lr), r.failed(name, lr)
            loss, gmax = summarize(run.final_val_loss[idx], failed, "failed").fmt(), _gmax(run, idx, failed)
            n, diverged = idx.sum(), int(np.sum(run.diverged_at[idx] >= 0))
            t.add(name, *name.split("-"), f"{lr:g}", loss, f"{diverged}/{n}", f"{failed.sum()}/{n}", gmax)
    outs.table("variants.md", t)


def _gmax(run, idx, failed) -> str:
    """The table's max grad norm: mean ± sd over the runs that did not fail, then the largest of the failed
    ones; 3 significant digits (they span orders of magnitude)."""
    g = run.max_grad_norm[idx]
    worst = f"; the failed reached {g[failed].max():.3g}" if failed.any() else ""
    return summarize(g, failed, "failed").fmt(3, "g") + worst


def _curves(r: _Runs, outs: Outputs) -> None:
    cfg = r.cfg
    for group, items in _groups(cfg).items():
        fig, axes = plots.figure(ncols=2, nrows=2, width=7.0, height=3.4)
        for col, lr in enumerate(cfg.lrs):
            for name, label in items:
                run, sel = r.runs[name], r.at(name, lr)
                failed = dict(diverged=r.failed(name, lr), why="failed")  # drawn alone, not averaged
                plots.band(axes[0, col], run.train_steps, run.train_loss[sel], label, **failed)
                plots.band(axes[1, col], run.train_steps, run.grad_norm[sel], label, **failed)
            axes[0, col].axhline(r.initial, color="grey", linestyle="--", linewidth=1, label="untrained")
            axes[0, col].set_yscale("log")
            axes[1, col].set_yscale("log")
            kind = f"{'normal' if lr == cfg.lrs[0] else 'high'} lr {lr:g}"
            ylabel = "train loss (nats/token, log)"
            plots.finish(axes[0, col], f"train loss, {kind}", "step", ylabel, outside=True)  # off the curves
            ylabel = "grad norm (10-step mean, log)"
            plots.finish(axes[1, col], f"global gradient norm, {kind}", "step", ylabel, outside=True)
        fig.suptitle(
            f"e10: {group} — mean ± sd over the runs of {cfg.seeds} seeds that did not fail;\na failed run "
            "(diverged, or ended above the untrained loss) is drawn alone, thin, ending in ×"
        )
        plots.save(fig, outs.plot(f"curves_{group}.png"))


def _activation_plots(r: _Runs, outs: Outputs, acts: dict) -> None:
    cfg, groups, blocks = r.cfg, _groups(r.cfg), r.cfg.model.n_layers
    depth = np.arange(blocks + 1)  # the embedding, then after each block
    fig, axes = plots.figure(ncols=2, width=5.5)
    for col, lr in enumerate(cfg.lrs):
        ax = axes[0, col]
        for name, label in groups["norms"]:
            rms, failed = acts[f"{name}:rms"][r.at(name, lr)], r.failed(name, lr)
            plots.band(ax, depth, rms, label, marker="o", diverged=failed, why="failed")
        ax.set_yscale("log")
        ax.set_xticks(depth, ["emb"] + [f"block {i}" for i in range(blocks)])
        title = f"residual-stream RMS vs depth (lr {lr:g}, trained)"
        plots.finish(ax, title, "residual stream after", "RMS over tokens and dims (log)")
    fig.suptitle(
        "e10: residual-stream RMS with depth per norm variant (from checkpoints; mean ± sd, failed runs ×)"
    )
    plots.save(fig, outs.plot("residual_rms.png"))
    for kind, items, title in (
        ("residual", groups["norms"], "residual stream after each block"),
        ("mlp", groups["activations"], "MLP activations (after the nonlinearity/gate)"),
    ):
        fig, axes = plots.figure(ncols=len(items), width=3.2, height=3.4)
        for ax, (name, label) in zip(axes[0], items):
            plots.violins(ax, {k: acts[f"{name}:{kind}:{k}"] for k in plots.VIOLIN_KEYS})
            ax.set_yscale("symlog", linthresh=1e-1)
            ticks = ["emb"] * (kind == "residual") + [f"b{i}" for i in range(blocks)]
            ax.set_xticks(np.arange(len(ticks)), ticks)
            last = name == items[-1][0]  # one legend, beside the last panel, over no data
            ax.fill([], [], color="C0", alpha=0.3, label="seed 0's values\n(density per layer)")
            plots.finish(ax, label, "layer", "activation value (symlog)", last, outside=True)
        fig.suptitle(f"e10: distribution of the {title}, per layer (seed 0, lr {cfg.lrs[0]:g})")
        plots.save(fig, outs.plot(f"violins_{kind}.png"))


# --- findings: each sub-verdict by the rule (lab.analysis.stats), composed by `headline` -----------------
def _decided(claim: str, cs: list, direction: str, margin: float = 0.0, shown: list = ()) -> Finding:
    """A finding over comparisons [(Comparison, evidence)], each decided on its own, composed by headline;
    the comparisons in `shown` are reported after them, not decided."""
    verdict = headline([c.verdict(direction, margin) for c, _ in cs])
    return Finding(claim, verdict, "; ".join(s for _, s in [*cs, *shown]))


def _no_norm(r: _Runs) -> Finding:
    """Removing the norm raises the final loss at each learning rate ("greater" per lr), and by more at the
    high one: the difference of the two differences, (none - base at high) - (none - base at normal), > 0."""
    none, (lo, hi) = f"none-pre-{BASE_ACT}", r.cfg.lrs
    cs = [r.compare(BASE, none, lr) for lr in r.cfg.lrs]
    groups = [r.counted(BASE, lo), r.counted(none, lo), r.counted(BASE, hi), r.counted(none, hi)]
    more = contrast(groups, [1, -1, -1, 1])
    f = _decided("Removing the norm hurts, most at a high learning rate", cs, "greater")
    verdict = headline([f.verdict, more.verdict("greater")])
    return Finding(f.claim, verdict, f.evidence + f"; the cost at lr {hi:g} minus at lr {lo:g}: {more.fmt()}")


def _growth(r: _Runs, acts: dict) -> Finding:
    lo, none = r.cfg.lrs[0], f"none-pre-{BASE_ACT}"
    rms = lambda name: acts[f"{name}:rms"][r.at(name, lo)]  # (seeds, L+1)
    ratio = lambda name: rms(name)[:, -1] / rms(name)[:, 0]  # after the last block / the embedding
    rn, rb = ratio(none), ratio(BASE)
    c, per_depth = compare(np.log(rb), np.log(rn)), rms(none).mean(0)
    grows = bool(np.all(np.diff(per_depth) > 0))
    return Finding(
        "Without a norm, the residual stream's RMS grows with depth faster than with one",
        c.verdict("greater"),  # decided by the CI; the per-depth means are described, not tested
        f"RMS(after last block) / RMS(embedding), trained at lr {lo:g}: none-pre {summarize(rn).fmt()} vs "
        f"layernorm-pre {summarize(rb).fmt()} (log-ratio {c.fmt(2)}); none-pre RMS per depth "
        + ", ".join(f"{m:.3g}" for m in per_depth)
        + f" ({'monotone' if grows else 'not monotone'} in the seed means; described, not tested)",
    )


def _rmsnorm(r: _Runs) -> Finding:
    cs = [r.compare(BASE, f"rmsnorm-pre-{BASE_ACT}", lr) for lr in r.cfg.lrs]
    claim = f"RMSNorm trains as well as LayerNorm (within {EQUAL_MARGIN} nats)"
    f = _decided(claim, cs, "equal", EQUAL_MARGIN)
    return Finding(
        f.claim, f.verdict, f.evidence + ". By the rule, " + _against_margin(cs, r.cfg.lrs, EQUAL_MARGIN)
    )


def _against_margin(cs: list, lrs, margin: float) -> str:
    """Per learning rate, what the rule made of an equivalence claim: the interval inside ±margin
    (supported), wholly outside (refuted), or straddling its edge (inconclusive), and how wide it is."""
    said = {"supported": "inside", "refuted": "wholly outside", "inconclusive": "across the edge of"}
    out = []
    for (c, _), lr in zip(cs, lrs):
        lo, hi = c.ci95
        if not (np.isfinite(lo) and np.isfinite(hi)):
            out.append(f"at lr {lr:g} no interval (inconclusive)")
            continue
        v = c.verdict("equal", margin)
        out.append(
            f"at lr {lr:g} the 95% CI [{lo:+.3f}, {hi:+.3f}] lies {said[v]} ±{margin:g} ({v}; it is "
            f"{(hi - lo) / (2 * margin):.1f}× as wide as the margin band)"
        )
    return "; ".join(out)


def _post_norm(r: _Runs, posts: list[str]) -> Finding:
    pre = {p: f"{p.split('-')[0]}-pre-{BASE_ACT}" for p in posts}  # against the same norm pre-placed,
    pre = {p: n if n in r.runs else BASE for p, n in pre.items()}  # else against the baseline
    cs = [r.compare(pre[p], f"{p}-{BASE_ACT}", lr) for p in posts for lr in r.cfg.lrs]
    return _decided("Post-norm trains worse than pre-norm (without warm-up tuning)", cs, "greater")


def _against_gelu(r: _Runs, acts: list[str]) -> list:
    """Each activation's model against the GELU baseline at the normal learning rate (same norm)."""
    return [r.compare(BASE, f"{BASE_NORM}-{a}", r.cfg.lrs[0], p=True) for a in acts]


def _gated(r: _Runs, gated: list[str]) -> Finding:
    others = [a for a in r.cfg.activations if a not in gated and a != BASE_ACT]  # shown, not decided
    cs = _against_gelu(r, gated + others)
    claim = "Gated MLPs (SwiGLU, GeGLU) beat GELU at an equal parameter count (hidden = round(2 d_ff/3))"
    return _decided(claim, cs[: len(gated)], "less", shown=cs[len(gated) :])


def _activations_matter_less(r: _Runs) -> Finding:
    """The claim's second clause, by the house's equivalence margin (EQUAL_MARGIN, fixed for RMSNorm vs
    LayerNorm before any data; its first use for activations is 2026-12-04, after the runs existed): every
    activation at the matched parameter count against GELU, each within ±EQUAL_MARGIN nats (at the normal
    learning rate). A gated MLP that beats GELU by more than the margin refutes it: the two findings pull
    against each other by design."""
    cs = _against_gelu(r, [a for a in r.cfg.activations if a != BASE_ACT])
    claim = f"Once parameter counts match, the activation function moves the loss by less than {EQUAL_MARGIN} nats"
    f = _decided(claim, cs, "equal", EQUAL_MARGIN)
    inside = sum(c.verdict("equal", EQUAL_MARGIN) == "supported" for c, _ in cs)
    return Finding(claim, f.verdict, f.evidence + f". {inside} of {len(cs)} CIs lie inside ±{EQUAL_MARGIN:g}")


def analyze(cfg: E10Config, out: Path) -> Findings:
    outs, vs = Outputs(out), variants(cfg)
    acts = read_measurement(outs.out / "runs" / "activations.npz", cfg)
    runs = load_runs({name: outs.out / "runs" / name for name in vs}, str(acts["sha256"]))
    r = _Runs(cfg, runs, float(np.nanmean(runs[BASE].val_loss[:, 0])))
    _table(r, outs)
    _curves(r, outs)
    _activation_plots(r, outs, acts)
    posts = [n for n in cfg.norms if n.endswith("-post")]
    gated = [a for a in cfg.activations if a in GATED_ACTIVATIONS]
    no_norm = [_no_norm(r), _growth(r, acts)] if "none-pre" in cfg.norms else []
    post = [_post_norm(r, posts)] if posts else []
    findings = no_norm + ([beside(_rmsnorm(r))] if "rmsnorm-pre" in cfg.norms else []) + post
    findings += [beside(_gated(r, gated))] if gated else []
    matter = [_activations_matter_less(r)] if len(cfg.activations) > 1 else []
    summary = (
        f"{len(vs)} variants x {cfg.seeds} seeds x lr {cfg.lrs[0]:g} / {cfg.lrs[1]:g}, {cfg.train.steps} "
        "steps, clipping off. " + " ".join(f"[{f.verdict}] {f.claim}." for f in findings + matter)
    )
    # the claim: norms and their placement, and the activation's small effect at matched parameters
    return outs.findings(headline(no_norm + post + matter), summary, findings + matter)


EXPERIMENT = Experiment(
    name="e10_norms_activations",
    title="Normalization and activations: training stability is engineered",
    claim="Normalization and its placement keep training stable at high learning rates; the activation "
    "function matters less once parameter counts match.",
    config_class=E10Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=check_config,
)
