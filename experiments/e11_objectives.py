"""Project 11: "Objectives bias behaviour long before finetuning" — masked, causal and prefix LM pretraining.

Claim tested: the pretraining objective alone, with the same model, data, tokens seen and FLOPs, decides what
a model is good at (Raffel et al. 2020, T5, Table 2; Wang et al. 2022, "What language model architecture and
pretraining objective work best for zero-shot generalization?"): a causal LM predicts the next token best, a
masked LM fills in the middle best, and a prefix LM lies between. The three are one model
(lab.model.transformer) that differs only by attention mask and loss (lab.data.objectives, lab.data.tasks):
  causal  next-token prediction at every position, causal attention;
  prefix  per example a prefix length uniform in [min_prefix, max_prefix]: bidirectional attention inside
          the prefix, causal after, the loss on the targets in the suffix (model.mask "prefix");
  mlm     mask_rate of the positions selected (80% mask token, 10% random token, 10% kept: mask_frac,
          random_frac), bidirectional attention, the loss on the selected positions.
All three get the same vocabulary (the corpus's plus one mask token, unused by the LMs), windows of
model.max_len tokens, batch size and steps: equal tokens seen and, the model being the same, equal FLOPs
(every position runs forward and backward whatever carries a loss).
Measured on held-out windows of the same corpus, per seed, from each objective's final checkpoint:
  1. next-token accuracy: the last token of a window from the tokens before it (causal: its logits there;
     prefix: the window but its last token as prefix; mlm: the last token replaced by the mask token);
  2. fill-in-the-middle accuracy: the middle token from both sides (mlm: masked; causal and prefix: their
     `fim_candidates` likeliest tokens from the left side reranked by the log-likelihood of the whole
     window, so the right side counts too; also reported: their left side alone);
  3. a linear probe on frozen features (the last block's residual stream on the unchanged window, prefix LM
     with the whole window as prefix): is the position inside an unclosed "(" of its window, fitted in
     closed form with balanced class weights (lab.analysis.probe) on half the probe windows and scored by
     balanced accuracy (chance 0.5) on the other half;
  4. loss curves in comparable units (nats per target against tokens seen and against targets seen; MLM
     predicts ~mask_rate of the positions) and generated samples (mlm by iterative unmasking).

Run:      lab run e11 [--preset smoke|cpu|gpu] [--set mask_rate=0.3] [--seeds 3] [--data NAME]
Redraw:   lab analyze e11
Writes:   results/e11_objectives/
  runs/<objective>/   one sweep over seeds per objective (config.json, metrics.jsonl, checkpoints/)
  runs/probes.json    per objective, per seed: next-token, fill-in (reranked and left-only) and probe
                      accuracies; the probe's majority baseline
  runs/samples.json   prompts, the true continuation and each objective's (its first seed)
  plots/loss.png, plots/probes.png, tables/objectives.md, tables/samples.md, findings.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, beside, compare, compare_to, headline, summarize
from lab.analysis.probe import bracket_depth_inside, probe_accuracy
from lab.config import check, check_at_least
from lab.data.pipeline import DataConfig, text_lm
from lab.data.tasks import MaskedWindows, PrefixWindows, TextWindows
from lab.experiment import Experiment
from lab.infer.objectives import generate_prefix, unmask
from lab.model import PRESETS, ModelConfig, apply
from lab.model.transformer import capture
from lab.runs import load_runs, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import sweep_params, train_sweeps
from lab.train.sweep import fresh_seeds, seed_members
from lab.viz import plots

CLAIM = (
    "Objectives bias behaviour before finetuning: causal LM is best at next-token, masked LM at filling in."
)
OBJECTIVES = ("causal", "prefix", "mlm")
ATTENTION = {"causal": "causal", "prefix": "prefix", "mlm": "bidirectional"}  # model.mask per objective
PROBE_CHANCE = 0.5  # balanced accuracy of any constant prediction


@dataclass(frozen=True)
class E11Config:
    # RoPE: a masked LM must learn to attend to its neighbours before it predicts anything but the unigram
    # distribution (a causal LM's own input token already predicts the next); with learned positions it
    # stayed on that plateau for all 300 steps at lr 3e-3, with RoPE it left it after ~200 (one seed, tried)
    model: ModelConfig = PRESETS["cpu"].replace(position="rope")  # its mask is set per objective
    train: TrainConfig = TrainConfig(steps=300, lr=3e-3, warmup_steps=30, eval_every=50, ckpt_every=300)
    data: DataConfig = DataConfig()
    seeds: int = 3
    # RoPE was chosen on a trial of seed 0 (above), so the published verdicts come from fresh seeds 3-5 (DESIGN
    # convention 15: a choice made on some seeds is tested on others).
    first_seed: int = fresh_seeds(3)
    mask_rate: float = 0.15  # masked LM: the fraction of positions selected
    mask_frac: float = 0.8  # of the selected: replaced by the mask token
    random_frac: float = 0.1  # ... by a random token (the rest are kept)
    min_prefix: int = 1  # prefix LM: prefix lengths uniform in [min_prefix, max_prefix]
    max_prefix: int | None = None  # None = model.max_len - 1
    probe_windows: int = 512  # held-out windows every probe measures
    fim_candidates: int = 8  # tokens the left-to-right models rerank with the right side
    probe_l2: float = 1e-3
    samples: int = 3
    prompt_len: int = 32
    sample_new: int = 24
    temperature: float = 0.8

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "samples", "prompt_len", "sample_new", "fim_candidates")
        check_at_least(self, 0, "first_seed")
        check_at_least(self, 4, "probe_windows")  # two per half of the probe, at least
        check(self.probe_l2 > 0, f"probe_l2 must be > 0, got {self.probe_l2}")
        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(
            self.model.mask == "causal",
            "model.mask is set per objective here (causal, prefix, bidirectional); leave it at 'causal'",
        )
        t = self.model.max_len
        check(t >= 4, f"model.max_len must be >= 4 (a middle token with two tokens on each side), got {t}")
        check(
            self.prompt_len + self.sample_new <= t,
            f"prompt_len + sample_new ({self.prompt_len} + {self.sample_new}) must be <= model.max_len ({t})",
        )
        _tasks(self, self.model.vocab_size + 1)  # refuses a mask rate outside (0, 1), a prefix past T, ...


def _tasks(cfg: E11Config, vocab: int) -> dict:
    """The three objectives' tasks over windows of model.max_len tokens, vocabulary `vocab` (text + mask)."""
    t = cfg.model.max_len
    mlm = MaskedWindows(t, vocab, cfg.mask_rate, cfg.mask_frac, cfg.random_frac)
    return {
        "causal": TextWindows(t, vocab),
        "prefix": PrefixWindows(t, vocab, cfg.min_prefix, cfg.max_prefix),
        "mlm": mlm,
    }


