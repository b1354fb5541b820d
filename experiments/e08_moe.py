"""Project 8: "Capacity scales better than compute, if routing works" — mixture of experts (MoE).

Claim tested: replacing each block's MLP by E expert MLPs behind a learned top-k router (Shazeer et al. 2017;
Lepikhin et al. 2020, GShard; Fedus et al. 2021, Switch Transformer) multiplies the parameters while each
token still pays for k experts, and buys a lower loss at equal compute, *if* routing works: with Switch's
load-balancing loss (alpha = 1e-2) and ST-MoE's router z-loss (Zoph et al. 2022, 1e-3) the experts share the
tokens and few are dropped at capacity factor 1.25; without the balance loss routing collapses onto few
experts; with too little capacity tokens are dropped (they ride the residual) and the loss suffers.
Measured, all at the same tokens and steps, on byte-level text:
  1. routing: each expert's share of the routing choices per layer over training (validation batches at
     every evaluation), routing entropy, the dropped fraction, and which tokens each expert takes; where
     the drops come from: the capacity group (the batch, B x T tokens, as the balance loss), the drop binomial
     noise alone would cause in a group that size at perfect balance, and the drop the shares' overload
     implies, at the first and last evaluation and averaged over training;
  2. the breaks: no balance loss (alpha = 0) and a capacity factor too small;
  3. parameters and FLOPs: total vs active parameters, model FLOPs per token of the dense model with the
     same active FLOPs (the baseline) and of the dense model with the same total parameters (d_ff x E);
  4. loss at equal compute: the top-1 MoE models (E = 2, 4, 8) against the baseline, seeds and 95% CIs;
  5. measured ms per training step on this machine, one member, repeated: where the FLOPs saved turn into
     time (against the equally large dense model) and where they do not (router, scatter/gather, empty
     capacity slots; dropless grouped matmuls, which XLA's CPU backend runs as masked dense products).

Run:      lab run e08 [--preset smoke|cpu|gpu] [--set experts=2,4] [--seeds 3] [--data NAME]
Redraw:   lab analyze e08
Writes:   results/e08_moe/
  runs/<variant>/       one sweep over seeds per variant (metrics.jsonl holds the routing statistics of
                        every evaluation: moe_share_L<l>_E<e>, moe_dropped_L<l>, moe_entropy_L<l>, ...)
  runs/routing.npz      from the main MoE's final checkpoint, on `measure_batches` validation batches:
                        first-choice counts (member, layer, expert, token id)
  runs/cost.json        per variant: total and active parameters, model FLOPs per token, seconds per
                        training step (one member, timing_repeats calls of timing_steps steps, the variants in turn)
  plots/*.png, tables/*.md, findings.json

Variants: "dense" (the baseline: equal active FLOPs to a top-1 MoE, up to the router), "dense-wide" (d_ff x
E_main: the total parameters of the E_main MoE), "moe-E<e>" (top-1, capacity factor, alpha, every block),
and for E_main: "-top2", "-nobalance" (alpha = 0), "-cf<small>" (a capacity factor too small) and
"-dropless". Every MoE variant keeps the z-loss. Which are trained is `extra_variants` (the cpu preset trains
the two breaks; dense-wide, top-2 and dropless it only times: `timed_variants`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import (
    Finding,
    Outputs,
    Table,
    beside,
    compare,
    compare_to,
    conditional_headline,
    headline,
    summarize,
)
from lab.config import check, check_at_least, check_causal, check_choices, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.experiment import Experiment
from lab.model import PRESETS, ModelConfig, flops
from lab.model.transformer import apply_with_aux, init, param_count
from lab.report import recorded_provenance
from lab.runs import load_runs, read_measurement, read_rows, write_measurement
from lab.train import SweepSpec, TrainConfig, seed_members, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import sweep_params
from lab.train.state import init_state
from lab.train.step import train_steps
from lab.train.sweep import fresh_seeds
from lab.viz import plots

CLAIM = "Capacity scales better than compute, if routing works: a balanced MoE beats dense at equal compute."
# The bars for working routing at E = 4, top-1, alpha = 1e-2, capacity factor 1.25: no expert above
# 1.5 / E of the routing choices, at most 2% of them dropped. A collapsed router: one expert >= 0.5.
# The variants besides the dense baseline and the top-1 MoE of each E (see `all_models`), each optional: trained
# (`extra_variants`), and/or only timed (`timed_variants`; timing needs no training).
EXTRA_VARIANTS = ("dense-wide", "top-k", "nobalance", "small-capacity", "dropless")
TIMEABLE = ("dense-wide", "top-k", "dropless")
BALANCED_SHARE = 1.5
DROP_BAR = 0.02
COLLAPSED_SHARE = 0.5


@dataclass(frozen=True)
class E08Config:
    model: ModelConfig = PRESETS["cpu"]  # the dense baseline; its MLP (d_ff) is each expert's size
    # 400 steps: the router settles late. At 200 steps moe-E4 still dropped 8.41 ± 5.38% at capacity factor
    # 1.25 from lasting imbalance (the routing finding's evidence says where drops come from); the same
    # config at 400 steps dropped 0.17 ± 0.15% (max over layers, 3 seeds; 500 steps 0.28 ± 0.32%, 800 steps
    # 0.37 ± 0.40%; 2026-12-04). Smaller batches for more steps at the same tokens did not settle it (8 x 64
    # for 400 steps: 2.66%; 4 x 64 for 800: 4.18%: a smaller group is noisier), nor did a higher learning
    # rate (3e-3 at 200 steps: 22.7%). 6 trained variants x 3 seeds at 400 steps keep the cpu preset inside
    # its budget (5 min on 2 cores; 200 steps took 181 s, of it 68 s training); top-2 is timed, not trained.
    train: TrainConfig = TrainConfig(steps=400, warmup_steps=20, eval_every=50, ckpt_every=200)
    data: DataConfig = DataConfig()
    seeds: int = 3
    # The step count was chosen from the drop rates of seeds 0-2 (above), so the published verdicts come from
    # fresh seeds 3-5 (DESIGN convention 15: a choice made on some seeds is tested on others).
    first_seed: int = fresh_seeds(3)
    experts: tuple[int, ...] = (2, 4, 8)  # E of the top-1 MoE variants
    main_experts: int = 4  # the E whose routing is broken on purpose and compared
    top_k: int = 2  # the top-k variant of E_main
    capacity_factor: float = 1.25
    small_capacity: float = 0.5  # "a capacity factor too small"
    balance_coef: float = 1e-2  # Switch's alpha
    z_coef: float = 1e-3  # ST-MoE's router z-loss coefficient
    moe_every: int = 1  # every n-th block is MoE (1 = all)
    # trained besides dense and moe-E<e>; a finding that needs one left out is left out. The cpu preset leaves
    # out training dense-wide and dropless (the two slowest programs) and top-2; all three are timed
    extra_variants: tuple[str, ...] = ("nobalance", "small-capacity")
    timed_variants: tuple[str, ...] = TIMEABLE  # timed besides dense and moe-E<main> (trained or not)
    measure_batches: int = 4  # validation batches (train.batch_size windows each) measured per checkpoint
    timing_steps: int = 5  # training steps per timed call
    timing_repeats: int = 6  # timed calls per variant (a speed comparison's CI comes from these)

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "experts", "main_experts", "measure_batches", "timing_steps")
        check_at_least(self, 0, "first_seed")
        check_at_least(self, 2, "timing_repeats")  # a CI needs two values
        check_distinct(self, "experts")
        check_choices(self, "extra_variants", EXTRA_VARIANTS)
        check_choices(self, "timed_variants", TIMEABLE)
        check(
            len(set(self.timed_variants)) == len(self.timed_variants), "timed_variants has a repeated value"
        )
        check(
            len(set(self.extra_variants)) == len(self.extra_variants), "extra_variants has a repeated value"
        )
        check(self.main_experts in self.experts, f"experts must include main_experts ({self.main_experts})")
        e = self.main_experts
        check(1 <= self.top_k <= e, f"top_k must be in [1, main_experts={e}], got {self.top_k}")
        for name in ("capacity_factor", "small_capacity"):
            check(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        check(
            self.small_capacity < self.capacity_factor,
            f"small_capacity ({self.small_capacity}) must be below capacity_factor ({self.capacity_factor})",
        )
        for name in ("balance_coef", "z_coef"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        check(
            1 <= self.moe_every <= self.model.n_layers,
            f"moe_every must be in [1, model.n_layers={self.model.n_layers}] (else no block is MoE), "
            f"got {self.moe_every}",
        )
        check_causal(self.model, "e08 trains causal language models")
        check(
            self.model.mlp == "dense",
            "model.mlp and the model.moe_* settings are set per variant here; choose them with experiments, "
            "main_experts, top_k, capacity_factor, small_capacity, balance_coef, z_coef and moe_every",
        )
        all_models(self)  # every variant must make a valid model (k <= E, ...)


# --- variants -----------------------------------------------------------------------------------------------
def _main(cfg: E08Config) -> str:
    return f"moe-E{cfg.main_experts}"


def all_models(cfg: E08Config, base: ModelConfig | None = None) -> dict[str, ModelConfig]:
    """Every variant's name -> model, trained or not. `base` is the dense model with the corpus's vocabulary
    (defaults to cfg.model)."""
    base = cfg.model if base is None else base
    moe = base.replace(
        mlp="moe",
        moe_capacity_factor=cfg.capacity_factor,
        moe_balance_coef=cfg.balance_coef,
        moe_z_coef=cfg.z_coef,
        moe_every=cfg.moe_every,
        moe_top_k=1,
    )
    e, main = cfg.main_experts, _main(cfg)
    out = {"dense": base, "dense-wide": base.replace(d_ff=e * (base.d_ff or 4 * base.d_model))}
    out |= {f"moe-E{n}": moe.replace(moe_experts=n) for n in cfg.experts}
    main_model = out[main]
    out[_name(cfg, "top-k")] = main_model.replace(moe_top_k=cfg.top_k)
    out[_name(cfg, "nobalance")] = main_model.replace(moe_balance_coef=0.0)
    out[_name(cfg, "small-capacity")] = main_model.replace(moe_capacity_factor=cfg.small_capacity)
    out[_name(cfg, "dropless")] = main_model.replace(moe_dispatch="dropless")
    return out


def variants(cfg: E08Config, base: ModelConfig | None = None) -> dict[str, ModelConfig]:
    """The trained variants: dense, moe-E<e> for each E, and `extra_variants`."""
    keep = {"dense", *(f"moe-E{e}" for e in cfg.experts), *(_name(cfg, k) for k in cfg.extra_variants)}
    return {n: m for n, m in all_models(cfg, base).items() if n in keep}


def _name(cfg: E08Config, kind: str) -> str:
    """The variant name of one of EXTRA_VARIANTS."""
    suffix = {"top-k": f"-top{cfg.top_k}", "small-capacity": f"-cf{cfg.small_capacity:g}"}
    return "dense-wide" if kind == "dense-wide" else _main(cfg) + suffix.get(kind, f"-{kind}")


# fmt: off
PRESET_TABLE = {
    # smoke: four programs (the other variants share their code paths with these and are tested in tests/)
    "smoke": E08Config(model=PRESETS["smoke"], train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20), seeds=2,
                       experts=(2,), main_experts=2, extra_variants=("nobalance",), timed_variants=("dense-wide",),
                       measure_batches=1, timing_steps=2, timing_repeats=2),
    "cpu": E08Config(),
    "gpu": E08Config(model=PRESETS["gpu"], train=TRAIN_PRESETS["gpu"], data=DataConfig(name="pystdlib"),
                     experts=(2, 4, 8, 16), moe_every=2, extra_variants=EXTRA_VARIANTS, measure_batches=8,
                     timing_steps=10),
}
# fmt: on


def _moe_names(cfg: E08Config) -> list[str]:
    return [n for n in variants(cfg) if n.startswith("moe")]


def check_config(cfg: E08Config) -> None:
    text_lm(cfg.data, cfg.model).check()


# --- run: every JAX computation, written to files ------------------------------------------------------------
def run(cfg: E08Config, out: Path, opts) -> None:
    lm = text_lm(cfg.data, cfg.model)
    members = seed_members(cfg.seeds, cfg.train, first=cfg.first_seed)
    models = variants(cfg, lm.model)
    b, t = cfg.train.batch_size, lm.model.max_len
    n = cfg.measure_batches * b * t
    val = np.asarray(lm.text.val[:n], np.int32)
    check(val.size == n, f"the validation text has {lm.text.val.size} tokens; measuring needs {n}")
    windows = jnp.asarray(val.reshape(cfg.measure_batches, b, t))
    routing, cost = {}, {}
    for name, model in models.items():
        spec = SweepSpec.text(lm, cfg.train, members).replace(model=model)
        train_sweep(out / "runs" / name, spec, **opts.train_kw(), desc=f"e08 {name}")
        if name == _main(cfg):  # the routing statistics of every variant are in its metrics (each evaluation)
            params = sweep_params(out / "runs" / name, spec)
            routing[f"{name}:counts"] = _token_counts(model, params, windows)
    models_all = all_models(cfg, lm.model)
    for name, model in models_all.items():  # parameters and FLOPs of all, times of some
        cost[name] = _cost(model)
    for name, secs in _step_seconds(cfg, {n: models_all[n] for n in _timed(cfg)}, lm).items():
        cost[name]["seconds_per_step"] = secs
    tok = lm.text.tokenizer
    routing["token_text"] = np.array([_token_text(tok, i) for i in range(lm.model.vocab_size)])
    write_measurement(out / "runs" / "routing.npz", routing, cfg)
    write_measurement(out / "runs" / "cost.json", cost, cfg)


def _token_text(tok, i: int) -> str:
    try:
        s = tok.decode([i])
    except Exception:  # an id that is not a whole character alone (a UTF-8 continuation byte)
        return f"<{i}>"
    return s if s.isprintable() and s.strip() else repr(s)


def _token_counts(model: ModelConfig, params, windows) -> np.ndarray:
    """(M, L, E, V) per member, from one checkpoint on `windows` (batches, B, T), each batch routed as in
    training: how often each token id went to each expert as its first choice, per MoE block."""

    def one(p, tokens_BT):
        _, moe = apply_with_aux(model, p, tokens_BT)
        onehot = jax.nn.one_hot(moe["top1"], model.moe_experts, dtype=jnp.int32)  # (L, B, T, E)
        tok = jax.nn.one_hot(tokens_BT, model.vocab_size, dtype=jnp.int32)  # (B, T, V)
        return jnp.einsum("lbte,btv->lev", onehot, tok)

    counts = jax.jit(jax.vmap(lambda p: jax.lax.map(lambda w: one(p, w), windows)))(params)
    return np.asarray(counts).sum(1)  # over batches


def _timed(cfg: E08Config) -> list[str]:
    """The variants whose step is timed (each costs a compilation): the baseline, the equally large dense
    model, the main MoE and its top-k and dropless forms."""
    return ["dense", _main(cfg)] + [_name(cfg, k) for k in cfg.timed_variants]


def _cost(model: ModelConfig) -> dict:
    """Parameters and model FLOPs per token (seconds per step are added for the timed variants)."""
    total = param_count(jax.eval_shape(lambda: init(model, jax.random.key(0))))
    return {
        "total_params": total,
        "matmul_params": flops.matmul_params(model),
        "train_flops_per_token": flops.train_flops_per_token(model),
        "seconds_per_step": None,
    }


def _step_seconds(cfg: E08Config, models: dict[str, ModelConfig], lm) -> dict[str, list[float]]:
    """Measured seconds per training step of one member of each model, `timing_repeats` calls of
    `timing_steps` steps each. Every program is compiled and run once first; then the repeats go round the
    variants in turn (A B C, A B C, ...), so a slow spell of a shared machine falls on all of them alike
    rather than on whichever was being timed."""
    data = {k: jnp.asarray(v) for k, v in lm.text.arrays.items()}
    steps, states = {}, {}
    for name, model in models.items():
        states[name] = init_state(model, cfg.train, 0, cfg.train.lr, cfg.train.init_scale)
        steps[name] = jax.jit(
            partial(train_steps, n_steps=cfg.timing_steps, cfg=model, tcfg=cfg.train, task=lm.task)
        )
        states[name], m = steps[name](states[name], data)  # compiles
        jax.block_until_ready(m)
    secs = {name: [] for name in models}
    for _ in range(cfg.timing_repeats):
        for name in models:
            t0 = time.perf_counter()
            states[name], m = steps[name](states[name], data)
            jax.block_until_ready(m)
            secs[name].append((time.perf_counter() - t0) / cfg.timing_steps)
    return secs


# --- analysis: NumPy only, from the files -------------------------------------------------------------------
def _ms(x, digits: int = 3) -> str:
    return summarize(x).fmt(digits)


@dataclass
class _Data:
    cfg: E08Config
    runs: dict  # variant -> RunData
    rows: dict  # variant -> metrics rows with routing statistics (eval rows only)
    routing: dict
    cost: dict

    def model(self, name: str) -> ModelConfig:
        return all_models(self.cfg)[name]

    def share(self, name: str) -> np.ndarray:
        """(M, L, E) final routing shares."""
        return self.routing[f"{name}:share"]

    def max_share(self, name: str) -> np.ndarray:
        """(M,) the largest expert share over layers and experts of each member."""
        return self.share(name).max(axis=(1, 2))

    def dropped(self, name: str) -> np.ndarray:
        """(M,) the largest dropped fraction over layers."""
        return self.routing[f"{name}:dropped"].max(axis=1)

    def loss(self, name: str) -> np.ndarray:
        return self.runs[name].final_val_loss

    def over_training(self, name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, (M, steps)) a routing statistic of the metrics rows (every evaluation)."""
        rows = self.rows[name]
        steps = np.array(sorted({r["step"] for r in rows}))
        m = 1 + max(r["member"] for r in rows)
        out = np.full((m, steps.size), np.nan)
        for r in rows:
            out[r["member"], np.searchsorted(steps, r["step"])] = r[key]
        return steps, out


