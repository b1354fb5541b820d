"""Project 3: "Multi-head attention isn't redundancy, it's specialization" — attention heads and causality.

Claim tested: the heads of a trained multi-head layer do different jobs (a previous-token head, broad
averaging heads, ...), so removing one costs more for some heads than others, and several heads beat
one head of the same total size. Along the way:
  * attention for one query written out step by step (scores, scale, softmax, weighted sum;
    lab.ops.attention.attend_one_query) is checked against the batched computation on the trained model;
  * per-head attention heatmaps for a chosen input, from a checkpoint;
  * causality verified on the trained model by perturbation: changing token j must not move the
    prediction at any position i < j, so the dependency matrix is lower-triangular (exactly).

Run:      lab run e03 [--preset smoke|cpu|gpu] [--seeds 3] [--data NAME]
Redraw:   lab analyze e03
Writes:   results/e03_attention/
  runs/H<n>/     a sweep over seeds of the causal byte-level text model with n heads (d_model fixed, so
                 every head count has exactly the same parameters: H heads of size d_model / H)
  plots/*.png, tables/*.md, findings.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab import ops
from lab.analysis.findings import Finding, Findings
from lab.analysis.stats import paired, summarize, welch
from lab.config import check
from lab.data.pipeline import DataConfig, load_text_data
from lab.data.tasks import TextWindows
from lab.errors import CheckpointError
from lab.experiment import Experiment
from lab.fileio import atomic_write_text
from lab.model import PRESETS, ModelConfig, apply, param_count
from lab.model.transformer import capture
from lab.runs import load_run
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import latest_state
from lab.train.step import eval_step
from lab.viz import plots

SHOW_MAX = 32  # tokens of the chosen input shown in heatmaps and the dependency matrix


@dataclass(frozen=True)
class E03Config:
    model: ModelConfig = PRESETS["cpu"]
    # 900 steps at lr 3e-3: at 300 steps (e04's budget) byte-level attention is still nearly uniform and
    # no head has a job yet; by 900 the first layer's heads have visibly specialized (measured).
    train: TrainConfig = TrainConfig(
        steps=900, batch_size=16, lr=3e-3, warmup_steps=50, eval_every=150, ckpt_every=900
    )
    data: DataConfig = DataConfig()
    seeds: int = 3
    heads: tuple[int, ...] = (1, 4)  # compared at equal parameters; the largest is analyzed per head
    perturbations: int = 4  # random replacement tokens per position for the dependency matrix

    def __post_init__(self):
        check(self.seeds >= 1, f"seeds must be >= 1, got {self.seeds}")
        check(len(self.heads) >= 1 and len(set(self.heads)) == len(self.heads), "heads must be distinct")
        for h in self.heads:
            check(
                h >= 1 and self.model.d_model % h == 0,
                f"heads: {h} must divide model.d_model ({self.model.d_model}) so parameters stay equal",
            )
        check(self.model.mask == "causal", "e03 studies causal models; model.mask must be 'causal'")
        check(self.model.n_kv_heads is None, "e03 compares multi-head attention; leave model.n_kv_heads none")
        check(self.perturbations >= 1, "perturbations must be >= 1")
        check(
            (self.model.norm, self.model.norm_placement) == ("layernorm", "pre")
            and self.model.position in ("learned", "sinusoidal", "none")
            and self.model.qkv == "intact",
            "e03 recomputes layer 0's queries and keys by hand from a pre-LayerNorm block, so it needs "
            "model.norm=layernorm, model.norm_placement=pre, model.qkv=intact and a position added to the "
            "embeddings (learned, sinusoidal or none)",
        )


PRESET_TABLE = {
    "smoke": E03Config(
        model=PRESETS["smoke"],
        train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20),
        seeds=2,
        heads=(1, 2),
        perturbations=2,
    ),
    "cpu": E03Config(),
    "gpu": E03Config(
        model=PRESETS["gpu"],
        train=TRAIN_PRESETS["gpu"],
        data=DataConfig(name="pystdlib"),
        heads=(1, 2, 6),
    ),
}


def _model(cfg: E03Config, vocab: int, heads: int) -> ModelConfig:
    return cfg.model.replace(vocab_size=vocab, n_heads=heads)


def _members(cfg):
    return members_grid(range(cfg.seeds), [cfg.train.lr], [cfg.train.init_scale])


def check_config(cfg: E03Config) -> None:
    text = load_text_data(cfg.data)
    TextWindows(cfg.model.max_len, text.tokenizer.vocab_size).check_data(text.arrays)


def run(cfg: E03Config, out: Path, opts) -> None:
    text = load_text_data(cfg.data)
    vocab = text.tokenizer.vocab_size
    for h in cfg.heads:
        train_sweep(
            out / "runs" / f"H{h}",
            SweepSpec(
                model=_model(cfg, vocab, h),
                train=cfg.train,
                task=TextWindows(cfg.model.max_len, vocab),
                data=text.arrays,
                members=_members(cfg),
                data_info=text.info,
            ),
            strategy=opts.strategy,
            progress=opts.progress,
            desc=f"e03 {h} heads",
        )


# --- analysis: everything below reads files under `out` -----------------------------------------------------
def _ablate(params, layer: int, head: int):
    """Parameters with one head's output projection zeroed: the head then adds nothing to the residual."""
    blk = params[f"block_{layer}"]
    wo = blk["attn"]["wo"].at[:, head].set(0.0)  # stacked over seeds: (S, H, E, D)
    return {**params, f"block_{layer}": {**blk, "attn": {**blk["attn"], "wo": wo}}}