# fmt: off
PRESET_TABLE = {
    "smoke": E11Config(model=PRESETS["smoke"].replace(position="rope"),
                       train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20), seeds=2, probe_windows=16,
                       fim_candidates=3, samples=1, prompt_len=8, sample_new=4),
    "cpu": E11Config(),
    "gpu": E11Config(model=PRESETS["gpu"].replace(position="rope"), train=TRAIN_PRESETS["gpu"],
                     data=DataConfig(name="pystdlib"), probe_windows=2048, fim_candidates=16, samples=4, prompt_len=128, sample_new=64),
}
# fmt: on


def check_config(cfg: E11Config) -> None:
    lm = text_lm(cfg.data, cfg.model)
    lm.check()
    for ch in "()":
        ids = lm.text.tokenizer.encode(ch)
        check(len(ids) == 1, f"the probe counts {ch!r} tokens: the tokenizer must encode it as one id")


def targets_per_window(cfg: E11Config) -> dict[str, float]:
    """The expected number of positions that carry a loss per window, per objective."""
    t = cfg.model.max_len
    hi = t - 1 if cfg.max_prefix is None else cfg.max_prefix
    return {
        "causal": float(t),
        "prefix": float(t + 1 - (cfg.min_prefix + hi) / 2),  # positions p - 1 .. T - 1
        "mlm": cfg.mask_rate * t,
    }