def _load(cfg: E08Config, out: Path) -> _Data:
    names = list(variants(cfg))
    runs = load_runs({n: out / "runs" / n for n in names})
    rows = {  # the evaluation rows, which hold the routing statistics
        n: [r for r in read_rows(out / "runs" / n / "metrics.jsonl") if "val_loss" in r]
        for n in names
        if n.startswith("moe")
    }
    routing = dict(read_measurement(out / "runs" / "routing.npz", cfg))
    for n, rs in rows.items():  # the routing at the last evaluation: (M, L, E) shares, (M, L) the rest
        m, last = all_models(cfg)[n], max(r["step"] for r in rs)
        final = sorted((r for r in rs if r["step"] == last), key=lambda r: r["member"])
        e, layers = range(m.moe_experts), m.moe_layers
        routing[f"{n}:share"] = np.array(
            [[[r[f"moe_share_L{i}_E{j}"] for j in e] for i in layers] for r in final]
        )
        for key in ("dropped", "entropy"):
            routing[f"{n}:{key}"] = np.array([[r[f"moe_{key}_L{i}"] for i in layers] for r in final])
    cost = read_measurement(out / "runs" / "cost.json", cfg)
    return _Data(cfg, runs, rows, routing, cost)


def _capacity_slots(n_tokens: int, n_experts: int, k: int, factor: float) -> int:
    """Slots per expert as lab.ops.moe.capacity counts them (ceil(factor * k * N / E), 1..N), in NumPy for
    analyze, which imports no JAX."""
    want = factor * k * n_tokens / n_experts
    return int(min(n_tokens, max(1, math.ceil(want - 1e-9 * max(1.0, want)))))