def _step_by_step(model, params0, tokens):
    """Recompute layer 0's attention for every query of one sequence with attend_one_query and compare it
    with the batched weights the model produced. Returns (max |difference|, rows for a worked example)."""
    _, inter = capture(model, params0, tokens)
    x = inter["residual"][0]  # (1, T, D): the block's input
    blk = params0["block_0"]
    xn = ops.layer_norm(x, blk["norm1"]["scale"], blk["norm1"].get("bias"))
    a = blk["attn"]
    q = jnp.einsum("btd,dhe->bthe", xn, a["wq"])[0]
    k = jnp.einsum("btd,dhe->bthe", xn, a["wk"])[0]
    v = jnp.einsum("btd,dhe->bthe", xn, a["wv"])[0]
    t = tokens.shape[1]
    causal = np.tril(np.ones((t, t), bool))
    diff = 0.0
    for h in range(model.n_heads):
        for i in range(t):
            _, p = ops.attend_one_query(q[i, h], k[:, h], v[:, h], causal[i])
            diff = max(
                diff, float(np.abs(np.asarray(p) - np.asarray(inter["attn_weights"][0, 0, h, i])).max())
            )
    i, h = min(t - 1, 7), 0
    scores = np.asarray(k[: i + 1, h] @ q[i, h])
    scaled = scores / np.sqrt(model.head_dim)
    _, p = ops.attend_one_query(q[i, h], k[:, h], v[:, h], causal[i])
    return diff, (i, scores, scaled, np.asarray(p)[: i + 1])


def _dependency(model, params0, tokens, vocab, n_draws, seed=0):
    """D[i, j] = mean |Δ log p(· | position i)| (L1 over the vocabulary) when token j is replaced by a
    random different token, averaged over n_draws replacements.

    The unperturbed sequence is row 0 of the same batch, so every row goes through the same compiled
    program and an exact zero above the diagonal is a statement about the model, not about roundoff.
    """
    t = tokens.shape[1]
    rng = np.random.default_rng(seed)
    batch = np.repeat(np.asarray(tokens), 1 + t * n_draws, axis=0)  # (1 + t * n, T)
    for j in range(t):
        for d in range(n_draws):
            r = 1 + j * n_draws + d
            batch[r, j] = (tokens[0, j] + rng.integers(1, vocab)) % vocab
    f = jax.jit(lambda b: jax.nn.log_softmax(apply(model, params0, b).astype(jnp.float32), -1))
    lp = np.asarray(f(jnp.asarray(batch)), np.float64)  # (1 + t * n, T, V)
    delta = np.abs(lp[1:] - lp[:1]).sum(-1)  # (t * n, T)
    return delta.reshape(t, n_draws, t).mean(1).T  # (i, j)


