"""Project 13: "Scaling laws are empirical, not philosophical" — fit them, then test them on a held-out size.

Claim tested: over a grid of model sizes (non-embedding parameters N, ~1e4 to ~10^6.5 on CPU) and token budgets
D, trained on real text (the embedded Python docs, a byte-level BPE of 512 ids), validation loss follows
L(N) = E + A N^-alpha and L(N, D) = E + A/N^alpha + B/D^beta well enough that a law fitted without the
largest size predicts its loss within 2 seed-sds or 2%. The fits are Hoffmann et al. 2022's approach 3 as
Besiroglu et al. 2024 replicated it (log loss, Huber delta 1e-3, summed terms, a grid of L-BFGS starts;
lab.analysis.scaling), with 95% intervals from a bootstrap over seeds.

Run:      lab run e13 [--preset smoke|cpu|gpu] [--set sizes=1x32,2x64,3x96,4x128] [--set budgets=61440,122880,245760] [--set lr_width=384] [--seeds 3]
Redraw:   lab analyze e13
Writes:   results/e13_scaling_laws/
  runs/L<layers>-D<d_model>/  one sweep per size: seeds as vmapped members of one compiled program (sharded
                              over devices by the sweep strategy or `--set mesh.*`); timing.json holds XLA's
                              memory analysis of the compiled train call. At the cpu preset `auto` shards
                              the five smaller sizes' seeds over the 2 devices and keeps L4-D256 (5.1 GFLOP
                              per member-step, over the CPU rule's 2) vmapped on one; `--strategy shard`
                              shards every size
  runs/sizes.json             per size: parameters (embedding, non-embedding), FLOPs per token (exact and
                              6N), the unembedding's share, peak memory, tokens/s, compile and train seconds
  plots/loss_vs_params.png, plots/residuals.png, tables/sizes.md, tables/fits.md, findings.json

Token budgets from one run per size. Every size trains at a *constant* learning rate after warmup
(train.min_lr_ratio = 1, so the schedule at step t does not depend on the run's length), and each budget is
the validation loss at the step where that many tokens were seen. A run stopped at step t is then the very
same computation as a separate run of t steps (same seeds, same batches, same learning rates), so reading
budgets from one run is honest here; it would not be with a cosine schedule, which Hoffmann et al. note must
match each budget's length. The price: no cooldown, so every loss is higher than a decayed run would reach,
and B, beta describe constant-learning-rate training.

The cpu preset's design, and why. A scaling law is only worth fitting where loss falls with N, so the grid is
built for that before any result is seen: (a) budgets of 61,440, 122,880 and 245,760 tokens (4x the first
version's largest), still a quarter of an epoch of the 1.08M-token training split, so no size sees a token
twice, spent as 960 steps of 8 sequences of 32 tokens (240, 480, 960 steps): a first try at 32 x 64 tokens a
step for 120 steps left every size on the unigram plateau (~4.8 to 5.0 nats after 120 steps; a deeper model
escaped it no sooner), so leaving the plateau takes optimizer steps, and on a CPU every token costs the same
whatever the batch, so the tokens buy the most steps at the smallest batch; (b) a learning rate per size by
one rule fixed in advance, lr = train.lr * lr_width / d_model with 1e-3 at d_model 384 (nanoGPT's
shakespeare_char recipe, TrainConfig's default): Adam's best step for hidden matrices shrinks as 1/width (Yang
et al. 2021's muP; the papers we compare with also lowered the rate as models grew), so 1.2e-2 at d_model 32
down to 1.5e-3 at 256. The first version gave every size 2e-3 at 8 x 32 tokens a step for 240 steps, and every
size stayed near the unigram plateau (~4.8 nats), loss not falling with N at all. Nothing here was tuned on
any size's result, the held-out one included, but the redesign followed that first version's results, so the
published runs use fresh seeds (first_seed). What it costs: each size trains 4 seeds x 245,760 = 983,040
tokens, 4x the first version. On 2026-12-04 the whole cpu preset took 284 s on 2 cores, and 291 s for the
published run of 2026-12-05 (346k tokens/s at 1x32 down to 6.1k at 4x256, whose training alone took 161 s;
tables/sizes.md has each size's compile and train seconds), within the issue's 10 minutes for e13. The
largest size is 4x256, 3.1e6 non-embedding parameters (10^6.5, the issue's CPU range; it was 4x160, 10^6.1,
until a measurement showed it fits the time), and the gpu preset carries larger sizes and budgets.

Why a tiny regime differs from Kaplan et al. (alpha_N 0.076) and Chinchilla (E 1.82, A 482, B 2085, alpha
0.35, beta 0.37, Besiroglu et al.'s refit): (1) our models see D/N from ~0.02 to ~20 tokens per parameter,
mostly far below Chinchilla's ~20, so the data term B/D^beta stays large (about half the loss in the published
fit) and Kaplan's L(N) (trained to convergence) is not what a fixed budget measures: the L(N) exponent at a
fixed budget is not alpha_N; (2) the unembedding (d_model x vocabulary) is a large share of the FLOPs of a
model with d_model 32, and Kaplan's N leaves it out, so the smallest models get compute that N does not count;
(3) losses are nats per BPE-512 token of Python docs, not GPT-2 tokens of web text, so E, A and B are on
another scale altogether and only the exponents are compared; (4) the learning rate follows a fixed rule, not
a per-size tuning as in the papers, and there is no cooldown; (5) 960 small steps is early training, where a
larger model's advantage is how fast it learns, not the capacity a converged law describes.
"How small is too small" is computed, not assumed: for each size below the three largest, the law fitted
on the sizes above it predicts it. The verdict is on the smallest size, fixed by the grid in advance: its
residual's bootstrap CI excludes zero (either sign: "off the law") or not. The largest judged size whose CI
excludes zero is reported as the threshold, a description read on the same seeds rather than a verdict. A
size is judged only where the law above it is determined (its alpha's CI inside (0, 1]: a flat or runaway
law extrapolated downward predicts anything). The criterion is relative to the law of the larger sizes: where
the larger sizes themselves bend away, the small ones are flagged against that. At the cpu preset, seeds 0-3
put L2-D48 and L2-D64 off the law (both below it) and not L1-D32; the published fresh seeds 4-7 put no size
off it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.analysis import Finding, Outputs, Table, beside, decide, headline, scaling, summarize
from lab.analysis.findings import evidence_summary
from lab.config import check, check_at_least
from lab.data.pipeline import DataConfig, text_lm
from lab.experiment import Experiment
from lab.model import ModelConfig
from lab.model.flops import train_flops_per_token
from lab.runs import load_run, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.sweep import fresh_seeds, seed_members
from lab.viz import plots

KAPLAN_ALPHA_N = 0.076  # Kaplan et al. 2020, L(N) at convergence
CHINCHILLA = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.35, "beta": 0.37}  # Besiroglu et al. 2024
CHINCHILLA_TOKENS_PER_PARAM = 20.0
HELD_OUT_SDS, HELD_OUT_FRACTION = 2.0, 0.02  # the held-out goal: within 2 seed-sds or 2% of the loss
ALPHA_MAX = 1.0  # a fitted law is trusted (too-small probe, tokens per parameter) only if its exponents' CIs lie in (0, 1]
# the compute-optimal tokens per parameter is judged only if it lies within this factor of the range the grid saw
EXTRAPOLATION = 10.0


@dataclass(frozen=True)
class E13Config:
    model: ModelConfig = ModelConfig(max_len=32, n_layers=1, d_model=32, n_heads=2)  # sizes set per size
    sizes: tuple[str, ...] = ("1x32", "2x48", "2x64", "3x96", "4x128", "4x256")  # "<n_layers>x<d_model>"
    head_dim: int = 16  # n_heads = d_model / head_dim
    # train.lr is the peak learning rate at d_model = lr_width; a size of width d trains at lr * lr_width / d
    train: TrainConfig = TrainConfig(
        batch_size=8, lr=1e-3, warmup_steps=20, min_lr_ratio=1.0, log_every=20, eval_batches=32
    )
    lr_width: int = 384  # nanoGPT's shakespeare_char: lr 1e-3 at d_model 384 (TrainConfig's default)
    budgets: tuple[int, ...] = (61440, 122880, 245760)  # training tokens per run (240, 480, 960 steps of 256)
    data: DataConfig = DataConfig(tokenizer="bpe", bpe_vocab_size=512)
    seeds: int = 4  # 2 host devices: 3 seeds pad to 4 anyway
    # The budgets and the learning-rate rule were redesigned after a first version on seeds 0-3 stayed on the
    # plateau (above), so the published verdicts come from fresh seeds 4-7 (DESIGN convention 15: a choice made
    # on some seeds is tested on others).
    first_seed: int = fresh_seeds(4)
    bootstrap: int = 200  # resamples over seeds for every interval

    def __post_init__(self):
        check_at_least(self, 2, "seeds")
        check_at_least(self, 0, "first_seed")
        check_at_least(self, 20, "bootstrap")
        check(
            len(self.sizes) >= 4,
            "a scaling fit needs at least 3 sizes (E, A and alpha) and the held-out test one more: "
            f"need >= 4 sizes, got {len(self.sizes)}",
        )
        for s in self.sizes:
            check(
                re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", str(s)) is not None,
                f"each size is <n_layers>x<d_model> (e.g. 2x64), got {s!r}",
            )
        check(len(set(self.shapes)) == len(self.sizes), f"the sizes must be distinct, got {self.sizes}")
        check(self.head_dim >= 1, f"head_dim must be >= 1, got {self.head_dim}")
        check(
            self.lr_width >= 1,
            f"lr_width must be >= 1 (the d_model at which train.lr holds), got {self.lr_width}",
        )
        for _, d in self.shapes:
            check(
                d % self.head_dim == 0,
                f"every d_model must be a multiple of head_dim={self.head_dim}, got {d}",
            )
        check(
            self.train.min_lr_ratio == 1.0,
            "train.min_lr_ratio must be 1 here (a constant learning rate after warmup): the token budgets are "
            f"read from one run per size, honest only when the schedule does not depend on its length; got "
            f"{self.train.min_lr_ratio}",
        )
        check(len(self.budgets) >= 2, f"the L(N, D) fit needs >= 2 token budgets, got {len(self.budgets)}")
        check(list(self.budgets) == sorted(set(self.budgets)), f"budgets must increase, got {self.budgets}")
        one = self.batch_tokens
        for b in self.budgets:
            check(
                b >= one,
                f"token budget {b} is smaller than one batch ({self.train.batch_size} x "
                f"{self.model.max_len} = {one} tokens); each budget must be >= {one}",
            )
            step = one * self.train.log_every
            check(
                b % step == 0,
                f"token budget {b} must be a multiple of one logging interval's tokens "
                f"(train.log_every x batch = {step})",
            )
        check(
            self.train.warmup_steps < self.budgets[0] // one,
            f"train.warmup_steps ({self.train.warmup_steps}) must end before the smallest budget "
            f"({self.budgets[0] // one} steps)",
        )

    @property
    def batch_tokens(self) -> int:
        return self.train.batch_size * self.model.max_len

    @property
    def budget_steps(self) -> list[int]:
        return [b // self.batch_tokens for b in self.budgets]

    def lr(self, width: int) -> float:
        """The peak learning rate of a size of d_model `width`: train.lr * lr_width / width."""
        return self.train.lr * self.lr_width / width

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(n_layers, d_model) of each size."""
        return [tuple(int(x) for x in str(s).split("x")) for s in self.sizes]