def noise_drop(n_tokens: int, n_experts: int, cap: int) -> float:
    """The expected dropped fraction of top-1 routing that is perfectly balanced in expectation (each token
    to each expert with probability 1/E, independently) through `cap` slots per expert: E * E[max(X - C, 0)]
    / N with X ~ Binomial(N, 1/E). What a group of N tokens drops from sampling noise alone."""
    p = 1.0 / n_experts
    x = np.arange(cap + 1, n_tokens + 1)
    if x.size == 0:
        return 0.0
    lg = np.array([math.lgamma(n_tokens + 1) - math.lgamma(i + 1) - math.lgamma(n_tokens - i + 1) for i in x])
    pmf = np.exp(lg + x * math.log(p) + (n_tokens - x) * math.log1p(-p))
    return float(n_experts * np.sum((x - cap) * pmf) / n_tokens)


def _drop_diagnosis(d: _Data, name: str) -> str:
    """Computed text: where the dropped choices of `name` come from. The capacity group (the batch the layer
    routes: B x T tokens, the same batch the balance loss is computed over), the drop binomial noise alone
    would cause at perfect balance in a group that size, the drop the final mean shares imply (each expert's
    share past C / N), and the dropped fraction at initialization, averaged over training and at the end."""
    cfg, m = d.cfg, d.model(name)
    n = cfg.train.batch_size * m.max_len
    cap = _capacity_slots(n, m.moe_experts, m.moe_top_k, m.moe_capacity_factor)
    implied = np.clip(d.share(name) - cap / n, 0.0, None).sum(-1).max(-1)  # (M,) max over layers
    layers = m.moe_layers
    over = np.stack([d.over_training(name, f"moe_dropped_L{i}")[1] for i in layers])  # (L, M, evals)
    steps = d.over_training(name, f"moe_dropped_L{layers[0]}")[0]
    worst = over.max(0)  # (M, evals): the largest over layers, as the finding counts it
    pct = lambda x, k=2: _ms(100 * np.asarray(x), k)
    noise, seen = noise_drop(n, m.moe_experts, cap), float(np.mean(d.dropped(name)))
    if implied.mean() > 0.5 * seen:  # "most": more than half
        why = "most of the drops are the router's lasting imbalance, not the noise of the group's size"
    elif noise > 0.5 * seen:
        why = "most of the drops are the sampling noise of a group this small"
    else:
        why = "neither accounts for most of the drops (the imbalance moves from batch to batch)"
    ev = f"Where the drops come from: each layer routes its batch of N = {cfg.train.batch_size} x "
    ev += f"{m.max_len} = {n} tokens through C = {cap} slots per expert (the balance loss sees the same "
    ev += f"batch); at perfectly uniform routing, binomial noise in a group of {n} would drop "
    ev += f"{100 * noise:.2g}% in expectation, while the final mean shares' overload (each expert's share "
    ev += f"past C/N, largest over layers) implies {pct(implied)}%: {why}"
    ev += f". Dropped (largest over layers) at step {steps[0]}: {pct(worst[:, 0])}%, averaged over the "
    ev += f"{steps.size} evaluations: {pct(np.nanmean(worst, 1))}%, at step {steps[-1]}: "
    ev += f"{pct(worst[:, -1])}%; "
    ev += f"averaged over layers at the end: {pct(over[:, :, -1].mean(0))}%"
    return ev