def analyze(cfg: E03Config, out: Path) -> Findings:
    text = load_text_data(cfg.data)
    vocab = text.tokenizer.vocab_size
    runs = {h: load_run(out / "runs" / f"H{h}") for h in cfg.heads}
    for h, r in runs.items():
        if r.config.get("data", {}).get("sha256") != text.info["sha256"]:
            raise CheckpointError(f"the corpus changed since H{h} was trained; rerun `lab run e03 --fresh`")
    H = max(cfg.heads)
    model = _model(cfg, vocab, H)
    _, state = latest_state(out / "runs" / f"H{H}", model, cfg.train, _members(cfg))
    params = state.params
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)
    task = TextWindows(cfg.model.max_len, vocab)
    fmt = lambda x: summarize(x).fmt()
    findings, plot_files, tables = [], [], []
    L = model.n_layers
    SHOW = min(SHOW_MAX, cfg.model.max_len)

    # ---- the chosen input, its attention per head --------------------------------------------------------
    tokens = jnp.asarray(text.val[: cfg.model.max_len].astype(np.int32))[None]
    labels = [repr(text.tokenizer.decode(np.asarray([t])))[1:-1] or "·" for t in np.asarray(tokens[0, :SHOW])]
    capt = jax.jit(jax.vmap(lambda p: capture(model, p, tokens)[1]["attn_weights"]))
    w_all = np.asarray(capt(params), np.float64)[:, :, 0]  # (S, L, H, T, T)
    fig, axes = plots.figure(ncols=H, nrows=L, width=3.0, height=2.9)
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            im = ax.imshow(w_all[0, l, h, :SHOW, :SHOW], cmap="viridis", vmin=0, vmax=1)
            ax.grid(False)
            ax.set_xticks(range(SHOW), labels, fontsize=4, rotation=90)
            ax.set_yticks(range(SHOW), labels, fontsize=4)
            ax.set_title(f"layer {l} head {h}")
            ax.set_xlabel("key token")
            ax.set_ylabel("query token")
    plots.colorbar(fig, im, axes[0, -1], "attention weight")
    fig.suptitle(f"e03: attention per head for a validation snippet (seed 0, {H} heads, first {SHOW} bytes)")
    plot_files.append(str(plots.save(fig, out / "plots" / "heatmaps.png").relative_to(out)))

    # ---- head statistics over a validation batch -------------------------------------------------------------
    batch = task.sample({k: jnp.asarray(v) for k, v in text.arrays.items()}, "val", jax.random.PRNGKey(3), 16)
    wb = np.asarray(
        jax.jit(jax.vmap(lambda p: capture(model, p, batch["inputs"])[1]["attn_weights"]))(params)
    )
    wb = wb.astype(np.float64)  # (S, L, B, H, T, T)
    t = np.arange(1, cfg.model.max_len)
    prev = wb[..., t, t - 1].mean(axis=(2, 4))  # (S, L, H): mean weight on the previous token
    ent = -np.sum(np.where(wb > 0, wb * np.log(np.where(wb > 0, wb, 1.0)), 0.0), -1).mean(axis=(2, 4))
    data = {k: jnp.asarray(v) for k, v in text.arrays.items()}
    ev = jax.jit(jax.vmap(lambda p: eval_step(p, data, cfg=model, tcfg=cfg.train, task=task)["val_loss"]))
    intact = np.asarray(ev(params), np.float64)
    ablated = np.stack(
        [np.stack([np.asarray(ev(_ablate(params, l, h)), np.float64) for h in range(H)]) for l in range(L)]
    )  # (L, H, S)
    jump = ablated - intact[None, None]
    rows = [
        "### Head specialization (trained model, mean ± sd over seeds)",
        "",
        "Previous-token score: mean attention weight on key t-1. Entropy: of each query's attention row, "
        "mean over queries (a uniform row over t keys has entropy ln t). Ablation: zero the head's output "
        "projection and measure the validation-loss increase without retraining (same seeds, paired).",
        "",
        "| layer | head | previous-token score | entropy (nats) | ablation Δ val loss (nats) |",
        "|---|---|---|---|---|",
    ]
    for l in range(L):
        for h in range(H):
            rows.append(f"| {l} | {h} | {fmt(prev[:, l, h])} | {fmt(ent[:, l, h])} | {fmt(jump[l, h])} |")
    atomic_write_text(out / "tables" / "heads.md", "\n".join(rows) + "\n")
    tables.append("tables/heads.md")

    fig, axes = plots.figure(ncols=3, width=4.2)
    xs = np.arange(L * H)
    names = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    for ax, vals, title, ylabel in (
        (axes[0, 0], prev.reshape(cfg.seeds, -1), "previous-token score", "mean weight on key t-1"),
        (axes[0, 1], ent.reshape(cfg.seeds, -1), "attention entropy", "entropy (nats)"),
        (axes[0, 2], jump.reshape(L * H, -1).T, "head ablation", "Δ val loss (nats/token)"),
    ):
        s = [summarize(vals[:, i]) for i in range(L * H)]
        ax.bar(xs, [v.mean for v in s], yerr=[v.sd for v in s], capsize=2, label=f"{cfg.seeds} seeds")
        ax.set_xticks(xs, names, rotation=90)
        plots.finish(ax, title, "head (layer, head)", ylabel)
    fig.suptitle(f"e03: what each of the {H} heads does (mean ± sd over seeds)")
    plot_files.append(str(plots.save(fig, out / "plots" / "head_specialization.png").relative_to(out)))

    # specialization finding: heads differ beyond seed noise
    per_head = jump.reshape(L * H, -1)  # (heads, seeds)
    means = per_head.mean(1)
    hi_i, lo_i = int(np.argmax(means)), int(np.argmin(means))
    c = paired(per_head[lo_i], per_head[hi_i])
    best_prev = np.unravel_index(np.argmax(prev.mean(0)), prev.shape[1:])
    uniform_prev = float(np.mean(1.0 / (t + 1)))  # what a uniform causal row puts on t-1, averaged
    spec = c.significant() and c.diff > 0
    prev_head = prev[:, best_prev[0], best_prev[1]]
    findings.append(
        Finding(
            "Heads specialize: ablating different heads costs different amounts, and some are previous-token heads",
            "supported"
            if spec and prev_head.mean() > 0.5
            else ("qualified" if spec or prev_head.mean() > 0.5 else "refuted"),
            f"ablation cost ranges from {names[lo_i]} {fmt(per_head[lo_i])} to {names[hi_i]} {fmt(per_head[hi_i])} "
            f"nats (paired Δ {c.diff:+.3f}, 95% CI [{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], p={c.p:.2g}; the two "
            "extremes were picked after seeing the data, so this p-value is optimistic); the most "
            f"previous-token head, L{best_prev[0]}H{best_prev[1]}, puts {fmt(prev_head)} of its weight on t-1 "
            f"(a uniform causal row would put {uniform_prev:.3f}); entropies range "
            f"{ent.mean(0).min():.2f}..{ent.mean(0).max():.2f} nats",
        )
    )

    # ---- 1 head vs several -----------------------------------------------------------------------------------
    finals = {h: runs[h].final_val_loss for h in cfg.heads}
    fig, axes = plots.figure()
    ax = axes[0, 0]
    for h in cfg.heads:
        plots.band(ax, runs[h].val_steps, runs[h].val_loss, f"{h} head(s) of size {cfg.model.d_model // h}")
    plots.finish(
        ax, "e03: validation loss, equal parameters, different head counts", "step", "val loss (nats/token)"
    )
    plot_files.append(str(plots.save(fig, out / "plots" / "heads_vs_loss.png").relative_to(out)))
    if len(cfg.heads) > 1:
        one, many = min(cfg.heads), max(cfg.heads)
        c = welch(finals[one], finals[many])
        v = (
            "supported"
            if c.diff < 0 and c.significant()
            else ("refuted" if c.diff > 0 and c.significant() else "inconclusive")
        )
        findings.append(
            Finding(
                f"{many} heads beat {one} head at the same parameter count",
                v,
                ", ".join(f"{h} head(s): {fmt(finals[h])}" for h in cfg.heads)
                + f" (Δ {many} vs {one}: {c.diff:+.3f} [95% CI {c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}], p={c.p:.2g}); "
                f"parameters per model: {param_count(first(params))} for every head count",
            )
        )

    # ---- causality: dependency matrix by perturbation --------------------------------------------------------
    p0 = first(params)
    dep = _dependency(model, p0, tokens[:, :SHOW], vocab, cfg.perturbations)
    upper = float(np.abs(np.triu(dep, k=1)).max())
    lower = float(np.tril(dep).mean())
    fig, axes = plots.figure(width=5.5, height=4.8)
    ax = axes[0, 0]
    im = ax.imshow(np.log10(dep + 1e-12), cmap="magma", vmin=-6)
    ax.grid(False)
    plots.colorbar(fig, im, ax, "log10 mean |Δ log p| (nats, L1 over vocab); exact 0 = black")
    ax.set_title("e03: causality by perturbation\n(changing token j moves the prediction at i? seed 0)")
    ax.set_xlabel("perturbed input position j")
    ax.set_ylabel("output position i")
    plot_files.append(str(plots.save(fig, out / "plots" / "causality.png").relative_to(out)))
    findings.append(
        Finding(
            "The trained model is causal: its dependency matrix is lower-triangular",
            "supported" if upper == 0.0 and lower > 0 else "refuted",
            f"max |Δ log p| above the diagonal = {upper:.3g} (exactly zero required) vs mean {lower:.3g} on and "
            f"below it, over {SHOW} positions x {cfg.perturbations} random replacements",
        )
    )

    # ---- one query, step by step ----------------------------------------------------------------------------
    diff, (qi, scores, scaled, probs) = _step_by_step(model, p0, tokens)
    rows = [
        "### One query, step by step (layer 0, head 0, seed 0)",
        "",
        f"Query position {qi} (token `{labels[qi]}`) of the chosen snippet. scores = q·k_j; scaled = "
        f"scores / sqrt({model.head_dim}); softmax over keys 0..{qi} (later keys are masked). Over every "
        f"query and head of layer 0 the step-by-step probabilities differ from the batched ones by at most "
        f"{diff:.2g}.",
        "",
        "| key j | token | score q·k_j | scaled | softmax weight |",
        "|---|---|---|---|---|",
    ] + [
        f"| {j} | `{labels[j]}` | {scores[j]:+.3f} | {scaled[j]:+.3f} | {probs[j]:.3f} |"
        for j in range(qi + 1)
    ]
    atomic_write_text(out / "tables" / "one_query.md", "\n".join(rows) + "\n")
    tables.append("tables/one_query.md")
    findings.append(
        Finding(
            "Attention for one query written step by step equals the batched computation",
            "supported" if diff < 1e-5 else "refuted",
            f"max |p_step - p_batched| = {diff:.2g} over {model.n_heads} heads x {cfg.model.max_len} queries "
            "(float32; tolerance 1e-5)",
        )
    )

    verdict = findings[0].verdict
    summary = " ".join(f"[{f.verdict}] {f.claim}." for f in findings)
    return Findings(
        verdict=verdict,
        summary=summary,
        findings=findings,
        tables=tables,
        plots=plot_files,
    )


EXPERIMENT = Experiment(
    name="e03_attention",
    title="Attention heads: specialization, not redundancy",
    claim="Multi-head attention isn't redundancy, it's specialization: trained heads do different jobs.",
    config_class=E03Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=check_config,
)