# fmt: off
PRESET_TABLE = {
    "smoke": E13Config(
        model=ModelConfig(max_len=16, n_layers=1, d_model=16, n_heads=2), sizes=("1x8", "1x16", "1x24", "1x32"),
        head_dim=8, train=TRAIN_PRESETS["smoke"].replace(warmup_steps=2, min_lr_ratio=1.0, log_every=5), lr_width=16,
        budgets=(640, 1280, 2560), data=DataConfig(tokenizer="bpe", bpe_vocab_size=300), seeds=2, bootstrap=20),
    "cpu": E13Config(),
    # one accelerator: ~1e5 to ~2e8 non-embedding parameters, 8M to 33M tokens
    "gpu": E13Config(
        model=ModelConfig(max_len=256, n_layers=2, d_model=128, n_heads=2, dtype="bfloat16"),
        sizes=("2x128", "4x256", "6x384", "8x512", "12x768", "16x1024"), head_dim=64,
        train=TRAIN_PRESETS["gpu"].replace(lr=6e-4, min_lr_ratio=1.0), lr_width=768,  # GPT-3 125M's 6e-4 at 768
        budgets=(8_192_000, 16_384_000, 32_768_000),
        data=DataConfig(name="pystdlib", tokenizer="bpe", bpe_vocab_size=4096)),
}
# fmt: on