def _balanced_finding(d: _Data) -> Finding:
    cfg, name = d.cfg, _main(d.cfg)
    e = cfg.main_experts
    bar = BALANCED_SHARE / e
    share, drop = compare_to(d.max_share(name), bar), compare_to(d.dropped(name), DROP_BAR)
    parts = [share.verdict("less"), drop.verdict("less")]
    ev = f"E={e}, top-1, alpha={cfg.balance_coef:g}, capacity factor {cfg.capacity_factor:g}, after "
    ev += f"{cfg.train.steps} steps: largest expert share (over layers) {_ms(d.max_share(name))} vs "
    ev += f"1.5/E = {bar:.3f} ({share.fmt()}: {parts[0]}); dropped {_ms(100 * d.dropped(name), 2)}% vs "
    ev += f"{100 * DROP_BAR:g}% ({compare_to(100 * d.dropped(name), 100 * DROP_BAR).fmt(2)}: {parts[1]})"
    claim = (
        f"With the balance loss, E={e} top-1 routing is balanced by the end of training (step "
        f"{cfg.train.steps}): max share ≤ 1.5/E, ≤ 2% dropped"
    )
    return Finding(claim, headline(parts), ev + ". " + _drop_diagnosis(d, name))


def _collapse_finding(d: _Data) -> Finding:
    cfg, name = d.cfg, _main(d.cfg)
    off = _name(cfg, "nobalance")
    with_, without = d.max_share(name), d.max_share(off)
    c, bar = compare(with_, without), compare_to(without, COLLAPSED_SHARE)
    parts = [c.verdict("greater"), bar.verdict("greater")]
    k, m = int(np.sum(without >= COLLAPSED_SHARE)), without.size
    ev = f"largest expert share without the balance loss {_ms(without)} vs with it {_ms(with_)} ({c.fmt()}: "
    ev += f"{parts[0]}); against {COLLAPSED_SHARE:g} ({bar.fmt()}: {parts[1]}). One expert took ≥ "
    ev += f"{COLLAPSED_SHARE:g} of the routing choices in {k}/{m} seeds without it"
    ev += f". Routing entropy without: {_ms(d.routing[f'{off}:entropy'].mean(1))} nats, with: "
    ev += f"{_ms(d.routing[f'{name}:entropy'].mean(1))} (log E = {np.log(cfg.main_experts):.3f})"
    claim = "Without the balance loss the router collapses onto one expert (max share ≥ 0.5)"
    return Finding(claim, headline(parts), ev)


