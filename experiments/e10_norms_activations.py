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
  plots/*.png, tables/*.md, findings.json

Variants. Norms (with GELU): layernorm, rmsnorm and none, pre-norm (GPT-2: x + f(norm(x)), final norm)
and post-norm (Vaswani et al.: norm(x + f(x)); post with "none" is refused, it would be pre with none).
Activations (with pre-LayerNorm): gelu, gelu_tanh, relu, swiglu, geglu; a gated MLP has three matrices,
so its hidden size is round(2 d_ff / 3) (lab.model.config.ModelConfig.ff_dim): MLP parameters then match
the two-matrix MLP's to within d_model per block (exactly here: d_ff = 256 -> 171, 3 x 64 x 171 = 32832
vs 2 x 64 x 256 = 32768, +0.2%).

Gradient clipping is off in this experiment (train.grad_clip=0): it is itself a stabilizer, and with it
on, Adam's bounded steps plus clipping hide most of what the norms do. "Failed" below means a run whose
loss went non-finite (recorded as divergence, lab.train.step) or that ended above the untrained model's
validation loss.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis.findings import Finding, Findings
from lab.analysis.stats import summarize, welch
from lab.config import check
from lab.data.pipeline import DataConfig, load_text_data
from lab.data.tasks import TextWindows
from lab.errors import CheckpointError
from lab.experiment import Experiment
from lab.fileio import atomic_write_text
from lab.model import PRESETS, ModelConfig
from lab.model.config import Activation, Norm, NormPlacement
from lab.model.transformer import capture
from lab.runs import load_run
from lab.train import Member, SweepSpec, TrainConfig, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.viz import plots

NORMS = typing.get_args(Norm)
PLACEMENTS = typing.get_args(NormPlacement)
ACTIVATIONS = typing.get_args(Activation)
NORM_VARIANTS = tuple(f"{n}-{p}" for p in PLACEMENTS for n in NORMS if not (n == "none" and p == "post"))
BASE_NORM, BASE_ACT = "layernorm-pre", "gelu"
ACT_BATCH = 8  # validation windows whose activations are recorded from each checkpoint


@dataclass(frozen=True)
class E10Config:
    model: ModelConfig = PRESETS["cpu"].replace(n_layers=4)
    train: TrainConfig = TrainConfig(
        steps=150, batch_size=16, warmup_steps=15, eval_every=50, ckpt_every=150, grad_clip=0.0
    )
    data: DataConfig = DataConfig()
    seeds: int = 3
    lrs: tuple[float, ...] = (1e-3, 3e-2)  # a normal and a high peak learning rate
    norms: tuple[str, ...] = NORM_VARIANTS  # "<norm>-<placement>", each trained with gelu
    activations: tuple[str, ...] = ACTIVATIONS  # each trained with pre-LayerNorm

    def __post_init__(self):
        check(self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}")
        check(len(self.lrs) == 2, f"lrs must be (normal, high), got {self.lrs}")
        check(0 < self.lrs[0] < self.lrs[1], f"lrs must be increasing and > 0, got {self.lrs}")
        bad = [v for v in self.norms if v not in NORM_VARIANTS]
        check(
            not bad,
            f"norms: unknown or invalid {bad}; allowed: {', '.join(NORM_VARIANTS)} "
            "(post-norm needs a norm: 'none-post' is not a variant)",
        )
        bad = [v for v in self.activations if v not in ACTIVATIONS]
        check(not bad, f"activations: unknown {bad}; allowed: {', '.join(ACTIVATIONS)}")
        check(BASE_NORM in self.norms, f"norms must include the baseline {BASE_NORM!r}")
        check(BASE_ACT in self.activations, f"activations must include the baseline {BASE_ACT!r}")
        for name in ("norms", "activations"):
            values = getattr(self, name)
            check(len(set(values)) == len(values), f"{name} has a repeated value: {values}")
        check(self.model.mask == "causal", "e10 trains causal language models; model.mask must be 'causal'")
        check(
            (self.model.norm, self.model.norm_placement, self.model.activation)
            == ("layernorm", "pre", "gelu"),
            "model.norm, model.norm_placement and model.activation are set per variant here; "
            "choose them with `norms` and `activations`",
        )


PRESET_TABLE = {
    "smoke": E10Config(
        model=PRESETS["smoke"],
        train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20, grad_clip=0.0),
        seeds=2,
        norms=("layernorm-pre", "none-pre", "rmsnorm-post"),
        activations=("gelu",),  # the gated MLPs are checked in tests/model; three programs keep this fast
    ),
    "cpu": E10Config(),
    "gpu": E10Config(
        model=PRESETS["gpu"].replace(n_layers=8),
        train=TRAIN_PRESETS["gpu"].replace(grad_clip=0.0),
        data=DataConfig(name="pystdlib"),
        lrs=(6e-4, 1e-2),
    ),
}


# --- variants -----------------------------------------------------------------------------------------------
def variants(cfg: E10Config) -> list[tuple[str, str, str]]:
    """(name, norm variant, activation) of every trained model; the baseline appears once."""
    out = [(f"{n}-{BASE_ACT}", n, BASE_ACT) for n in cfg.norms]
    out += [(f"{BASE_NORM}-{a}", BASE_NORM, a) for a in cfg.activations if a != BASE_ACT]
    return out


def model_for(cfg: E10Config, vocab: int, norm_variant: str, act: str) -> ModelConfig:
    norm, placement = norm_variant.split("-")
    return cfg.model.replace(vocab_size=vocab, norm=norm, norm_placement=placement, activation=act)


def _members(cfg: E10Config) -> list[Member]:
    return [Member(s, float(lr), cfg.train.init_scale) for lr in cfg.lrs for s in range(cfg.seeds)]


def check_config(cfg: E10Config) -> None:
    text = load_text_data(cfg.data)
    TextWindows(cfg.model.max_len, text.tokenizer.vocab_size).check_data(text.arrays)
    for _, n, a in variants(cfg):  # every variant's model config is valid before anything compiles
        model_for(cfg, text.tokenizer.vocab_size, n, a)


def run(cfg: E10Config, out: Path, opts) -> None:
    text = load_text_data(cfg.data)
    vocab = text.tokenizer.vocab_size
    task = TextWindows(cfg.model.max_len, vocab)
    for name, n, a in variants(cfg):
        train_sweep(
            out / "runs" / name,
            SweepSpec(
                model=model_for(cfg, vocab, n, a),
                train=cfg.train,
                task=task,
                data=text.arrays,
                members=_members(cfg),
                data_info=text.info,
            ),
            strategy=opts.strategy,
            progress=opts.progress,
            desc=f"e10 {name}",
        )


# --- analysis: everything below reads files under `out` -----------------------------------------------------
def _fail(run, initial: float) -> np.ndarray:
    """(M,) bool: non-finite at some step, or ended above the untrained model's validation loss."""
    fin = run.final_val_loss
    return (run.diverged_at >= 0) | ~np.isfinite(fin) | (fin > initial)


def _activations(cfg, out, name, model, tokens):
    """Residual-stream RMS per layer (M, L+1), and per-layer samples of residual and MLP activations
    (seed 0, normal lr) from the newest checkpoint of a variant."""
    members = _members(cfg)
    _, state = latest_state(out / "runs" / name, model, cfg.train, members)
    f = jax.jit(jax.vmap(lambda p: capture(model, p, tokens)[1]))
    inter = f(state.params)
    res = np.asarray(inter["residual"])  # (M, L+1, B, T, D)
    rms = np.sqrt(np.mean(res**2, axis=(2, 3, 4)))  # (M, L+1)
    return (
        rms,
        res[0].reshape(res.shape[1], -1),
        np.asarray(inter["mlp_hidden"])[0].reshape(model.n_layers, -1),
    )


def _g(values) -> str:
    """mean ± sd in 3 significant digits (gradient norms span many orders of magnitude)."""
    s = summarize(values)
    return "n/a" if s.n == 0 else f"{s.mean:.3g} ± {s.sd:.3g}" if s.n > 1 else f"{s.mean:.3g}"


def analyze(cfg: E10Config, out: Path) -> Findings:
    text = load_text_data(cfg.data)
    vocab = text.tokenizer.vocab_size
    vs = variants(cfg)
    runs = {name: load_run(out / "runs" / name) for name, _, _ in vs}
    for name, r in runs.items():
        if r.config.get("data", {}).get("sha256") != text.info["sha256"]:
            raise CheckpointError(f"the corpus changed since {name} was trained; rerun `lab run e10 --fresh`")
    members = _members(cfg)
    lr_of = np.array([m.lr for m in members])
    lo, hi = cfg.lrs
    initial = float(np.nanmean(runs[f"{BASE_NORM}-{BASE_ACT}"].val_loss[:, 0]))
    pick = lambda name, lr: runs[name].final_val_loss[lr_of == lr]
    fails = {(name, lr): _fail(runs[name], initial)[lr_of == lr] for name, _, _ in vs for lr in cfg.lrs}
    plot_files, tables, findings = [], [], []

    # ---- table ---------------------------------------------------------------------------------------------
    rows = [
        "### Final validation loss per variant and peak learning rate",
        "",
        f"{cfg.train.steps} steps, {cfg.seeds} seeds per cell, gradient clipping "
        f"{'off' if cfg.train.grad_clip == 0 else cfg.train.grad_clip}; the untrained model's val loss is "
        f"{initial:.3f} nats. Failed = non-finite loss (diverged) or final val loss above the untrained one. "
        "Max grad norm: the largest logged (10-step mean) global gradient norm, mean over seeds.",
        "",
        "| variant | norm | placement | activation | lr | final val loss | diverged | failed | max grad norm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, n, a in vs:
        r = runs[name]
        for lr in cfg.lrs:
            idx = lr_of == lr
            div = int(np.sum(r.diverged_at[idx] >= 0))
            gmax = np.nanmax(np.where(np.isfinite(r.grad_norm[idx]), r.grad_norm[idx], np.nan), axis=1)
            norm, placement = n.split("-")
            rows.append(
                f"| {name} | {norm} | {placement} | {a} | {lr:g} | {summarize(r.final_val_loss[idx]).fmt()} | "
                f"{div}/{idx.sum()} | {int(fails[(name, lr)].sum())}/{idx.sum()} | {_g(gmax)} |"
            )
    atomic_write_text(out / "tables" / "variants.md", "\n".join(rows) + "\n")
    tables.append("tables/variants.md")

    # ---- loss and grad-norm curves ---------------------------------------------------------------------------
    groups = {"norms": [(f"{n}-{BASE_ACT}", n) for n in cfg.norms], "activations": []}
    groups["activations"] = [(f"{BASE_NORM}-{a}", a) for a in cfg.activations]
    for group, items in groups.items():
        fig, axes = plots.figure(ncols=2, nrows=2, width=5.5, height=3.4)
        for col, lr in enumerate(cfg.lrs):
            for name, label in items:
                r = runs[name]
                plots.band(axes[0, col], r.train_steps, r.train_loss[lr_of == lr], label)
                plots.band(axes[1, col], r.train_steps, r.grad_norm[lr_of == lr], label)
            axes[0, col].axhline(initial, color="grey", linestyle="--", linewidth=1, label="untrained")
            axes[0, col].set_yscale("log")
            axes[1, col].set_yscale("log")
            kind = "normal" if lr == lo else "high"
            plots.finish(
                axes[0, col],
                f"train loss, {kind} lr {lr:g}",
                "step",
                "train loss (nats/token, log)",
            )
            plots.finish(
                axes[1, col],
                f"global gradient norm, {kind} lr {lr:g}",
                "step",
                "grad norm (10-step mean, log)",
            )
        fig.suptitle(f"e10: {group} — mean ± sd over {cfg.seeds} seeds (gaps = diverged runs)")
        plot_files.append(str(plots.save(fig, out / "plots" / f"curves_{group}.png").relative_to(out)))

    # ---- activations from checkpoints --------------------------------------------------------------------
    tokens = np.stack(
        [text.val[i * cfg.model.max_len : (i + 1) * cfg.model.max_len] for i in range(ACT_BATCH)]
    )
    tokens = jnp.asarray(tokens.astype(np.int32))
    acts = {}
    for name, n, a in vs:
        acts[name] = _activations(cfg, out, name, model_for(cfg, vocab, n, a), tokens)
    depth = np.arange(cfg.model.n_layers + 1)
    fig, axes = plots.figure(ncols=2, width=5.5)
    for col, lr in enumerate(cfg.lrs):
        ax = axes[0, col]
        for name, label in groups["norms"]:
            plots.band(ax, depth, acts[name][0][lr_of == lr], label, marker="o")
        ax.set_yscale("log")
        ax.set_xticks(depth, ["emb"] + [f"block {i}" for i in range(cfg.model.n_layers)])
        plots.finish(
            ax,
            f"residual-stream RMS vs depth (lr {lr:g}, trained)",
            "residual stream after",
            "RMS over tokens and dims (log)",
        )
    fig.suptitle("e10: residual-stream RMS with depth per norm variant (from checkpoints, mean ± sd)")
    plot_files.append(str(plots.save(fig, out / "plots" / "residual_rms.png").relative_to(out)))

    for kind, slot, items, title in (
        ("residual", 1, groups["norms"], "residual stream after each block"),
        ("mlp", 2, groups["activations"], "MLP activations (after the nonlinearity/gate)"),
    ):
        fig, axes = plots.figure(ncols=len(items), width=3.2, height=3.4)
        for ax, (name, label) in zip(axes[0], items):
            samples = acts[name][slot]
            ax.violinplot([s for s in samples], positions=np.arange(len(samples)), showextrema=False)
            ax.set_yscale("symlog", linthresh=1e-1)
            labels = (["emb"] if kind == "residual" else []) + [f"b{i}" for i in range(cfg.model.n_layers)]
            ax.set_xticks(np.arange(len(samples)), labels)
            ax.plot([], [], color="C0", label=f"{label}, seed 0, lr {lo:g}")
            plots.finish(ax, label, "layer", "activation value (symlog)")
        fig.suptitle(f"e10: distribution of the {title}, per layer")
        plot_files.append(str(plots.save(fig, out / "plots" / f"violins_{kind}.png").relative_to(out)))

    # ---- findings -----------------------------------------------------------------------------------------
    fmt = lambda x: summarize(x).fmt()
    fail_s = lambda name, lr: f"{int(fails[(name, lr)].sum())}/{cfg.seeds} failed"
    base = f"{BASE_NORM}-{BASE_ACT}"

    def cmp(a_name, b_name, lr):
        c = welch(pick(a_name, lr), pick(b_name, lr))
        if fails[(a_name, lr)].all() or fails[(b_name, lr)].all():
            delta = "no Δ: every run of one side failed"
        elif np.isfinite(c.ci95[0]):
            delta = f"Δ {c.diff:+.3f} [95% CI {c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]"
        else:
            delta = "no Δ: too few finite runs to compare"
        return c, (
            f"{b_name} {fmt(pick(b_name, lr))} ({fail_s(b_name, lr)}) vs {a_name} {fmt(pick(a_name, lr))} "
            f"({fail_s(a_name, lr)}) at lr {lr:g}: {delta}"
        )

    def worse(a_name, b_name, lr) -> bool | None:
        """True if b is worse than a at lr (more failures, or a significantly higher loss), False if
        significantly better or equal with no extra failures, None if unclear."""
        fa, fb = fails[(a_name, lr)].sum(), fails[(b_name, lr)].sum()
        if fb > fa:
            return True
        c, _ = cmp(a_name, b_name, lr)
        if c.significant():
            return c.diff > 0
        return None

    # 1. removing the norm
    none = f"none-pre-{BASE_ACT}"
    if none in runs:
        ev, verdicts = [], []
        for lr in cfg.lrs:
            c, s = cmp(base, none, lr)
            ev.append(s)
            verdicts.append(worse(base, none, lr))
        if verdicts[1] is True:
            v1 = "supported" if verdicts[0] is not False else "qualified"
        elif verdicts[1] is False:
            v1 = "refuted"
        else:
            v1 = "inconclusive"
        findings.append(Finding("Removing the norm hurts, most at a high learning rate", v1, "; ".join(ev)))

        # 4. residual growth
        ratio = lambda name: acts[name][0][:, -1] / acts[name][0][:, 0]  # (M,) last / embedding
        rn, rb = ratio(none)[lr_of == lo], ratio(base)[lr_of == lo]
        c = welch(np.log(rb), np.log(rn))
        rms_none = acts[none][0][lr_of == lo]
        grows = bool(np.all(np.diff(rms_none.mean(0)) > 0))
        v4 = (
            "supported"
            if (c.diff > 0 and c.significant() and grows)
            else ("qualified" if c.diff > 0 else "refuted")
        )
        findings.append(
            Finding(
                "Without a norm, the residual stream's RMS grows with depth faster than with one",
                v4,
                f"RMS(after last block) / RMS(embedding), trained at lr {lo:g}: none-pre {fmt(rn)} vs "
                f"layernorm-pre {fmt(rb)} (log-ratio Δ {c.diff:+.2f}, p={c.p:.2g}); none-pre RMS per depth "
                + ", ".join(f"{m:.3g}" for m in rms_none.mean(0))
                + f" ({'monotone growth' if grows else 'not monotone'})",
            )
        )

    # 2. RMSNorm vs LayerNorm
    rms = f"rmsnorm-pre-{BASE_ACT}"
    if rms in runs:
        c, s = cmp(base, rms, lo)
        _, s_hi = cmp(base, rms, hi)
        margin = 0.02
        v2 = (
            "supported"
            if (abs(c.ci95[0]) < margin and abs(c.ci95[1]) < margin)
            or (not c.significant() and abs(c.diff) < margin)
            else ("refuted" if c.significant() and c.diff > margin else "qualified")
        )
        findings.append(
            Finding(
                f"RMSNorm trains as well as LayerNorm (within {margin} nats)",
                v2,
                s + "; " + s_hi,
            )
        )

    # 3. pre vs post
    posts = [n for n in cfg.norms if n.endswith("-post")]
    if posts:
        ev, ws = [], []
        for p in posts:
            pre = f"{p.split('-')[0]}-pre-{BASE_ACT}"
            pre = pre if pre in runs else base  # the same norm pre-placed, else the baseline
            for lr in cfg.lrs:
                _, s = cmp(pre, f"{p}-{BASE_ACT}", lr)
                ev.append(s)
                ws.append(worse(pre, f"{p}-{BASE_ACT}", lr))
        if ws and all(w is True for w in ws):
            v3 = "supported"
        elif any(w is True for w in ws):
            v3 = "qualified"
        elif ws and all(w is False for w in ws):
            v3 = "refuted"
        else:
            v3 = "inconclusive"
        findings.append(
            Finding("Post-norm trains worse than pre-norm (without warm-up tuning)", v3, "; ".join(ev))
        )

    # 5. activations
    gated = [a for a in cfg.activations if a in ("swiglu", "geglu")]
    if gated:
        ev, better = [], []
        for a in gated:
            c, s = cmp(base, f"{BASE_NORM}-{a}", lo)
            ev.append(s + f", p={c.p:.2g}")
            better.append(c.diff < 0 and c.significant())
        others = [a for a in cfg.activations if a not in gated and a != BASE_ACT]
        for a in others:
            c, s = cmp(base, f"{BASE_NORM}-{a}", lo)
            ev.append(s + f", p={c.p:.2g}")
        v5 = "supported" if all(better) else ("qualified" if any(better) else "inconclusive")
        findings.append(
            Finding(
                "Gated MLPs (SwiGLU, GeGLU) beat GELU at an equal parameter count (hidden = round(2 d_ff/3))",
                v5,
                "; ".join(ev),
            )
        )

    stability = ("Removing the norm", "Without a norm", "Post-norm")  # the claim's own sub-findings
    headline = [f.verdict for f in findings if f.claim.startswith(stability)]
    if headline and all(v == "supported" for v in headline):
        verdict = "supported"
    elif any(v in ("supported", "qualified") for v in headline):
        verdict = "qualified"
    elif headline and all(v == "refuted" for v in headline):
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    summary = (
        f"{len(vs)} variants x {cfg.seeds} seeds x lr {lo:g} / {hi:g}, {cfg.train.steps} steps, clipping off. "
        + " ".join(f"[{f.verdict}] {f.claim}." for f in findings)
    )
    return Findings(
        verdict=verdict,
        summary=summary,
        findings=findings,
        tables=tables,
        plots=plot_files,
    )


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