def size_name(depth: int, width: int) -> str:
    return f"L{depth}-D{width}"


def _model(cfg: E13Config, depth: int, width: int) -> ModelConfig:
    return cfg.model.replace(n_layers=depth, d_model=width, n_heads=width // cfg.head_dim)


def _train(cfg: E13Config, width: int) -> TrainConfig:
    """The training config of a size of d_model `width`: as many steps as the largest budget, evaluated at
    every budget, at that width's learning rate."""
    steps = cfg.budget_steps
    return cfg.train.replace(
        steps=steps[-1], eval_every=math.gcd(*steps), ckpt_every=steps[-1], lr=cfg.lr(width)
    )


def check_config(cfg: E13Config) -> None:
    text_lm(cfg.data, cfg.model).check()


# --- run: every JAX computation, written to files ------------------------------------------------------------
def param_counts(model: ModelConfig) -> dict:
    """Parameters of `model` by the shapes its init makes: total, embedding (token and position tables;
    the tied unembedding is the token table), and non-embedding (Kaplan et al.'s N)."""
    import jax

    from lab.model import init

    shapes = jax.eval_shape(lambda: init(model, jax.random.PRNGKey(0)))
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    emb = sum(int(np.prod(shapes[k].shape)) for k in ("wte", "wpe") if k in shapes)
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def run(cfg: E13Config, out: Path, opts) -> None:
    sizes = {}
    for depth, width in cfg.shapes:
        name = size_name(depth, width)
        train = _train(cfg, width)
        lm = text_lm(cfg.data, _model(cfg, depth, width))
        spec = SweepSpec.text(lm, train, seed_members(cfg.seeds, train, first=cfg.first_seed))
        run_dir = out / "runs" / name
        train_sweep(run_dir, spec, **opts.train_kw(), desc=f"e13 {name}")
        timing = json.loads((run_dir / "timing.json").read_text())
        m = spec.model
        counts = param_counts(m)
        exact = train_flops_per_token(m)
        sizes[name] = {
            "depth": depth,
            "width": width,
            "lr": train.lr,
            "vocab_size": m.vocab_size,
            "params": counts,
            "flops_per_token_exact": exact,
            "flops_per_token_6N": 6.0 * counts["non_embedding"],
            "unembedding_flops_share": 6.0 * m.d_model * m.vocab_size / exact,
            "peak_bytes": (timing.get("memory") or {}).get("peak"),
            "tokens_per_second": timing["tokens_per_second"],
            "compile_seconds": timing["compile_seconds"],
            "train_seconds": timing["train_seconds"],
            "strategy": timing["strategy"],
            "devices": timing["devices"],
        }
    write_measurement(out / "runs" / "sizes.json", sizes, cfg)


# --- analyze: NumPy only, from the files ---------------------------------------------------------------------
@dataclass
class _Grid:
    names: list[str]
    n: np.ndarray  # (S,) non-embedding parameters
    d: np.ndarray  # (K,) token budgets
    loss: list[np.ndarray]  # per size: (seeds, K) validation loss at each budget
    sizes: dict  # sizes.json

    @property
    def mean(self) -> np.ndarray:
        return np.stack([x.mean(axis=0) for x in self.loss])  # (S, K)


def _grid(cfg: E13Config, out: Path) -> _Grid:
    sizes = read_measurement(out / "runs" / "sizes.json", cfg)
    names = [size_name(*s) for s in cfg.shapes]
    loss = []
    for name in names:
        r = load_run(out / "runs" / name)
        cols = [int(np.flatnonzero(r.val_steps == s)[0]) for s in cfg.budget_steps]
        loss.append(r.val_loss[:, cols].astype(np.float64))
    n = np.array([sizes[k]["params"]["non_embedding"] for k in names], np.float64)
    return _Grid(names, n, np.asarray(cfg.budgets, np.float64), loss, sizes)


def _ln(g: _Grid, means, drop: int | None = None, below: int = 0):
    """L(N) at the largest budget from per-size means (S, K), sizes `below`.. (without index `drop`)."""
    idx = [i for i in range(below, len(g.names)) if i != drop]
    return scaling.fit_power_law(g.n[idx], np.asarray(means)[idx, -1])


def _lnd(g: _Grid, means, starts=None):
    nn, dd = np.meshgrid(g.n, g.d, indexing="ij")
    return scaling.fit_chinchilla(nn.ravel(), dd.ravel(), np.asarray(means).ravel(), starts=starts)


def _fits(cfg: E13Config, g: _Grid) -> dict:
    """Every fit on the seed means and its bootstrap: L(N), L(N, D), the held-out prediction and the
    residual of each small size against the law fitted on the sizes above it."""
    mean = g.mean
    last = len(g.names) - 1
    ln, lnd = _ln(g, mean), _lnd(g, mean)
    held = _ln(g, mean, drop=last)
    c_max = 6.0 * g.n[-1] * g.d[-1]
    probes = list(range(0, len(g.names) - 3))  # sizes with >= 3 larger sizes to fit on
    above = {i: _ln(g, mean, below=i + 1) for i in probes}
    start_ln, start_lnd, start_held = ([scaling.law_start(x)] for x in (ln, lnd, held))
    start_above = {i: [scaling.law_start(above[i])] for i in probes}

    nn, dd = (x.ravel() for x in np.meshgrid(g.n, g.d, indexing="ij"))

    def stats(means):
        """(R, S, K) seed means -> (R, statistics): every fit batched over the R rows (one L-BFGS run each)."""
        r = means.shape[0]
        a = scaling.fit_power_laws(g.n, means[:, :, -1], starts=start_ln)
        b = scaling.fit_chinchillas(nn, dd, means.reshape(r, -1), starts=start_lnd)
        h = scaling.fit_power_laws(g.n[:last], means[:, :last, -1], starts=start_held)
        laws = [
            scaling.fit_power_laws(g.n[i + 1 :], means[:, i + 1 :, -1], starts=start_above[i]) for i in probes
        ]
        rows = []
        for j in range(r):
            above_j = [law[j] for law in laws]
            res = [means[j, i, -1] - law.predict(g.n[i]) for i, law in zip(probes, above_j)]
            rows.append(
                [
                    a[j].alpha,
                    a[j].E,
                    a[j].A,
                    b[j].alpha,
                    b[j].beta,
                    b[j].E,
                    b[j].A,
                    b[j].B,
                    scaling.compute_optimal(b[j], c_max)["tokens_per_param"],
                    h[j].predict(g.n[last]) - means[j, last, -1],
                    *res,
                    *[law.alpha for law in above_j],
                ]
            )
        return np.array(rows, np.float64)

    boot = stats(np.stack(scaling.bootstrap_means(g.loss, cfg.bootstrap, seed=0), axis=1))
    lo, hi = scaling.interval(boot)
    point = stats(mean[None])[0]
    keys = ["ln_alpha", "ln_E", "ln_A", "alpha", "beta", "E", "A", "B", "tpp", "held_err"]
    keys += [f"res{i}" for i in probes] + [f"above_alpha{i}" for i in probes]
    ci = {k: (float(lo[j]), float(hi[j])) for j, k in enumerate(keys)}
    return {
        "ln": ln,
        "lnd": lnd,
        "held": held,
        "c_max": c_max,
        "point": dict(zip(keys, map(float, point))),
        "ci": ci,
        "probes": probes,
        "above": above,
        "failed": int(np.isnan(boot).any(axis=1).sum()),
    }


def _num(x: float, d: int = 3, sign: str = "") -> str:
    """`x` to `d` decimals, or to `d` significant digits when it is too large for decimals to read (a law
    extrapolated far outside the sizes it was fitted on can predict absurd losses)."""
    return f"{x:{sign}.{d}f}" if abs(x) < 1e3 else f"{x:{sign}.{d}g}"


def _ci(ci, d=3) -> str:
    return f"[95% CI {_num(ci[0], d)}, {_num(ci[1], d)}]"


# A fitted E below this share of the smallest mean loss leaves the objective flat in E: the bootstrap's refits,
# which start at the full-data fit, then leave E where it starts, and their spread is no measure of it.
E_FLOOR = 0.01
E_UNDETERMINED = (
    f"(interval not determined: E < {E_FLOOR:.0%} of the loss, where the objective is flat in it)"
)


def _e_interval(g: _Grid, e: float, ci, fmt) -> str:
    """E's bootstrap interval formatted by `fmt`, or why it is not given."""
    return fmt(ci) if e >= E_FLOOR * float(np.min(g.mean)) else E_UNDETERMINED


def _two_sided(ci, ref: float) -> str:
    """The verdict on "differs from ref": supported when the CI excludes ref (either side), else inconclusive."""
    shifted = (ci[0] - ref, ci[1] - ref)
    return (
        "supported"
        if "supported" in (decide(shifted, "greater"), decide(shifted, "less"))
        else "inconclusive"
    )


def finding_held_out(g: _Grid, f: dict) -> Finding:
    last = g.names[-1]
    obs = g.loss[-1][:, -1]
    tol = max(HELD_OUT_SDS * float(np.std(obs, ddof=1)), HELD_OUT_FRACTION * float(obs.mean()))
    err, ci = f["point"]["held_err"], f["ci"]["held_err"]
    verdict = decide(ci, "equal", tol)
    within = "within" if abs(err) <= tol else "outside"
    return Finding(
        f"L(N) fitted without the largest size ({last}) predicts its loss within 2 seed-sds or 2%",
        verdict,
        f"predicted {f['held'].predict(g.n[-1]):.3f} vs observed {summarize(obs).fmt()} nats/token: error "
        f"{err:+.3f} {_ci(ci)} ({100 * err / obs.mean():+.1f}%), {within} the tolerance ±{tol:.3f} "
        f"(max of {HELD_OUT_SDS:g} seed-sds, {100 * HELD_OUT_FRACTION:g}%); the sizes fitted on span "
        f"{g.mean[:-1, -1].min():.3f} to {g.mean[:-1, -1].max():.3f} nats/token (a flat curve is easy to "
        "predict: read this beside the exponents)",
    )


def finding_exponents(g: _Grid, f: dict) -> Finding:
    p, ci = f["point"], f["ci"]
    parts = {
        "kaplan": _two_sided(ci["ln_alpha"], KAPLAN_ALPHA_N),
        "alpha": _two_sided(ci["alpha"], CHINCHILLA["alpha"]),
        "beta": _two_sided(ci["beta"], CHINCHILLA["beta"]),
    }
    return Finding(
        "in this tiny regime the fitted exponents differ from Kaplan's alpha_N 0.076 and Chinchilla's "
        "alpha 0.35, beta 0.37",
        headline(list(parts.values())),
        f"L(N) at {g.d[-1]:.0f} tokens: alpha_N {p['ln_alpha']:.3f} {_ci(ci['ln_alpha'])}, "
        f"{p['ln_alpha'] / KAPLAN_ALPHA_N:.1f}x Kaplan's {KAPLAN_ALPHA_N} ({parts['kaplan']}); "
        f"L(N, D): alpha {p['alpha']:.3f} {_ci(ci['alpha'])} vs 0.35 ({parts['alpha']}), beta {p['beta']:.3f} "
        f"{_ci(ci['beta'])} vs 0.37 ({parts['beta']}); E {p['E']:.3g} {_e_interval(g, p['E'], ci['E'], _ci)}, "
        f"A {p['A']:.3g}, "
        f"B {p['B']:.3g} nats/token of a BPE-{g.sizes[g.names[0]]['vocab_size']} vocabulary (Chinchilla's E 1.82, A 482, B 2085 are per GPT-2 token of web "
        "text: not comparable)",
    )


def finding_tokens_per_param(g: _Grid, f: dict) -> Finding:
    """Decided only when L(N, D) is determined (alpha's and beta's CIs inside (0, ALPHA_MAX], as for the
    too-small probe): D_opt/N_opt goes as a power 1/(alpha + beta) of the fitted terms, so an exponent near 0
    sends it anywhere, and a CI that excludes 20 then says nothing about where the optimum is. Also decided
    only when the estimate lies within EXTRAPOLATION times the range of tokens per parameter the grid trained
    at: an optimum far outside it is the fitted law extrapolated where no run measured it."""
    p, ci = f["point"]["tpp"], f["ci"]["tpp"]
    lo, hi = g.d[0] / g.n[-1], g.d[-1] / g.n[0]
    why = ""
    if not all(0 < f["ci"][k][0] and f["ci"][k][1] <= ALPHA_MAX for k in ("alpha", "beta")):
        why = (
            f"; not decided: L(N, D) is not determined (alpha {_ci(f['ci']['alpha'])}, beta "
            f"{_ci(f['ci']['beta'])}: each CI must lie inside (0, {ALPHA_MAX:g}])"
        )
    elif not lo / EXTRAPOLATION <= p <= hi * EXTRAPOLATION:
        why = (
            f"; not decided: the estimate lies outside {EXTRAPOLATION:g}x that range "
            f"({lo / EXTRAPOLATION:.3g} to {hi * EXTRAPOLATION:.3g}), where L(N, D) is extrapolated, not measured"
        )
    return Finding(
        f"the compute-optimal tokens per parameter differs from Chinchilla's ~{CHINCHILLA_TOKENS_PER_PARAM:g}",
        "inconclusive" if why else _two_sided(ci, CHINCHILLA_TOKENS_PER_PARAM),
        f"D_opt/N_opt {p:.3g} [95% CI {ci[0]:.3g}, {ci[1]:.3g}] at C = 6 N D = {f['c_max']:.3g} FLOPs (the grid's "
        f"largest run), from L(N, D); the fit saw {lo:.3g} to {hi:.3g} tokens per parameter{why}",
    )


CLAIM_TOO_SMALL = (
    "the smallest size falls off the law fitted on the sizes above it (a size too small for the law)"
)


def finding_too_small(g: _Grid, f: dict) -> Finding:
    """The test is fixed by the grid before any result: the smallest size against the law fitted on the
    sizes above it, two-sided (off the law either way). The other sizes below the three largest are each
    read against the law above them, and the largest whose residual's CI excludes zero is reported as the
    threshold: a description, not a verdict (it is picked by those same residuals, and picking the largest
    of several by whether its CI excludes zero, then testing it, could only say yes).

    A size is judged only against a law that is determined: the bootstrap CI of the law-above's alpha lies
    inside (0, ALPHA_MAX]. A flat law (alpha's CI reaching 0) or a runaway one (alpha's CI beyond 1, far
    steeper than any published exponent, 0.07-0.4) extrapolated downward predicts anything, and a residual
    against it says nothing."""
    ci, probes = f["ci"], f["probes"]
    if not probes:
        return Finding(
            CLAIM_TOO_SMALL, "inconclusive", "no size has 3 larger ones to fit on (needs >= 4 sizes)"
        )
    judged = [i for i in probes if 0 < ci[f"above_alpha{i}"][0] and ci[f"above_alpha{i}"][1] <= ALPHA_MAX]
    decided = {i: _two_sided(ci[f"res{i}"], 0.0) for i in judged}
    off = [i for i in judged if decided[i] == "supported"]

    def size(i):
        return f"{g.names[i]} (N={g.n[i]:.3g})"

    parts = [
        f"{size(i)} {_num(f['point'][f'res{i}'], sign='+')} {_ci(ci[f'res{i}'])}"
        + (
            f" ({'off the law' if i in off else 'CI includes zero'})"
            if i in judged
            else f", not judged: the law above has alpha {_ci(ci[f'above_alpha{i}'])}"
        )
        for i in probes
    ]
    if 0 not in judged:
        where = (
            f"the smallest size, {size(0)}, is not judged: the law fitted on the sizes above it is not "
            f"determined (its alpha's CI is not inside (0, {ALPHA_MAX:g}])"
        )
    else:
        where = (
            f"the smallest size, {size(0)}: the residual's CI {'excludes' if 0 in off else 'includes'} zero"
        )
    threshold = (
        f"; the largest judged size whose residual's CI excludes zero (the threshold, read on these seeds, "
        f"not a verdict): {size(max(off, key=lambda i: g.n[i]))}"
        if off
        else ""
    )
    return Finding(
        CLAIM_TOO_SMALL,
        decided.get(0, "inconclusive"),
        f"{where}{threshold}; observed minus predicted (nats/token, law on the larger sizes, largest budget), "
        "each size below the largest three: " + "; ".join(parts),
    )


def _tables(cfg, g: _Grid, f: dict, outs: Outputs) -> None:
    t = Table(
        "Per size: parameters, FLOPs, memory, throughput, loss at each budget",
        [
            "size",
            "non-embedding N",
            "embedding",
            "unembedding FLOPs share",
            "train FLOPs/token (exact)",
            "6N",
            f"train FLOPs @ {max(cfg.budgets):,} tokens (exact)",
            "6ND",
            "peak memory (MiB)",
            "tokens/s",
            "compile + train (s)",
            *[f"loss @ {b:,} tokens" for b in cfg.budgets],
        ],
        note=f"{cfg.seeds} seeds (mean ± sd, nats per BPE-{g.sizes[g.names[0]]['vocab_size']} token); FLOPs "
        "exact = 6 x matmul parameters (unembedding included) + attention (lab.model.flops); 6N with N "
        "non-embedding; training FLOPs of one seed's run to the largest budget D: exact per token x D, and 6ND "
        "(x seeds for all of a size's runs). Peak memory: XLA's memory analysis "
        "of the compiled train call (arguments + outputs + temporaries - donated) for all seeds together.",
    )
    for i, name in enumerate(g.names):
        s = g.sizes[name]
        peak = "n/a" if s["peak_bytes"] is None else f"{s['peak_bytes'] / 2**20:.1f}"
        t.add(
            name,
            f"{g.n[i]:,.0f}",
            f"{s['params']['embedding']:,}",
            f"{s['unembedding_flops_share']:.1%}",
            f"{s['flops_per_token_exact']:.3g}",
            f"{s['flops_per_token_6N']:.3g}",
            f"{s['flops_per_token_exact'] * max(cfg.budgets):.3g}",
            f"{s['flops_per_token_6N'] * max(cfg.budgets):.3g}",
            peak,
            f"{s['tokens_per_second']:,.0f}",
            f"{s['compile_seconds']:.1f} + {s['train_seconds']:.1f}",
            *[summarize(g.loss[i][:, k]).fmt() for k in range(len(cfg.budgets))],
        )
    p, ci = f["point"], f["ci"]
    fits = Table(
        "Fitted laws (Huber on log loss, summed; bootstrap over seeds)",
        ["law", "parameter", "fit", "95% CI", "reference"],
        note=f"{f['failed']}/{cfg.bootstrap} bootstrap refits failed (left out). Why this tiny regime differs "
        f"from Kaplan et al. and Chinchilla (the module docstring says more): the runs saw {g.d[0] / g.n[-1]:.3g} "
        f"to {g.d[-1] / g.n[0]:.3g} tokens per parameter (Chinchilla's optimum: ~20), and L(N) at a fixed "
        "budget is not Kaplan's alpha_N, which is measured at convergence; the unembedding, which N leaves "
        f"out, is up to {max(g.sizes[n]['unembedding_flops_share'] for n in g.names):.0%} "
        f"of a size's FLOPs; losses are nats per BPE-{g.sizes[g.names[0]]['vocab_size']} token of Python docs, so "
        "E, A and B are on another scale and only the exponents compare; one learning-rate rule by width, no "
        "per-size tuning, no cooldown; and every run is early training.",
    )
    span = lambda c: f"{c[0]:.4g} … {c[1]:.4g}"
    interval = lambda key, e: _e_interval(g, p[key], ci[key], span) if e else span(ci[key])
    for key, label, ref in (("ln_E", "E", ""), ("ln_A", "A", ""), ("ln_alpha", "alpha_N", "Kaplan 0.076")):
        fits.add("L(N)", label, f"{p[key]:.4g}", interval(key, label == "E"), ref)
    for key in ("E", "A", "alpha", "B", "beta"):
        fits.add(
            "L(N, D)", key, f"{p[key]:.4g}", interval(key, key == "E"), f"Chinchilla {CHINCHILLA[key]:g}"
        )
    fits.add(
        "L(N, D)",
        "tokens/param at C_max",
        f"{p['tpp']:.3g}",
        f"{ci['tpp'][0]:.3g} … {ci['tpp'][1]:.3g}",
        "~20",
    )
    outs.table("sizes.md", t)
    outs.table("fits.md", fits)


def _plots(cfg, g: _Grid, f: dict, outs: Outputs) -> None:
    fig, axes = plots.figure(2, 1, width=6.5)
    ax = axes[0, 0]
    grid_n = np.geomspace(g.n[0] / 1.5, g.n[-1] * 1.5, 100)
    for k, b in enumerate(cfg.budgets):
        ms = [x[:, k] for x in g.loss]
        line = ax.errorbar(
            g.n,
            [m.mean() for m in ms],
            yerr=[m.std(ddof=1) for m in ms],
            fmt="o",
            capsize=3,
            label=f"D = {b:,} tokens (mean ± sd)",
        )
        ax.plot(grid_n, f["lnd"].predict(grid_n, np.full_like(grid_n, b)), color=line[0].get_color(), lw=1)
    held = f["held"]
    ax.plot(grid_n, held.predict(grid_n), "k--", lw=1, label=f"L(N) without {g.names[-1]} (largest D)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plots.finish(
        ax,
        "e13: validation loss vs non-embedding parameters; lines: L(N, D) fit",
        "non-embedding parameters N",
        "val loss (nats/token)",
        outside=False,
    )
    ax = axes[0, 1]
    pred = f["lnd"].predict(g.n[:, None], g.d[None, :])
    for k, b in enumerate(cfg.budgets):
        ax.plot(g.n, g.mean[:, k] - pred[:, k], "o-", label=f"D = {b:,} tokens")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xscale("log")
    plots.finish(
        ax,
        "e13: residuals of the L(N, D) fit (seed means)",
        "non-embedding parameters N",
        "observed - fitted loss (nats/token)",
    )
    plots.save(fig, outs.plot("loss_vs_params.png"))
    fig, axes = plots.figure()
    ax = axes[0, 0]
    i = f["probes"]
    if i:
        r = np.array([f["point"][f"res{j}"] for j in i])
        lo = np.array([f["ci"][f"res{j}"][0] for j in i])
        hi = np.array([f["ci"][f"res{j}"][1] for j in i])
        ax.errorbar(
            g.n[i], r, yerr=[r - lo, hi - r], fmt="o", capsize=3, label="observed - predicted (95% CI)"
        )
    ax.axhline(0.0, color="k", lw=0.5, label="no deviation")
    ax.set_xscale("log")
    plots.finish(
        ax,
        "e13: each small size against L(N) fitted on the sizes above it",
        "non-embedding parameters N",
        "residual at the largest budget (nats/token)",
    )
    plots.save(fig, outs.plot("residuals.png"))


def analyze(cfg: E13Config, out: Path):
    g = _grid(cfg, out)
    f = _fits(cfg, g)
    outs = Outputs(out)
    _tables(cfg, g, f, outs)
    _plots(cfg, g, f, outs)
    findings = [
        finding_held_out(g, f),
        finding_exponents(g, f),
        finding_tokens_per_param(g, f),
        finding_too_small(g, f),
    ]
    summary = evidence_summary(findings)
    return outs.findings(headline(findings[:1]), summary, [findings[0], *map(beside, findings[1:])])


EXPERIMENT = Experiment(
    name="e13_scaling_laws",
    title="Scaling laws are empirical, not philosophical",
    claim="A scaling law fitted on small models predicts a held-out larger one within 2 seed-sds or 2%.",
    config_class=E13Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    set_per_run={k: "sizes (and head_dim)" for k in ("model.n_layers", "model.d_model", "model.n_heads")},
    check=check_config,
)