def _capacity_finding(d: _Data) -> Finding:
    cfg, name = d.cfg, _main(d.cfg)
    small = _name(cfg, "small-capacity")
    drop, loss = compare(d.dropped(name), d.dropped(small)), compare(d.loss(name), d.loss(small))
    parts = [drop.verdict("greater"), loss.verdict("greater")]
    ev = f"capacity factor {cfg.small_capacity:g} vs {cfg.capacity_factor:g}: dropped "
    ev += f"{_ms(100 * d.dropped(small), 1)}% vs {_ms(100 * d.dropped(name), 1)}% "
    ev += f"({compare(100 * d.dropped(name), 100 * d.dropped(small)).fmt(1)}: {parts[0]}); final val loss "
    ev += f"{_ms(d.loss(small))} vs {_ms(d.loss(name))} nats/token ({loss.fmt()}: {parts[1]}); the dense "
    ev += f"baseline {_ms(d.loss('dense'))}"
    claim = "A capacity factor too small drops tokens (they ride the residual) and costs loss"
    return Finding(claim, headline(parts), ev)


def _compute_finding(d: _Data) -> Finding:
    cfg, dense = d.cfg, d.loss("dense")
    parts, ev = [], []
    for n in cfg.experts:
        name = f"moe-E{n}"
        c = compare(dense, d.loss(name))
        parts.append(c.verdict("less"))
        ratio = d.cost[name]["train_flops_per_token"] / d.cost["dense"]["train_flops_per_token"]
        tp = d.cost[name]["total_params"] / d.cost["dense"]["total_params"]
        ev.append(
            f"E={n} ({tp:.2f}× the parameters, {ratio:.3f}× the FLOPs/token): {_ms(d.loss(name))} vs "
            f"{_ms(dense)} ({c.fmt()}: {parts[-1]})"
        )
    if "dense-wide" in d.runs:
        wide = compare(d.loss(_main(cfg)), d.loss("dense-wide"))
        ratio = d.cost["dense-wide"]["train_flops_per_token"] / d.cost["dense"]["train_flops_per_token"]
        ev.append(
            f"for scale, the dense model with E={cfg.main_experts}'s total parameters at {ratio:.2f}× the "
            f"FLOPs: {_ms(d.loss('dense-wide'))} ({wide.fmt(p=False)} against moe-E{cfg.main_experts})"
        )
    claim = "At equal compute (equal tokens and active FLOPs), top-1 MoE reaches a lower loss than dense"
    return Finding(claim, headline(parts), f"final val loss after {cfg.train.steps} steps: " + "; ".join(ev))


