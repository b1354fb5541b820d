"""Project 5: "Generation is not decoding" — samplers, their effect on what a model writes, and the loop
that greedy decoding falls into.

Claim tested: a language model gives a distribution; the text you get is decided by how you sample from
it. The same trained models decode a grid of temperature x top-k x top-p settings; per setting and over
seeds we measure the entropy tokens were drawn from (nats/token, after filtering), diversity (distinct-1/2/3
pooled over the prompts), repetition (repeated 4-grams; ending in a loop) and the model's own
log-probability of the text (how "safe" it is). Greedy decoding (temperature 0) maximises each step's
probability and, on a small model, falls into a loop; we show the loop.

Run:      lab run e05 [--preset smoke|cpu|gpu] [--set train.steps=2000] [--seeds 3] [--data NAME]
Redraw:   lab analyze e05
Serve:    lab dashboard --checkpoint results/e05_sampling/runs/lm   (the interactive sampler on this model)
Writes:   results/e05_sampling/
  runs/lm/                 the language model, one member per seed
  runs/samples/seedN.npz   every sample of the grid: tokens, entropy after filtering, model probabilities
  runs/vocab.npz           each token id's bytes, so that analysis shows text without the tokenizer
  plots/entropy_diversity.png, tables/grid.md, tables/greedy.md, findings.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.analysis import Finding, Outputs, Table, code, compare, compare_to, escape, headline, summarize
from lab.config import check, check_at_least, check_causal, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.experiment import Experiment
from lab.infer.diversity import distinct_n, loop, repeated_by_position, repeated_ngram_fraction
from lab.infer.sampler import sample_trace
from lab.model import PRESETS, ModelConfig
from lab.runs import read_measurement, write_measurement
from lab.tokenizer.vocab import vocab_arrays, vocab_decoder
from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import member_params
from lab.viz import plots

GRID_KNOBS = ("temperature", "top_k", "top_p")  # the knobs of lab.ops.sampling.SAMPLERS the grid varies
STRONG = 0.8  # "diversity rises with entropy": per-seed Pearson r above this (e05's threshold from the start)
METRICS = {  # the columns of tables/grid.md, each a (seeds, settings) array (as is "logp", not shown)
    "entropy": "entropy (nats/token)",
    "distinct1": "distinct-1",
    "distinct2": "distinct-2",
    "distinct3": "distinct-3",
    "rep4": "repeated 4-grams",
    "loops": "ends in a loop",
}


@dataclass(frozen=True)
class E05Config:
    model: ModelConfig = PRESETS["cpu"]
    train: TrainConfig = TrainConfig(steps=1500, eval_every=250)  # batch 16, warmup 100, ckpt 500: defaults
    data: DataConfig = DataConfig()
    seeds: int = 3
    temperatures: tuple[float, ...] = (0.0, 0.5, 0.8, 1.0, 1.3)
    top_ks: tuple[int, ...] = (0, 10)
    top_ps: tuple[float, ...] = (1.0, 0.9)
    prompts: int = 8  # prompts cut from the validation text, the same for every setting and seed
    prompt_tokens: int = 32
    new_tokens: int = 128

    def __post_init__(self):
        check_distinct(self, "temperatures", "top_ks", "top_ps")
        check_at_least(self, 0, "temperatures", "top_ks")
        t = self.temperatures
        check(0.0 in t and max(t) > 0, "temperatures must include 0.0 (greedy) and a value > 0")
        check(all(0 < p <= 1 for p in self.top_ps), f"top_ps must be in (0, 1], got {self.top_ps}")
        check_at_least(self, 1, "seeds", "prompt_tokens")
        check_at_least(self, 2, "prompts")
        check_at_least(self, 8, "new_tokens")
        check_causal(self.model, "e05 generates text")


# fmt: off
PRESET_TABLE = {
    "smoke": E05Config(model=PRESETS["smoke"], train=TRAIN_PRESETS["smoke"], seeds=2,
                       temperatures=(0.0, 1.0), top_ks=(0,), top_ps=(1.0, 0.9),
                       prompts=3, prompt_tokens=8, new_tokens=16),
    "cpu": E05Config(),
    "gpu": E05Config(model=PRESETS["gpu"], train=TRAIN_PRESETS["gpu"].replace(steps=5000, eval_every=500),
                     data=DataConfig(name="pystdlib"),
                     temperatures=(0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5), top_ks=(0, 5, 20, 50),
                     top_ps=(1.0, 0.95, 0.8, 0.5), prompts=32, new_tokens=256),
}
# fmt: on


def settings(cfg: E05Config) -> list[tuple[float, int, float]]:
    """(temperature, top_k, top_p) of the grid; greedy appears once (filters do nothing at T = 0)."""
    sampled = [(t, k, p) for t in cfg.temperatures if t > 0 for k in cfg.top_ks for p in cfg.top_ps]
    return [(0.0, 0, 1.0)] + sampled


def _label(t, k, p) -> str:
    return "greedy" if t == 0 else f"T={t:g}" + (f", k={k}" if k else "") + (f", p={p:g}" if p < 1 else "")


def run(cfg: E05Config, out: Path, opts) -> None:
    lm, run_dir, n = text_lm(cfg.data, cfg.model), out / "runs" / "lm", cfg.new_tokens
    members = members_grid(range(cfg.seeds), [cfg.train.lr], [cfg.train.init_scale])
    spec = SweepSpec.text(lm, cfg.train, members)
    train_sweep(run_dir, spec, **opts.train_kw(), desc="e05 LM")
    grid, val = settings(cfg), lm.text.val
    starts = np.linspace(0, len(val) - cfg.prompt_tokens - 1, cfg.prompts).astype(int)  # evenly spaced
    prompts = np.stack([val[s : s + cfg.prompt_tokens] for s in starts]).astype(np.int32)
    rows = np.repeat(prompts, len(grid), axis=0)  # row r: setting r % len(grid), prompt r // len(grid)
    knobs = dict(zip(GRID_KNOBS, np.tile(np.array(grid), (cfg.prompts, 1)).T))
    for seed, params in enumerate(member_params(run_dir, lm.model, cfg.train, members)):
        # the recompute (cached=False) measured the published numbers; the cache gives the same tokens
        rec = sample_trace(lm.model, params, rows, n, knobs, seed=1000 + seed, max_new=n, cached=False)
        z = {k: rec[k].reshape(cfg.prompts, len(grid), -1) for k in ("tokens", "entropy_after", "model_prob")}
        data = {"settings": np.array(grid), "prompts": prompts, **z}
        write_measurement(out / "runs" / "samples" / f"seed{seed}.npz", data, cfg)
    tok = lm.text.tokenizer
    write_measurement(out / "runs" / "vocab.npz", vocab_arrays(tok.token_bytes, tok.vocab_size), cfg)


# --- analysis: reads runs/samples/*.npz and runs/vocab.npz ------------------------------------------------
def _metrics(cfg: E05Config, samples: list[dict]) -> dict[str, np.ndarray]:
    """Per metric, a (seeds, settings) array."""
    m = {k: np.zeros((cfg.seeds, len(settings(cfg)))) for k in (*METRICS, "logp")}
    for (s, j), _ in np.ndenumerate(m["entropy"]):
        toks = samples[s]["tokens"][:, j].tolist()  # one list of token ids per prompt
        m["entropy"][s, j] = samples[s]["entropy_after"][:, j].mean()
        for n in (1, 2, 3):
            m[f"distinct{n}"][s, j] = distinct_n(toks, n)
        m["rep4"][s, j] = np.mean([repeated_ngram_fraction(t, 4) for t in toks])
        m["loops"][s, j] = np.mean([lp is not None and lp[0] <= 32 for lp in (loop(t, 3) for t in toks)])
        # the model's own log-probability (T = 1, no filters) of what was drawn: how "safe" the text is
        m["logp"][s, j] = np.log(np.clip(samples[s]["model_prob"][:, j], 1e-30, 1)).mean()
    return m


def _plot(cfg: E05Config, outs: Outputs, m: dict, samples: list[dict], grid: list) -> None:
    """Entropy vs diversity (one point per setting), and repetition by position for greedy and T = 1."""
    fig, axes = plots.figure(ncols=2, width=6.2, height=4.4)
    ax, temps = axes[0, 0], np.array([s[0] for s in grid])
    for t in sorted(set(temps)):
        e, d = (m[k][:, temps == t] for k in ("entropy", "distinct2"))
        label = "greedy" if t == 0 else f"T={t:g} (all k, p)"
        ax.errorbar(e.mean(0), d.mean(0), xerr=e.std(0), yerr=d.std(0), fmt="o", capsize=2, label=label)
    x, y = "entropy of the sampled distribution (nats/token)", "distinct-2 (unique bigrams / bigrams)"
    plots.finish(ax, "Diversity against entropy, one point per sampler setting", x, y)
    for j in [0] + [j for j, st in enumerate(grid) if st in ((1.0, 0, 0.9), (1.0, 0, 1.0))]:
        curves = [np.mean([repeated_by_position(t, 4) for t in z["tokens"][:, j]], 0) for z in samples]
        plots.band(axes[0, 1], np.arange(1, cfg.new_tokens + 1), np.stack(curves), _label(*grid[j]))
    axes[0, 1].set_ylim(-0.02, 1.02)  # a fraction: the ± sd band is clipped to where values can lie
    y = "fraction of 4-grams seen earlier in the sample"
    plots.finish(axes[0, 1], "Repetition by position (mean ± sd over seeds)", "generated token position", y)
    plots.save(fig, outs.plot("entropy_diversity.png"))


def _tables(cfg: E05Config, outs: Outputs, m: dict, z: dict, grid: list, decode) -> None:
    title = f"Sampler grid ({cfg.prompts} prompts x {cfg.new_tokens} new tokens, {cfg.seeds} seeds)"
    t = Table(title, ["setting", *METRICS.values()])
    for j, s in enumerate(grid):
        t.add(_label(*s), *(summarize(m[k][:, j]).fmt(3) for k in METRICS))
    show = lambda text: code(text.replace("\n", "↵"))  # noqa: E731  (the table escapes its cells)
    j1 = next((j for j, st in enumerate(grid) if st == (1.0, 0, 0.9)), len(grid) - 1)
    sampled = escape(show(decode(z["tokens"][0, j1])))  # not a table cell: escaped here
    after = f"The same first prompt sampled with {_label(*grid[j1])}: {sampled}"
    cols = ["prompt (end)", "greedy continuation", "loop"]
    g = Table("What greedy decoding writes (seed-0 model)", cols, after=after)
    for i in range(min(cfg.prompts, 4)):
        lp = loop(toks := z["tokens"][i, 0].tolist(), 3)
        seen = lp and f"period {lp[0]} tokens from token {lp[1]}: {show(decode(toks[lp[1] : sum(lp)]))}"
        g.add(show(decode(z["prompts"][i])[-30:]), show(decode(toks)), seen or "none")
    outs.table("grid.md", t)
    outs.table("greedy.md", g)


def _greedy_loops(m: dict, grid: list) -> Finding:
    sampled = [j for j, st in enumerate(grid) if st[0] >= 0.8 and st[1:] == (0, 1.0)] or [len(grid) - 1]
    rep_s, loop_s = m["rep4"][:, sampled].mean(1), m["loops"][:, sampled].mean(1)  # paired: greedy - sampling
    rep = compare(rep_s, m["rep4"][:, 0], paired_by_seed=True)
    loops = compare(loop_s, m["loops"][:, 0], paired_by_seed=True)
    ev = "samples that end in a loop (period <= 32 tokens, >= 3 repeats): greedy "
    ev += f"{summarize(m['loops'][:, 0]).fmt(2)}, pure sampling at T >= 0.8 {summarize(loop_s).fmt(2)} "
    ev += f"({loops.fmt(2)}); repeated 4-grams: greedy {summarize(m['rep4'][:, 0]).fmt(3)} vs "
    ev += f"{summarize(rep_s).fmt(3)} ({rep.fmt()}; paired over seeds)"
    verdict = headline([rep.verdict("greater"), loops.verdict("greater")])
    claim = "Greedy decoding falls into repetition loops more than pure sampling at T >= 0.8 does"
    return Finding(claim, verdict, ev)


def _diversity(m: dict, grid: list) -> Finding:
    corr = np.array([np.corrcoef(e, d)[0, 1] for e, d in zip(m["entropy"], m["distinct2"])])
    c = compare_to(corr, STRONG)
    ev = f"Pearson correlation of entropy and distinct-2 across the {len(grid)} settings, per seed: "
    ev += f"{summarize(corr).fmt(3)} (against r = {STRONG}: {c.fmt()})"
    return Finding("Diversity rises with the entropy the sampler leaves", c.verdict("greater"), ev)


def _truncation(m: dict, grid: list) -> tuple[list[Finding], str]:
    """Per temperature with a top-p setting beside the unfiltered one (a, b): paired over seeds, top-p
    lowers the entropy and raises the model's log-probability of the drawn tokens. Returns the finding (none
    without such a pair) and the summary's ending, both from the counts."""
    unfiltered = [a for a, s in enumerate(grid) if s[0] > 0 and s[1:] == (0, 1.0)]
    pairs = [(a, b) for a in unfiltered for b, s in enumerate(grid) if s[:2] == grid[a][:2] and s[2] < 1]
    if not pairs:
        return [], "."
    by = lambda k, d: [compare(m[k][:, a], m[k][:, b], paired_by_seed=True).verdict(d) for a, b in pairs]
    per_t = lambda f: ", ".join(f(a, b, f"T={grid[a][0]:g}") for a, b in pairs)  # f(a, b, "T=...")
    cut, safe = by("entropy", "less"), by("logp", "greater")
    drop = per_t(lambda a, b, T: f"{T}: {summarize(m['entropy'][:, a] - m['entropy'][:, b]).fmt(3)} nats")
    rise = per_t(lambda a, b, T: summarize(m["logp"][:, b] - m["logp"][:, a]).fmt(3))
    loops = per_t(lambda a, b, T: f"{T}: {m['loops'][:, a].mean():.2f} -> {m['loops'][:, b].mean():.2f}")
    ev = f"entropy drop from top-p {grid[pairs[0][1]][2]:g}, per temperature {drop}; the model's mean "
    ev += f"log-probability (nats) of the drawn tokens rises by {rise} (paired 95% CI excluding 0: entropy "
    ev += f"lower at {cut.count('supported')} of {len(pairs)} temperatures, log-probability higher at "
    ev += f"{safe.count('supported')} of {len(pairs)}). Samples ending in a loop (fraction, not tested), "
    ev += f"without -> with top-p: {loops} per temperature"
    claim = "Top-p cuts the tail: less entropy and likelier tokens at the same temperature"
    finding = Finding(claim, headline(cut + safe), ev)
    ending = (
        f"; top-p {grid[pairs[0][1]][2]:g} lowered the entropy at {cut.count('supported')} of {len(pairs)} "
    )
    ending += f"temperatures and made the drawn tokens likelier at {safe.count('supported')} of {len(pairs)}"
    ending += (
        ": truncation trades tail diversity for likelier tokens." if finding.verdict == "supported" else "."
    )
    return [finding], ending