# --- run: every JAX computation, written to files ------------------------------------------------------------
def run(cfg: E11Config, out: Path, opts) -> None:
    lm = text_lm(cfg.data, cfg.model)
    n_text = lm.model.vocab_size
    model = lm.model.replace(vocab_size=n_text + 1)  # + the mask token (id n_text), the same for all three
    members = seed_members(cfg.seeds, cfg.train, first=cfg.first_seed)
    tasks = _tasks(cfg, n_text + 1)
    specs = {
        o: SweepSpec(
            model.replace(mask=ATTENTION[o]), cfg.train, tasks[o], members, lm.text.arrays, lm.text.info
        )
        for o in OBJECTIVES
    }
    train_sweeps(out / "runs", specs, "e11", opts)
    params = {o: sweep_params(out / "runs" / o, s) for o, s in specs.items()}
    windows = _probe_windows(cfg, lm.text.val)
    tok = lm.text.tokenizer
    open_id, close_id = (int(tok.encode(c)[0]) for c in "()")
    probes = {
        o: _probes(cfg, specs[o].model, params[o], windows, n_text, (open_id, close_id), o)
        for o in OBJECTIVES
    }
    y = bracket_depth_inside(windows[len(windows) // 2 :], open_id, close_id).ravel()
    probes["probe_positive"] = float(y.mean())  # the base rate of the property on the probe's test half
    write_measurement(out / "runs" / "probes.json", probes, cfg)
    write_measurement(out / "runs" / "samples.json", _samples(cfg, specs, params, windows, n_text, tok), cfg)


def _probe_windows(cfg: E11Config, val) -> np.ndarray:
    """(N, T) held-out windows at evenly spaced starts of the validation stream (the same for every probe)."""
    t, n = cfg.model.max_len, cfg.probe_windows
    check(val.size >= t + n, f"the validation text has {val.size} tokens; the probes need {t + n}")
    starts = np.linspace(0, val.size - t, n).astype(np.int64)
    return np.asarray(val, np.int32)[starts[:, None] + np.arange(t)[None, :]]


def _chunks(windows: np.ndarray, size: int = 64):
    for i in range(0, len(windows), size):
        yield jnp.asarray(windows[i : i + size])


def _probes(cfg, model, params, windows, n_text, brackets, objective) -> dict:
    """Per member: next-token, fill-in-the-middle (reranked, left side only) and linear-probe accuracy."""
    t, mid, mask_id, k = model.max_len, model.max_len // 2, n_text, cfg.fim_candidates
    full = lambda b, n: jnp.full((b,), n, jnp.int32)

    def logits(p, x, prefix=None):
        return apply(model, p, x, prefix)[..., :n_text]

    def next_token(p, w):  # predict w[:, T-1] from w[:, :T-1]
        b = w.shape[0]
        if objective == "mlm":
            lg = logits(p, w.at[:, t - 1].set(mask_id))[:, t - 1]
        else:
            lg = logits(p, w, full(b, t - 1) if objective == "prefix" else None)[:, t - 2]
        return jnp.argmax(lg, -1) == w[:, t - 1]

    def fill(p, w):  # predict w[:, mid] from both sides: (reranked / masked, left side alone)
        b = w.shape[0]
        if objective == "mlm":
            hit = jnp.argmax(logits(p, w.at[:, mid].set(mask_id))[:, mid], -1) == w[:, mid]
            return hit, hit
        prefix = full(b, mid) if objective == "prefix" else None
        left = logits(p, w, prefix)[:, mid - 1]  # sees w[:, :mid] only
        cand = jax.lax.top_k(left, k)[1]  # (B, K)
        seq = jnp.repeat(w[:, None], k, 1).at[:, :, mid].set(cand).reshape(b * k, t)
        pre = None if prefix is None else jnp.repeat(prefix, k)
        lp = jax.nn.log_softmax(logits(p, seq, pre), -1)  # (B*K, T, V)
        nll = jnp.take_along_axis(lp[:, mid - 1 : t - 1], seq[:, mid:, None], -1)[..., 0].sum(-1)
        best = jnp.take_along_axis(cand, jnp.argmax(nll.reshape(b, k), -1)[:, None], 1)[:, 0]
        return best == w[:, mid], cand[:, 0] == w[:, mid]

    def features(p, w):
        prefix = full(w.shape[0], t) if objective == "prefix" else None
        return capture(model, p, w, prefix)[1]["residual"][-1]  # (B, T, D) after the last block

    run_all = jax.jit(
        jax.vmap(lambda p, w: (next_token(p, w), *fill(p, w), features(p, w)), in_axes=(0, None))
    )
    parts = [jax.device_get(run_all(params, w)) for w in _chunks(windows)]
    nt, fim, fim_left, feats = (np.concatenate([np.asarray(x[i]) for x in parts], axis=1) for i in range(4))
    labels = bracket_depth_inside(windows, *brackets)  # (N, T)
    half = len(windows) // 2
    probe = [
        probe_accuracy(
            f[:half].reshape(-1, f.shape[-1]),
            labels[:half].ravel(),
            f[half:].reshape(-1, f.shape[-1]),
            labels[half:].ravel(),
            cfg.probe_l2,
            balanced=True,
        )
        for f in feats
    ]
    return {
        "next_token": nt.mean(1).tolist(),
        "fim": fim.mean(1).tolist(),
        "fim_left": fim_left.mean(1).tolist(),
        "probe": probe,
    }


def _samples(cfg, specs, params, windows, n_text, tok) -> dict:
    """The first seed's (first_seed's) continuations of the first `samples` probe windows' first prompt_len
    tokens."""
    pick = np.linspace(0, len(windows) - 1, cfg.samples).astype(np.int64)
    prompts = jnp.asarray(windows[pick, : cfg.prompt_len])
    key = jax.random.PRNGKey(11)
    text = lambda ids: tok.decode([int(i) for i in ids])
    out = {
        "prompt": [text(w[: cfg.prompt_len]) for w in windows[pick]],
        "truth": [text(w[cfg.prompt_len : cfg.prompt_len + cfg.sample_new]) for w in windows[pick]],
    }
    for o, spec in specs.items():
        p0 = jax.tree_util.tree_map(lambda x: x[0], params[o])
        kw = dict(key=key, temperature=cfg.temperature)
        if o == "mlm":
            ids = unmask(spec.model, p0, prompts, cfg.sample_new, n_text, **kw)
        else:
            ids = generate_prefix(spec.model, p0, prompts, cfg.sample_new, n_text=n_text, **kw)
        out[o] = [text(row[cfg.prompt_len :]) for row in np.asarray(ids)]
    return out


# --- analyze: NumPy only, from the files -------------------------------------------------------------------
def _ms(values, digits: int = 3) -> str:
    return summarize(values).fmt(digits)


def _best_finding(cfg: E11Config, probes: dict, key: str, best: str, what: str) -> Finding:
    """`best` scores higher on probe `key` than each other objective: one comparison each, by the rule."""
    parts, ev = [], []
    for o in OBJECTIVES:
        if o == best:
            continue
        c = compare(probes[o][key], probes[best][key])
        parts.append(c.verdict("greater"))
        ev.append(f"{best} {_ms(probes[best][key])} vs {o} {_ms(probes[o][key])} ({c.fmt()}: {parts[-1]})")
    claim = f"At equal tokens and FLOPs, the {best} objective is the most accurate at {what}"
    return Finding(
        claim, headline(parts), f"accuracy on {cfg.probe_windows} held-out windows: " + "; ".join(ev)
    )


def finding_next_token(cfg: E11Config, probes: dict) -> Finding:
    return _best_finding(cfg, probes, "next_token", "causal", "next-token prediction")


def finding_fim(cfg: E11Config, probes: dict) -> Finding:
    f = _best_finding(cfg, probes, "fim", "mlm", "filling in the middle token")
    left = ", ".join(f"{o} {_ms(probes[o]['fim_left'])}" for o in ("causal", "prefix"))
    evidence = f"{f.evidence}. The left-to-right models rerank their top {cfg.fim_candidates} by the whole "
    evidence += f"window; from the left side alone: {left}"
    return Finding(f.claim, f.verdict, evidence)


def finding_probe(cfg: E11Config, probes: dict) -> Finding:
    """Each objective's frozen features encode the bracket property: balanced accuracy above chance (0.5)."""
    parts, ev = [], []
    for o in OBJECTIVES:
        c = compare_to(probes[o]["probe"], PROBE_CHANCE)
        parts.append(c.verdict("greater"))
        ev.append(f"{o} {_ms(probes[o]['probe'])} ({c.fmt(p=False)}: {parts[-1]})")
    claim = "Every objective's frozen features linearly encode whether a position is inside an unclosed '('"
    evidence = f"balanced accuracy on held-out positions ({probes['probe_positive']:.1%} inside), chance "
    evidence += f"{PROBE_CHANCE}: " + "; ".join(ev)
    return Finding(claim, headline(parts), evidence)


def _loss_plot(cfg: E11Config, runs, outs: Outputs) -> None:
    per = targets_per_window(cfg)
    tokens_per_step = cfg.train.batch_size * cfg.model.max_len
    fig, axes = plots.figure(ncols=2, width=6.0)
    for o in OBJECTIVES:
        r = runs[o]
        plots.band(
            axes[0, 0], r.val_steps * tokens_per_step, r.val_loss, f"{o} ({per[o]:.1f} targets/window)"
        )
        targets = r.val_steps * cfg.train.batch_size * per[o]
        plots.band(axes[0, 1], targets, r.val_loss, o)
    plots.finish(
        axes[0, 0],
        "against tokens seen (equal FLOPs: one model, same windows)",
        "tokens seen",
        "val loss (nats per target)",
    )
    plots.finish(axes[0, 1], "against targets trained on", "targets seen", "val loss (nats per target)")
    fig.suptitle(f"e11: validation loss of each objective on its own targets (mean ± sd, {cfg.seeds} seeds)")
    plots.save(fig, outs.plot("loss.png"))


def _probe_plot(cfg: E11Config, probes: dict, outs: Outputs) -> None:
    names = [
        "next token",
        "fill in\n(both sides)",
        "fill in\n(left side only)",
        "linear probe\n(balanced)",
    ]
    keys = ["next_token", "fim", "fim_left", "probe"]
    fig, axes = plots.figure(width=9.0)
    ax = axes[0, 0]
    # mlm has no left-side-only prediction (it reads both sides of its mask token): no bar there
    series = {o: [None if (o, k) == ("mlm", "fim_left") else probes[o][k] for k in keys] for o in OBJECTIVES}
    plots.grouped_bars(ax, names, series)
    ax.axhline(PROBE_CHANCE, color="grey", linestyle=":", label="probe chance (balanced accuracy)")
    plots.finish(
        ax,
        f"e11: probes on {cfg.probe_windows} held-out windows (mean ± sd over {cfg.seeds} seeds)",
        "probe",
        "accuracy (fraction)",
        outside=True,
    )
    plots.save(fig, outs.plot("probes.png"))


def _tables(cfg: E11Config, runs, probes, samples, outs: Outputs) -> None:
    per = targets_per_window(cfg)
    t = Table(
        f"Objectives after {cfg.train.steps} steps of {cfg.train.batch_size} windows of {cfg.model.max_len} "
        f"tokens (mean ± sd over {cfg.seeds} seeds)",
        [
            "objective",
            "attention",
            "targets per window",
            "final val loss (nats/target)",
            "val accuracy (own targets)",
            "next-token acc",
            "fill-in acc",
            "fill-in acc, left only",
            "probe balanced acc",
        ],
        note=f"Probe: a ridge linear classifier on the last block's features, inside an unclosed '(' or not "
        f"({probes['probe_positive']:.1%} of held-out positions are), fitted with balanced class weights and "
        f"scored by balanced accuracy (chance {PROBE_CHANCE}). Every objective trains on the same windows, "
        "tokens and FLOPs.",
    )
    for o in OBJECTIVES:
        r = runs[o]
        t.add(
            o,
            ATTENTION[o],
            f"{per[o]:.1f}",
            _ms(r.final_val_loss),
            _ms(r.val_accuracy[:, -1]),
            _ms(probes[o]["next_token"]),
            _ms(probes[o]["fim"]),
            _ms(probes[o]["fim_left"]) if o != "mlm" else "—",
            _ms(probes[o]["probe"]),
        )
    outs.table("objectives.md", t)
    s = Table(
        f"Samples (seed {cfg.first_seed}, temperature {cfg.temperature:g}): {cfg.sample_new} tokens after a "
        f"{cfg.prompt_len}-token held-out prompt; mlm by iterative unmasking (most confident position first)",
        ["prompt", "true continuation", *OBJECTIVES],
    )
    for i in range(len(samples["prompt"])):
        s.add(*(repr(samples[k][i]) for k in ("prompt", "truth", *OBJECTIVES)))
    outs.table("samples.md", s)


def analyze(cfg: E11Config, out: Path):
    runs = load_runs({o: out / "runs" / o for o in OBJECTIVES})
    probes = read_measurement(out / "runs" / "probes.json", cfg)
    samples = read_measurement(out / "runs" / "samples.json", cfg)
    outs = Outputs(out)
    _tables(cfg, runs, probes, samples, outs)
    _loss_plot(cfg, runs, outs)
    _probe_plot(cfg, probes, outs)
    nt, fim, probe = finding_next_token(cfg, probes), finding_fim(cfg, probes), finding_probe(cfg, probes)
    summary = f"Next-token ({nt.verdict}): " + ", ".join(
        f"{o} {_ms(probes[o]['next_token'])}" for o in OBJECTIVES
    )
    summary += f". Fill in the middle ({fim.verdict}): "
    summary += ", ".join(f"{o} {_ms(probes[o]['fim'])}" for o in OBJECTIVES)
    summary += f". Linear probe ({probe.verdict}, reported beside the headline): "
    summary += ", ".join(f"{o} {_ms(probes[o]['probe'])}" for o in OBJECTIVES)
    summary += (
        f" balanced accuracy (chance {PROBE_CHANCE}). At equal tokens seen, the masked LM had a loss on "
    )
    per = targets_per_window(cfg)
    summary += (
        f"{per['mlm']:.1f} of {cfg.model.max_len} positions per window, the prefix LM on {per['prefix']:.1f}."
    )
    return outs.findings(headline([nt, fim]), summary, [nt, fim, beside(probe)])


EXPERIMENT = Experiment(
    name="e11_objectives",
    title="Pretraining objectives: masked, causal and prefix LM",
    claim=CLAIM,
    config_class=E11Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=check_config,
)