def _log_secs(d: _Data, name: str) -> np.ndarray:
    return np.log(np.asarray(d.cost[name]["seconds_per_step"], float))


def _x(c) -> str:
    s = f"{np.exp(c.diff):.2f}×"
    if np.all(np.isfinite(c.ci95)):
        s += " [95% CI {:.2f}×, {:.2f}×]".format(*np.exp(c.ci95))
    return s


def _ratio_word(c) -> str:
    """What the rule says about a log time ratio against 1×."""
    if c.verdict("greater") == "supported":
        return "slower"
    return "faster" if c.verdict("less") == "supported" else "not distinguishable"


def _speed_finding(d: _Data, platform: str) -> Finding:
    """On the log scale, MoE's step time against the dense model with its total parameters (faster: the FLOPs
    saved turned into time) and, as evidence, against the baseline with its active FLOPs (the overhead)."""
    cfg, main = d.cfg, _main(d.cfg)
    vs_wide = compare(_log_secs(d, "dense-wide"), _log_secs(d, main))  # log(moe) - log(wide): < 0 is faster
    vs_dense = compare(_log_secs(d, "dense"), _log_secs(d, main))
    parts = [vs_wide.verdict("less")]
    ms = lambda n: _ms(1e3 * np.asarray(d.cost[n]["seconds_per_step"]), 2)
    flop = lambda n: d.cost[n]["train_flops_per_token"] / d.cost["dense"]["train_flops_per_token"]
    ev = f"ms per training step (one member, mean ± sd over {cfg.timing_repeats} calls): {main} {ms(main)}, "
    ev += f"dense {ms('dense')}, dense-wide {ms('dense-wide')} ({flop('dense-wide'):.2f}× the model FLOPs). "
    ev += f"{main} / dense-wide: {_x(vs_wide)} ({_ratio_word(vs_wide)}); {main} / dense at equal active "
    ev += f"FLOPs ({flop(main):.3f}×): {_x(vs_dense)} ({_ratio_word(vs_dense)})"
    if vs_dense.verdict("greater") == "supported":
        ev += (
            ": what the model FLOPs leave out costs time here: the router, the scatter into and gather from "
        )
        ev += f"the capacity slots, and the {cfg.capacity_factor:g}× slots themselves"
    for kind, why in (
        ("top-k", f"top-{cfg.top_k} computes {cfg.top_k} experts per token"),
        # XLA's CPU backend runs lax.ragged_dot as a masked dense product over all experts (seen in its HLO);
        # on other platforms it is a grouped matmul, and the reason is left for the numbers to give
        (
            "dropless",
            "ragged_dot on CPU is a masked dense product over all experts" if platform == "cpu" else "",
        ),
    ):
        name = _name(cfg, kind)
        if name in _timed(cfg):
            c = compare(_log_secs(d, main), _log_secs(d, name))
            ev += f". {name} / {main}: {_x(c)} ({_ratio_word(c)}{'; ' + why if why else ''})"
    claim = f"The FLOPs MoE saves against an equally large dense model turn into a faster step on this machine ({platform})"
    return Finding(claim, headline(parts), ev)


def _utilization_plot(d: _Data, outs: Outputs) -> None:
    cfg = d.cfg
    rows = [n for n in _moe_names(cfg) if n in d.runs]  # every trained MoE variant, each with its own E
    layers = sorted({layer for n in rows for layer in d.model(n).moe_layers})
    fig, axes = plots.figure(ncols=len(layers), nrows=len(rows), width=5.0, height=3.2)
    for r, name in enumerate(rows):
        n_exp = d.model(name).moe_experts
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            if layer not in d.model(name).moe_layers:
                ax.set_axis_off()  # a dense block in this variant
                continue
            shares = [d.over_training(name, f"moe_share_L{layer}_E{e}") for e in range(n_exp)]
            steps, y = shares[0][0], np.stack([s for _, s in shares], axis=1)  # (M, E, evaluations)
            # expert ids are arbitrary per seed: rank each seed's experts by their final share
            order = np.argsort(-y[:, :, -1], axis=1, kind="stable")
            ranked = np.take_along_axis(y, order[:, :, None], axis=1)
            for e in range(n_exp):
                plots.band(ax, steps, ranked[:, e], f"busiest #{e + 1} at the end")
            ax.axhline(1 / n_exp, color="grey", linestyle=":", label="1/E (uniform)")
            ax.axhline(BALANCED_SHARE / n_exp, color="red", linestyle="--", linewidth=1, label="1.5/E")
            plots.finish(
                ax,
                f"e08: {name}, block {layer} (validation, mean ± sd)",
                "training step",
                "share of routing choices",
                legend=c == len(layers) - 1,  # one legend per row, beside it (E differs by row)
                outside=True,
            )
    # no figure title: with five rows tight_layout lets it overlap the top row; each panel's title, axis
    # labels and legend say what is drawn
    plots.save(fig, outs.plot("utilization.png"))