def analyze(cfg: E05Config, out: Path):
    outs, grid, runs = Outputs(out), settings(cfg), Path(out) / "runs"
    samples = [read_measurement(runs / "samples" / f"seed{s}.npz", cfg) for s in range(cfg.seeds)]
    m = _metrics(cfg, samples)
    _plot(cfg, outs, m, samples, grid)
    _tables(cfg, outs, m, samples[0], grid, vocab_decoder(read_measurement(runs / "vocab.npz", cfg)))
    truncation, ending = _truncation(m, grid)
    findings = [_greedy_loops(m, grid), _diversity(m, grid), *truncation]
    if [f.verdict for f in findings[:2]] != ["supported"] * 2:
        summary = "The decoding choices changed the text, but not every part of the slogan held; "
        summary += "see the findings."
    else:
        summary = "One trained model, many texts: greedy decoding loops, and sampling diversifies in step "
        summary += "with the entropy it allows" + ending
    return outs.findings(headline(findings), summary, findings)


EXPERIMENT = Experiment(
    name="e05_sampling",
    title="Sampling: temperature, top-k, top-p and the greedy loop",
    claim="Generation is not decoding: how you sample decides what the model writes.",
    config_class=E05Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=lambda cfg: text_lm(cfg.data, cfg.model).check(),
)