def _final_share_plot(d: _Data, outs: Outputs) -> None:
    """Each member's experts sorted by share (expert ids are arbitrary per seed): rank 1 = the busiest."""
    cfg = d.cfg
    names = [n for n in _moe_names(cfg) if d.model(n).moe_experts == cfg.main_experts]
    layers = d.model(_main(cfg)).moe_layers
    fig, axes = plots.figure(ncols=len(layers), width=6.0)
    for c, layer in enumerate(layers):
        ranked = {n: -np.sort(-d.share(n)[:, c, :], axis=1) for n in names}  # (M, E) descending
        series = {n: [ranked[n][:, e] for e in range(cfg.main_experts)] for n in names}
        plots.grouped_bars(axes[0, c], [f"#{e + 1}" for e in range(cfg.main_experts)], series)
        axes[0, c].axhline(1 / cfg.main_experts, color="grey", linestyle=":", label="1/E")
        plots.finish(
            axes[0, c],
            f"final expert shares, block {layer} (mean ± sd)",
            "expert, ranked by share within each seed",
            "share of routing choices",
        )
    plots.save(fig, outs.plot("final_shares.png"))


def _dynamics_plot(d: _Data, outs: Outputs) -> None:
    cfg = d.cfg
    names = [n for n in _moe_names(cfg) if n in d.runs]
    layers = sorted({layer for n in names for layer in d.model(n).moe_layers})
    fig, axes = plots.figure(ncols=2, nrows=len(layers), width=6.0)
    for r, layer in enumerate(layers):  # one row per MoE block
        for name in [n for n in names if layer in d.model(n).moe_layers]:
            steps, ent = d.over_training(name, f"moe_entropy_L{layer}")
            plots.band(axes[r, 0], steps, ent / np.log(d.model(name).moe_experts), name)
            steps, drop = d.over_training(name, f"moe_dropped_L{layer}")
            plots.band(axes[r, 1], steps, 100 * drop, name)
        plots.finish(
            axes[r, 0],
            f"routing entropy / log E (block {layer})",
            "training step",
            "entropy / log E (1 = no preference)",
            outside=False,
        )
        plots.finish(
            axes[r, 1],
            f"dropped routing choices (block {layer})",
            "training step",
            "dropped (% of choices)",
            outside=True,
        )
    fig.suptitle(f"e08: routing over training (validation batches; mean ± sd over {cfg.seeds} seeds)")
    plots.save(fig, outs.plot("routing.png"))


def _loss_plot(d: _Data, outs: Outputs) -> None:
    cfg = d.cfg
    fig, axes = plots.figure(ncols=2, width=6.0)
    for name in [n for n in ("dense", "dense-wide", *(f"moe-E{k}" for k in cfg.experts)) if n in d.runs]:
        plots.band(axes[0, 0], d.runs[name].val_steps, d.runs[name].val_loss, name)
    plots.finish(axes[0, 0], "validation loss (mean ± sd)", "training step", "val loss (nats/token)")
    names = _timed(cfg)
    plots.bars(
        axes[0, 1],
        names,
        [1e3 * np.asarray(d.cost[n]["seconds_per_step"]) for n in names],
        "ms per step (mean ± sd over repeats)",
        rotation=45,
        ha="right",
    )
    plots.finish(axes[0, 1], "measured training step, one member", "variant", "ms per step")
    fig.suptitle(f"e08: loss at equal tokens and step time ({cfg.train.steps} steps, {cfg.seeds} seeds)")
    plots.save(fig, outs.plot("loss_and_time.png"))


def _variants_table(d: _Data, outs: Outputs) -> None:
    cfg, dense = d.cfg, d.cost["dense"]
    t = Table(
        f"Variants after {cfg.train.steps} steps (mean ± sd over {cfg.seeds} seeds; routing at the last "
        f"evaluation, {cfg.train.eval_batches} validation batches)",
        [
            "variant",
            "E",
            "k",
            "capacity factor",
            "alpha",
            "total params",
            "active matmul params",
            "FLOPs/token vs dense",
            "final val loss",
            "max expert share",
            "dropped %",
            "entropy / log E",
            "ms/step",
        ],
        note="FLOPs/token: model FLOPs (6 × active matmul parameters + attention), relative to the dense "
        "baseline; capacity dispatch also executes the empty slots (capacity factor × k experts' worth per "
        "token), dropless on CPU all E experts' worth. Max expert share and dropped: the largest over layers.",
    )
    timed = _timed(cfg)
    for name, m in all_models(cfg).items():
        if name not in d.runs and name not in timed:
            continue
        c, trained = d.cost[name], name in d.runs
        moe = m.mlp == "moe" and trained  # routing measured
        ent = (
            d.routing[f"{name}:entropy"].mean(1) / np.log(m.moe_experts)
            if moe and m.moe_experts > 1
            else None
        )
        is_moe = m.mlp == "moe"
        t.add(
            name,
            m.moe_experts if is_moe else "—",
            m.moe_top_k if is_moe else "—",
            f"{m.moe_capacity_factor:g}" if is_moe and m.moe_dispatch == "capacity" else "—",
            f"{m.moe_balance_coef:g}" if is_moe else "—",
            f"{c['total_params']:,}",
            f"{c['matmul_params']:,}",
            f"{c['train_flops_per_token'] / dense['train_flops_per_token']:.3f}",
            _ms(d.loss(name)) if trained else "not trained (timed only)",
            "—" if not moe else _ms(d.max_share(name)),
            "—" if not moe else _ms(100 * d.dropped(name), 2),
            "—" if ent is None else _ms(ent),
            "—" if c["seconds_per_step"] is None else _ms(1e3 * np.asarray(c["seconds_per_step"]), 2),
        )
    outs.table("variants.md", t)


def _tokens_table(d: _Data, outs: Outputs, top: int = 8) -> None:
    """The first seed of the main MoE: each expert's most frequent first-choice tokens, per layer."""
    cfg, name = d.cfg, _main(d.cfg)
    counts = d.routing[f"{name}:counts"][0]  # (L, E, V)
    text = d.routing["token_text"]
    t = Table(
        f"{name}, seed {cfg.first_seed}: each expert's most frequent tokens (first choice, {cfg.measure_batches} validation "
        "batches)",
        ["block", "expert", "share of tokens", "most frequent tokens (count, % of that token's occurrences)"],
        note="A token id's share going to one expert near 100% means the router decides by token identity.",
    )
    for li, layer in enumerate(d.model(name).moe_layers):
        per_token = counts[li].sum(0)  # (V,)
        for e in range(cfg.main_experts):
            c = counts[li, e]
            ids = [i for i in np.argsort(-c, kind="stable")[:top] if c[i] > 0]
            cells = ", ".join(f"{text[i]!s} ({c[i]}, {100 * c[i] / per_token[i]:.0f}%)" for i in ids)
            t.add(layer, e, f"{c.sum() / counts[li].sum():.3f}", cells or "—")
    purity = counts.max(1).sum(-1) / counts.sum((1, 2))  # (L,) tokens whose id's modal expert they went to
    t.note += (
        " Tokens routed to their id's most common expert: "
        + ", ".join(f"block {layer} {p:.1%}" for layer, p in zip(d.model(name).moe_layers, purity))
        + "."
    )
    outs.table("expert_tokens.md", t)


def analyze(cfg: E08Config, out: Path):
    d, outs = _load(cfg, out), Outputs(out)
    _variants_table(d, outs)
    _tokens_table(d, outs)
    _utilization_plot(d, outs)
    _final_share_plot(d, outs)
    _dynamics_plot(d, outs)
    _loss_plot(d, outs)
    main, has = _main(cfg), lambda kind: _name(cfg, kind) in d.runs
    balanced, compute = _balanced_finding(d), _compute_finding(d)
    findings = [balanced]
    findings += [beside(_collapse_finding(d))] if has("nobalance") else []  # the breaks
    findings += [beside(_capacity_finding(d))] if has("small-capacity") else []
    findings += [compute]
    platform = recorded_provenance(out).get("devices", {}).get("platform", "unknown platform")
    speed = _speed_finding(d, platform) if "dense-wide" in _timed(cfg) else None
    summary = (
        f"Routing ({balanced.verdict}): E={cfg.main_experts} top-1 with alpha={cfg.balance_coef:g} kept "
    )
    summary += f"its largest expert at {_ms(d.max_share(main))} of the routing choices and dropped "
    summary += f"{_ms(100 * d.dropped(main), 2)}%"
    if has("nobalance"):
        summary += (
            f"; without the balance loss the largest share was {_ms(d.max_share(_name(cfg, 'nobalance')))}"
        )
    summary += f". Equal compute ({compute.verdict}): final val loss "
    summary += ", ".join(f"E={n} {_ms(d.loss(f'moe-E{n}'))}" for n in cfg.experts)
    summary += f" vs dense {_ms(d.loss('dense'))} nats/token."
    if speed is not None:
        summary += f" Step time ({speed.verdict}, not part of the headline: it is this machine's): "
        summary += f"{_x(compare(_log_secs(d, 'dense-wide'), _log_secs(d, main)))} the dense model with "
        summary += "the same total parameters."
    left = [k for k in EXTRA_VARIANTS if k not in cfg.extra_variants]
    if left:
        summary += f" Not trained here (extra_variants): {', '.join(left)}."
    # The claim is conditional ("if routing works: ..."), so routing is its precondition, not a vote: with
    # routing supported the headline is the equal-compute verdict; otherwise the claim's conclusion was not
    # tested. The breaks (no balance loss, too little capacity) show why routing must work and the step time
    # is this machine's: reported beside the headline, not voting in it.
    verdict = conditional_headline(balanced, compute)
    summary += (
        f" The headline is the equal-compute verdict, routing being {balanced.verdict} (the claim's condition)"
        if balanced.verdict == "supported"
        else f" The headline is inconclusive: routing, the claim's condition, is {balanced.verdict}"
    )
    summary += "; the breaks and step time are reported beside it."
    return outs.findings(verdict, summary, findings + ([beside(speed)] if speed else []))


EXPERIMENT = Experiment(
    name="e08_moe",
    title="Mixture of experts: routing, balance, capacity and FLOPs",
    claim=CLAIM,
    config_class=E08Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    set_per_run={
        f"model.moe_{k}": "its variants (main_experts, experts, top_k, capacity_factor, small_capacity, "
        "balance_coef, z_coef, moe_every)"
        for k in ("experts", "top_k", "capacity_factor", "balance_coef", "z_coef", "every")
    },
    check=check_config,
)
