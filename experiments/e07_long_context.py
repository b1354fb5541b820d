"""Project 7: "Long context ≠ long memory" — sliding windows, exact attention in linear memory, attention
sinks, and where context collapses.

Claims tested (lab.ops.long_attention builds the three computations; lab.model's `attention`, `window` and
`sinks` settings put them in any model):
  1. Memory: XLA's count of temporary bytes (`jit(f).lower(...).compile().memory_analysis()`, compiled and
     never run, so deterministic) grows as T^2 for naive attention and linearly for blocked attention (key
     blocks with an online softmax and a recomputing custom VJP; Rabe & Staats 2021, Dao 2023
     FlashAttention-2) and banded sliding-window attention (Beltagy et al. 2020, Longformer), forward and
     forward+backward: log-log slope 2.0 ± 0.1 naive, <= 1.1 blocked and banded. Seconds per call at
     every length are recorded beside, forward and forward+backward (blocked still computes all T^2 scores:
     its time stays quadratic). The evidence counts
     the score-sized (1 x H x T x T) buffers naive attention's plan holds at each length: XLA's CPU backend
     (jaxlib 0.10) holds five for forward+backward up to T = 512 and three from T = 1024, where a YNNPACK
     fusion starts to form dO V^T inside the softmax gradient, so one fit over the lengths bends below 2; a
     control compiled without those fusions (four buffers at every length) is recorded beside, not judged.
  2. Where context collapses: on key-value retrieval at a controlled distance (lab.data.tasks.Passkey), a
     one-layer model with a window of W is >= 0.95 accurate for items inside W and at chance beyond, and
     the change-point of its accuracy-vs-distance curve lands at W; full attention retrieves at every
     distance of its training length; attention sinks (Xiao et al. 2023, StreamingLLM) in the training mask
     make the first positions retrievable again; and whether a second windowed layer relays items from
     beyond W (up to 2W - 2 in two hops) is measured. Accuracy over context length x item distance,
     trained at T and evaluated at 1x, 2x and 4x T. The one-layer full-attention model is also trained with
     other position schemes of e02 that run past the training length (`positions`: none and alibi besides
     model.position's rope; sinusoidal can be added; learned tables end at T): which schemes keep retrieval
     at the training distances in longer sequences, and how far past T each still retrieves.
  3. Streaming at 4x the training length: a model trained with full attention on text, run with a sliding
     window alone vs the same window plus sinks (positions renumbered as the paper does): sinks keep the
     held-out loss lower once the first tokens leave the window.

Run:      lab run e07 [--preset smoke|cpu|gpu] [--set window=8] [--seeds 5]
Redraw:   lab analyze e07
Writes:   results/e07_long_context/
  runs/scaling.json           per method (naive, blocked, banded): temporary bytes per length, forward and
                              forward+backward; naive's without YNNPACK fusions (the control, CPU only);
                              seconds per call at the timed lengths, forward and forward+backward
  runs/passkey/L<n>_<variant>/  one sweep over seeds per depth n and variant (full, window, sinks)
  runs/passkey_L<n>_<variant>.npz  per seed, eval length and distance: accuracy and loss of the answer
  runs/passkey/L1_full_<scheme>/, runs/passkey_L1_full_<scheme>.npz  the same for each of `positions`
  runs/text/full/             the text model (full attention) trained at T
  runs/streaming.npz          per seed and position of a 4T stream: held-out loss with full attention, a
                              window, and the window plus sinks
  plots/*.png, tables/*.md, findings.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, compare, compare_to, decide, headline, summarize
from lab.analysis.curves import change_point, loglog_slope
from lab.analysis.findings import claims_summary
from lab.config import check, check_at_least, check_choices, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.data.tasks import Passkey
from lab.experiment import Experiment
from lab.model import ModelConfig, apply
from lab.ops import attention, long_attention, masks
from lab.ops.losses import token_cross_entropy
from lab.progress import phase
from lab.runs import load_runs, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, seed_members, sweep_params, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.sweep import fresh_seeds
from lab.viz import plots

VARIANTS = ("full", "window", "sinks")
# e02's position schemes that can run past the training length (a learned table cannot)
POSITIONS = ("none", "sinusoidal", "rope", "alibi")
METHODS = ("naive", "blocked", "banded")
MODES = ("forward", "forward+backward")
# Thresholds fixed with the claims, before measuring:
INSIDE = 0.95  # accuracy inside the window (the issue's)
CHANCE_MARGIN = 0.05  # "at chance": the mean accuracy within this of 1/n_values
NAIVE_SLOPE, SLOPE_MARGIN, LINEAR_SLOPE = 2.0, 0.1, 1.1  # the goals for the log-log slopes
COLLAPSE_MARGIN = 2.0  # positions: the change-point "lands at W" within this
DROP = 0.5  # a change-point is a collapse when accuracy falls by at least this fraction of (1 - chance)
_fmt = lambda x, d=3: summarize(x).fmt(d)


@dataclass(frozen=True)
class E07Config:
    model: ModelConfig = ModelConfig(d_model=32, n_heads=2, position="rope")  # passkey; layers per depth
    train: TrainConfig = TrainConfig(
        steps=200, batch_size=32, lr=3e-3, warmup_steps=20, log_every=20, eval_every=100, ckpt_every=200
    )
    task: Passkey = Passkey(seq_len=32, n_filler=16, n_values=8)  # trained at T = task.seq_len
    window: int = 16
    sinks: int = 4
    block: int = 16  # queries per block of the banded computation the windowed models train with
    depths: tuple[int, ...] = (1, 2)
    variants: tuple[str, ...] = VARIANTS
    eval_lengths: tuple[int, ...] = (1, 2, 4)  # multiples of T
    eval_examples: int = 64  # per (length, distance)
    # besides model.position: a one-layer full-attention passkey model per scheme, evaluated like the others,
    # to see which schemes keep retrieval at the training distances in longer sequences. Sinusoidal is left
    # out of the cpu preset's budget: at this size it did not learn the task in 200 steps (accuracy
    # 0.32 ± 0.18 at T with --set positions=none,sinusoidal,alibi, 2026-12-02), so it tells nothing of length
    positions: tuple[str, ...] = ("none", "alibi")
    data: DataConfig = DataConfig()
    text_model: ModelConfig = ModelConfig(max_len=64, n_layers=2, d_model=64, n_heads=4, position="rope")
    text_train: TrainConfig = TrainConfig(
        steps=300, batch_size=16, lr=3e-3, warmup_steps=30, log_every=20, eval_every=100, ckpt_every=300
    )
    text_window: int = 32
    text_sinks: int = 4
    stream_mult: int = 4  # streaming at this multiple of the text model's training length
    stream_examples: int = 16
    mem_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    time_lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    time_repeats: int = 3
    mem_heads: int = 4
    mem_head_dim: int = 32
    mem_block: int = 128  # keys per block (blocked), queries per block (banded)
    mem_window: int = 128
    # 5: "at chance beyond W" is a test of equivalence within 0.05, and the one-layer window model's accuracy
    # there varies by 0.025-0.028 between seeds, so 3 seeds give a 95% CI of about ±0.07, wider than the
    # margin (qualified at 3 seeds, 2026-12-04); 5 seeds give about ±0.03. The cpu preset took 211 s with 5.
    seeds: int = 5
    # The seed count was raised after seeing seeds 0-4 (of which 0-2 decided the raise), so the published
    # verdicts come from fresh seeds 5-9 (DESIGN convention 15: a choice made on some seeds is tested on others).
    first_seed: int = fresh_seeds(5)

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "eval_examples", "stream_examples", "time_repeats", "depths")
        check_at_least(self, 0, "first_seed")
        check_at_least(self, 1, "mem_heads", "mem_head_dim", "eval_lengths")
        check_at_least(self, 2, "stream_mult")  # streaming is scored past the training length
        check(self.window >= 1, f"window must be >= 1, got {self.window}")
        check(self.text_window >= 1, f"text_window must be >= 1, got {self.text_window}")
        check(0 <= self.sinks <= self.window, f"sinks must be in 0..window ({self.window}), got {self.sinks}")
        check(
            0 <= self.text_sinks <= self.text_window,
            f"text_sinks must be in 0..text_window ({self.text_window}), got {self.text_sinks}",
        )
        for name in ("block", "mem_block", "mem_window"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check_choices(self, "variants", VARIANTS, required=("window",))
        check_choices(self, "positions", POSITIONS)
        check(len(set(self.positions)) == len(self.positions), "positions has a repeated value")
        check(
            self.model.position not in self.positions,
            f"positions lists model.position ({self.model.position!r}), which every variant already uses",
        )
        check_distinct(self, "variants", "depths", "eval_lengths", "mem_lengths", "time_lengths")
        check_at_least(self, 2, "mem_lengths")
        check(len(self.mem_lengths) >= 3, "mem_lengths needs at least 3 lengths to fit a slope")
        check(1 in self.eval_lengths, "eval_lengths must include 1 (the training length)")
        check(1 in self.depths, "depths must include 1 (the one-layer models the window claim is about)")
        check(
            self.window < self.task.seq_len,
            f"window must be < task.seq_len ({self.task.seq_len}) to collapse",
        )
        check(self.text_window < self.text_model.max_len, "text_window must be < text_model.max_len")
        for m in (self.model, self.text_model):
            check(
                m.position != "learned",
                "model.position / text_model.position: learned positions cannot run past the training "
                "length; choose none, sinusoidal, rope or alibi",
            )
            check(m.window is None and m.sinks == 0 and m.attention == "naive", "set the window with window=")
        for v in self.variants:  # every model must be valid before anything compiles
            for n in self.depths:
                _model(self, v, n)
        _text_variant(self, "sinks")


def _model(cfg: E07Config, variant: str, depth: int) -> ModelConfig:
    """The passkey model of `variant` at `depth` layers: full attention (naive), or a window (banded
    computation) without or with sinks."""
    m = cfg.model.replace(n_layers=depth, vocab_size=cfg.task.vocab_size, max_len=cfg.task.seq_len)
    if variant == "full":
        return m
    sinks = cfg.sinks if variant == "sinks" else 0
    return m.replace(attention="banded", window=cfg.window, sinks=sinks, attn_block=cfg.block)


def _text_variant(cfg: E07Config, variant: str, base: ModelConfig | None = None) -> ModelConfig:
    """The text model run as `variant`: its trained full attention, a window, or the window and sinks."""
    m = cfg.text_model if base is None else base
    if variant == "full":
        return m
    sinks = cfg.text_sinks if variant == "sinks" else 0
    return m.replace(attention="banded", window=cfg.text_window, sinks=sinks, attn_block=cfg.text_window)


# fmt: off
PRESET_TABLE = {
    "smoke": E07Config(
        model=ModelConfig(d_model=16, n_heads=2, position="rope"),
        train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20), task=Passkey(seq_len=12, n_filler=6, n_values=4),
        window=4, sinks=2, block=4, depths=(1,), variants=("window", "sinks"), eval_lengths=(1, 2), eval_examples=8,
        positions=("alibi",),
        text_model=ModelConfig(max_len=16, n_layers=1, d_model=16, n_heads=2, position="rope"),
        text_train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20), text_window=8, text_sinks=2,
        stream_mult=2, stream_examples=4, mem_lengths=(64, 128, 256), time_lengths=(64,), time_repeats=1,
        mem_heads=2, mem_head_dim=8, mem_block=32, mem_window=32, seeds=2,
    ),
    "cpu": E07Config(),
    "gpu": E07Config(
        model=ModelConfig(d_model=128, n_heads=4, position="rope"), train=TRAIN_PRESETS["gpu"],
        task=Passkey(seq_len=256, n_filler=64, n_values=32), window=64, sinks=4, block=64, depths=(1, 2, 3),
        text_model=ModelConfig(max_len=256, n_layers=4, d_model=256, n_heads=8, position="rope"),
        text_train=TRAIN_PRESETS["gpu"], data=DataConfig(name="pystdlib"), text_window=128, text_sinks=4,
        mem_lengths=(1024, 2048, 4096, 8192, 16384, 32768), time_lengths=(1024, 2048, 4096, 8192),
        mem_heads=8, mem_head_dim=64,
    ),
}
# fmt: on


# --- run: every JAX computation, written to files ------------------------------------------------------------
def run(cfg: E07Config, out: Path, opts) -> None:
    write_measurement(out / "runs" / "scaling.json", _scaling(cfg, opts.progress), cfg)
    for depth, variant in [(n, v) for n in cfg.depths for v in cfg.variants]:
        model = _model(cfg, variant, depth)
        spec = SweepSpec(model, cfg.train, cfg.task, seed_members(cfg.seeds, cfg.train, first=cfg.first_seed))
        run_dir = out / "runs" / "passkey" / f"L{depth}_{variant}"
        train_sweep(run_dir, spec, **opts.train_kw(), desc=f"e07 passkey {depth} layer(s), {variant}")
        m = _passkey_grid(cfg, model, sweep_params(run_dir, spec))
        write_measurement(out / "runs" / f"passkey_L{depth}_{variant}.npz", m, cfg)
    for pos in cfg.positions:  # the one-layer full-attention model with each other position scheme
        model = _model(cfg, "full", 1).replace(position=pos)
        spec = SweepSpec(model, cfg.train, cfg.task, seed_members(cfg.seeds, cfg.train, first=cfg.first_seed))
        run_dir = out / "runs" / "passkey" / f"L1_full_{pos}"
        train_sweep(run_dir, spec, **opts.train_kw(), desc=f"e07 passkey 1 layer, full, {pos} positions")
        m = _passkey_grid(cfg, model, sweep_params(run_dir, spec))
        write_measurement(out / "runs" / f"passkey_L1_full_{pos}.npz", m, cfg)
    lm = text_lm(cfg.data, cfg.text_model)
    spec = SweepSpec.text(lm, cfg.text_train, seed_members(cfg.seeds, cfg.text_train, first=cfg.first_seed))
    train_sweep(out / "runs" / "text" / "full", spec, **opts.train_kw(), desc="e07 text, full attention")
    params = sweep_params(out / "runs" / "text" / "full", spec)
    write_measurement(out / "runs" / "streaming.npz", _streaming(cfg, lm, params), cfg)


def _attention_fns(cfg: E07Config) -> dict:
    """The three computations of causal attention at the scaling sizes: the lab's default (the whole score
    matrix), blocked, and banded with a window of mem_window."""
    return {
        "naive": lambda q, k, v: attention.dot_product_attention(q, k, v, masks.causal_mask(q.shape[1])),
        "blocked": lambda q, k, v: long_attention.blocked_attention(q, k, v, block=cfg.mem_block),
        "banded": lambda q, k, v: long_attention.banded_attention(
            q, k, v, cfg.mem_window, block=cfg.mem_block
        ),
    }


def _programs(fn):
    """{mode: jitted function of (q, k, v, dO)}: the forward, and forward+backward (the gradients of
    sum(out * dO) with respect to q, k and v)."""
    grad = jax.grad(lambda q, k, v, do: jnp.sum(fn(q, k, v) * do), argnums=(0, 1, 2))
    return {"forward": jax.jit(lambda q, k, v, do: fn(q, k, v)), "forward+backward": jax.jit(grad)}


def _scaling(cfg: E07Config, progress: bool) -> dict:
    shape = lambda t: (1, t, cfg.mem_heads, cfg.mem_head_dim)
    fns, res, plain, timed = _attention_fns(cfg), {}, {}, {}
    jobs = [(m, t) for m in METHODS for t in cfg.mem_lengths]
    for method, t in phase(jobs, "e07 memory (compile only)", progress, lambda j: f"{j[0]} T={j[1]}"):
        x = jax.ShapeDtypeStruct(shape(t), jnp.float32)
        for mode, prog in _programs(fns[method]).items():
            lowered = prog.lower(x, x, x, x)
            compiled = lowered.compile()
            res.setdefault(method, {}).setdefault(mode, []).append(
                int(compiled.memory_analysis().temp_size_in_bytes)
            )
            if method == "naive":  # the control: the same program without XLA CPU's YNNPACK fusions
                plain.setdefault(mode, []).append(_temp_bytes_plain(lowered))
            if t in cfg.time_lengths:  # timed below: not compiled twice
                timed[(method, mode, t)] = compiled
    times = {}
    jobs = [(m, mode, t) for mode in MODES for m in METHODS for t in cfg.time_lengths]
    for method, mode, t in phase(jobs, "e07 timing", progress, lambda j: f"{j[0]} {j[1]} T={j[2]}"):
        prog = timed.get((method, mode, t)) or _programs(fns[method])[mode]
        args = [jax.random.normal(jax.random.PRNGKey(i), shape(t), jnp.float32) for i in range(4)]
        jax.block_until_ready(prog(*args))  # warm up (and compile, for a length the memory phase left out)
        seconds = []
        for _ in range(cfg.time_repeats):
            start = time.perf_counter()
            jax.block_until_ready(prog(*args))
            seconds.append(time.perf_counter() - start)
        times.setdefault(mode, {}).setdefault(method, []).append(seconds)
    return {
        "temp_bytes": res,
        "naive_plain_temp_bytes": plain,
        "seconds": times,
        "device": jax.devices()[0].device_kind,
    }


def _temp_bytes_plain(lowered) -> int | None:
    """XLA's temporary bytes for the `lowered` program compiled with the CPU backend's YNNPACK fusions
    switched off (`xla_cpu_experimental_ynn_fusion_type` empty), or None off CPU or where this XLA lacks the
    option.

    Why a control: with those fusions on (the default), XLA's CPU plan for naive attention's
    forward+backward changes with T — it keeps five score-sized (B, H, T, T) buffers at T <= 512 and three
    from T = 1024 on, because from there one fusion computes dO V^T inside the softmax-gradient reduction
    instead of materialising it — so a single log-log fit over the lengths mixes two plans. Without them
    the plan is the same at every length. The verdict stays on the default plan; this says why it bends."""
    if jax.default_backend() != "cpu":
        return None
    try:
        compiled = lowered.compile(compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})
    except Exception:  # an XLA without the option: no control, said so in the finding
        return None
    return int(compiled.memory_analysis().temp_size_in_bytes)


def _passkey_grid(cfg: E07Config, model: ModelConfig, params) -> dict:
    """Per seed, eval length (multiples of T) and distance 1..4T-1: accuracy and loss of the answer over
    eval_examples sequences at T, eval_examples / k at k x T (NaN where the distance does not fit)."""
    T, task = cfg.task.seq_len, cfg.task
    longest = max(cfg.eval_lengths) * T
    acc = np.full((cfg.seeds, len(cfg.eval_lengths), longest - 1), np.nan)
    loss = np.full_like(acc, np.nan)
    for i, mult in enumerate(cfg.eval_lengths):
        n, examples = (
            mult * T,
            max(1, cfg.eval_examples // mult),
        )  # longer rows: fewer per cell, as many tokens
        m = model.replace(max_len=n)

        def one(p, d, n=n, m=m, examples=examples):
            key = jax.random.fold_in(jax.random.PRNGKey(7), n * 100_003 + d)
            b = task.at_distance(key, examples, n, d)
            logits = apply(m, p, b["inputs"])[:, -1:]
            nll = token_cross_entropy(logits, b["targets"][:, -1:])[:, 0]
            hit = jnp.argmax(logits[:, 0], -1) == b["targets"][:, -1]
            return jnp.mean(hit.astype(jnp.float32)), jnp.mean(nll)

        # distances one after another (lax.map), seeds at once: memory of one distance's batch per step
        f = jax.jit(
            lambda ps, one=one, n=n: jax.lax.map(
                lambda d: jax.vmap(one, in_axes=(0, None))(ps, d), jnp.arange(1, n)
            )
        )
        a, nll = f(params)  # (n - 1, S) each
        acc[:, i, : n - 1], loss[:, i, : n - 1] = np.asarray(a).T, np.asarray(nll).T
    return {"accuracy": acc, "loss": loss}


def _streaming(cfg: E07Config, lm, params) -> dict:
    """Per seed and position of stream_examples held-out streams of stream_mult x T tokens: the loss with
    full attention, with the window alone, and with the window plus sinks."""
    n = cfg.stream_mult * cfg.text_model.max_len
    val = lm.text.val
    starts = np.random.default_rng(0).integers(0, val.shape[0] - n - 1, cfg.stream_examples)
    window = np.stack([val[s : s + n + 1] for s in starts]).astype(np.int32)
    x, y = jnp.asarray(window[:, :-1]), jnp.asarray(window[:, 1:])
    out = {}
    for variant in VARIANTS:
        m = _text_variant(cfg, variant, lm.model.replace(max_len=n))
        f = jax.jit(jax.vmap(lambda p, m=m: token_cross_entropy(apply(m, p, x), y).mean(0)))
        out[variant] = np.asarray(f(params), np.float64)  # (S, n)
    return out


# --- analyze: NumPy only, from the files -------------------------------------------------------------------
def analyze(cfg: E07Config, out: Path):
    outs = Outputs(out)
    scaling = read_measurement(out / "runs" / "scaling.json", cfg)
    keys = [(n, v) for n in cfg.depths for v in cfg.variants]
    runs = load_runs({k: out / "runs" / "passkey" / f"L{k[0]}_{k[1]}" for k in keys})
    grid = {k: read_measurement(out / "runs" / f"passkey_L{k[0]}_{k[1]}.npz", cfg) for k in keys}
    text = load_runs({"full": out / "runs" / "text" / "full"})["full"]
    stream = read_measurement(out / "runs" / "streaming.npz", cfg)
    slopes = _slopes(cfg, scaling)
    outs.table("scaling.md", _scaling_table(cfg, scaling, slopes), _time_table(cfg, scaling))
    _scaling_plots(cfg, scaling, slopes, outs)
    summary = {k: _passkey_summary(cfg, g["accuracy"]) for k, g in grid.items()}
    outs.table("passkey.md", _passkey_table(cfg, runs, summary))
    _passkey_plots(cfg, grid, summary, outs)
    outs.table("streaming.md", _streaming_table(cfg, stream, text))
    _streaming_plot(cfg, stream, outs)
    findings = [_finding_slopes(cfg, scaling, slopes), _finding_window(cfg, summary)]
    if 2 in cfg.depths:
        findings.append(_finding_relay(cfg, summary))
    if "full" in cfg.variants:
        findings.append(_finding_full(cfg, summary))
    if "sinks" in cfg.variants and cfg.sinks:
        findings.append(_finding_sink_mask(cfg, summary))
    if "full" in cfg.variants and max(cfg.eval_lengths) > 1:
        findings.append(_finding_length(cfg, grid))
    schemes = _position_grids(cfg, grid, out)
    if schemes:
        pruns = {p: out / "runs" / "passkey" / f"L1_full_{p}" for p in cfg.positions}
        loss = {p: r.final_val_loss for p, r in load_runs(pruns).items()}
        if (1, "full") in runs:
            loss[cfg.model.position] = runs[(1, "full")].final_val_loss
        losses = _position_grids(cfg, grid, out, "loss")
        outs.table("positions.md", _positions_table(cfg, schemes, loss), _positions_loss_table(cfg, losses))
        _positions_plot(cfg, schemes, outs)
        if max(cfg.eval_lengths) > 1:
            findings.append(_finding_positions(cfg, schemes))
    findings.append(_finding_streaming(cfg, stream))
    return outs.findings(headline(findings), claims_summary(findings), findings)


def _position_grids(cfg, grid, out, measure: str = "accuracy") -> dict:
    """{position scheme: the one-layer full-attention model's `measure` grid ("accuracy" or the answer's
    "loss")}: model.position's (when the 'full' variant ran) and each of `positions`."""
    schemes = {cfg.model.position: grid[(1, "full")][measure]} if (1, "full") in grid else {}
    for p in cfg.positions:
        schemes[p] = read_measurement(out / "runs" / f"passkey_L1_full_{p}.npz", cfg)[measure]
    return schemes


def _positions_loss_table(cfg, losses) -> Table:
    """The answer's loss (nats) by position scheme, over the same distances as the accuracy table."""
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    cols = ["position scheme"] + [f"d < {T} in {m * T} tokens" for m in cfg.eval_lengths]
    cols += [f"{T} <= d < {top * T} in {top * T}"]
    t = Table(
        f"The same models' loss on the answer token (nats, mean ± sd over seeds; chance: ln {cfg.task.n_values} "
        f"= {np.log(cfg.task.n_values):.3f})",
        cols,
    )
    for p, loss in losses.items():
        a = _same_and_unseen(cfg, loss)
        t.add(p, *[_fmt(a["same"][m]) for m in cfg.eval_lengths], _fmt(a["unseen"]))
    return t


def _at_lengths(cfg, acc) -> dict:
    """Per seed: mean accuracy at the training distances (d < T) in sequences of each eval length, at the
    distances never trained (T <= d < top x T) in the longest, and the change-point of the longest one's
    accuracy against distance when it is a collapse (NaN: none)."""
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    j = cfg.eval_lengths.index(top)
    chance = 1.0 / cfg.task.n_values
    d = np.arange(1, top * T)
    cps = []
    for row in acc[:, j, : top * T - 1]:
        where, before, after = change_point(d, row)
        cps.append(where if before - after >= DROP * (1 - chance) else np.nan)
    return _same_and_unseen(cfg, acc) | {"collapse": np.asarray(cps, np.float64)}


def _same_and_unseen(cfg, grid) -> dict:
    """Per seed, of a (seeds, eval lengths, distances) grid: the mean at the training distances (d < T) in
    sequences of each eval length ("same"), and at the distances never trained in the longest ("unseen")."""
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    j = cfg.eval_lengths.index(top)
    return {
        "same": {m: grid[:, i, : T - 1].mean(1) for i, m in enumerate(cfg.eval_lengths)},
        "unseen": grid[:, j, T - 1 : top * T - 1].mean(1) if top > 1 else np.full(grid.shape[0], np.nan),
    }


def _positions_table(cfg, schemes, loss) -> Table:
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    cols = ["position scheme", "val loss"] + [f"d < {T} in {m * T} tokens" for m in cfg.eval_lengths]
    cols += [f"{T} <= d < {top * T} in {top * T}", f"collapse point (d) in {top * T}"]
    t = Table(
        f"One-layer full attention trained at T = {T}, by position scheme: passkey accuracy (mean ± sd over "
        "seeds)",
        cols,
        note=f"The same distances (d < {T}) in longer sequences measure more context; the distances never "
        f"trained ({T} and beyond) measure distance extrapolation. Collapse point: the change-point of accuracy "
        f"against d in {top * T}-token sequences, counted when accuracy falls there by at least {DROP} of "
        "(1 - chance). Learned positions are left out: their table ends at the training length.",
    )
    for p, acc in schemes.items():
        a = _at_lengths(cfg, acc)
        cp = a["collapse"]
        cp_cell = (
            summarize(cp, why="no collapse").fmt(1)
            if np.isfinite(cp).any()
            else f"no collapse ({cp.size}/{cp.size})"
        )
        same = [_fmt(a["same"][m]) for m in cfg.eval_lengths]
        t.add(p, _fmt(loss[p]) if p in loss else "—", *same, _fmt(a["unseen"]), cp_cell)
    return t


def _positions_plot(cfg, schemes, outs) -> None:
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    j = cfg.eval_lengths.index(top)
    d = np.arange(1, top * T)
    fig, axes = plots.figure(width=6.0)
    ax = axes[0, 0]
    for k, (p, acc) in enumerate(schemes.items()):
        plots.band(ax, d, acc[:, j, : top * T - 1], p, color=f"C{k}")
    ax.axvline(T - 0.5, color="black", linestyle=":", linewidth=1, label=f"training length T = {T}")
    ax.axhline(1 / cfg.task.n_values, color="grey", linestyle=":", label="chance")
    plots.finish(
        ax,
        f"e07: one-layer full attention in {top * T}-token sequences, by position scheme "
        f"(mean ± sd over {cfg.seeds} seeds)",
        "distance from query to item (tokens)",
        "accuracy",
    )
    plots.save(fig, outs.plot("positions.png"))


def _finding_positions(cfg, schemes) -> Finding:
    """Per position scheme: does accuracy at the training distances fall in sequences top x T long?"""
    T, top = cfg.task.seq_len, max(cfg.eval_lengths)
    parts, ev = [], []
    for p, acc in schemes.items():
        a = _at_lengths(cfg, acc)
        c = compare(a["same"][1], a["same"][top], paired_by_seed=True)  # each seed's model at both lengths
        parts.append(c.verdict("less"))
        ev.append(
            f"{p}: {_fmt(a['same'][1])} in {T} vs {_fmt(a['same'][top])} in {top * T} ({top * T} minus {T}: "
            f"{c.fmt()}: {parts[-1]}); unseen distances {_fmt(a['unseen'])}"
        )
    return Finding(
        f"Per position scheme ({', '.join(schemes)}), one-layer full attention retrieves items at its "
        f"training distances (d < {T}) less well in sequences {top}x the training length",
        headline(parts),
        "mean accuracy over d < T, per scheme: " + "; ".join(ev),
    )


def _slopes(cfg, scaling) -> dict:
    """{(method, mode): (slope, ci95)} of temporary bytes against T (log-log least squares)."""
    tb = scaling["temp_bytes"]
    return {(m, mode): loglog_slope(cfg.mem_lengths, tb[m][mode]) for m in METHODS for mode in MODES}


def _slope_verdict(method, slope_ci):
    lo, hi = slope_ci[1]
    if method == "naive":
        return decide((lo - NAIVE_SLOPE, hi - NAIVE_SLOPE), "equal", SLOPE_MARGIN)
    return decide((lo - LINEAR_SLOPE, hi - LINEAR_SLOPE), "less")


def _fmt_slope(s) -> str:
    slope, (lo, hi) = s
    return f"{slope:.3f} [95% CI {lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{slope:.3f}"


def _time_slopes(cfg, scaling) -> dict:
    """{(method, mode): (slope, ci95)} of the median seconds per call against T (log-log least squares)."""
    secs = scaling["seconds"]
    return {
        (m, mode): loglog_slope(cfg.time_lengths, [np.median(s) for s in secs[mode][m]])
        for m in METHODS
        for mode in MODES
    }


def _time_table(cfg, scaling) -> Table:
    t = Table(
        f"Time per attention call against length T on {scaling['device']} (ms, median of {cfg.time_repeats} "
        "after a warm-up)",
        ["method", "pass", *[f"T={x}" for x in cfg.time_lengths], "log-log slope"],
        note="The programs whose memory is above, run on random q, k, v (and dO) once compiled. Exact attention "
        "does T^2 work whatever its memory (naive and blocked) and banded T x window, so at large T the slopes "
        "tend to 2 and 1. A fit over all lengths can land on either side: fixed costs per call weigh most at "
        "small T and pull it below, and outgrowing the CPU's caches at large T pushes it above. No goal: time "
        "is reported, not judged.",
    )
    slopes = _time_slopes(cfg, scaling)
    for m in METHODS:
        for mode in MODES:
            ms = [f"{np.median(s) * 1e3:.1f}" for s in scaling["seconds"][mode][m]]
            t.add(m, mode, *ms, _fmt_slope(slopes[(m, mode)]))
    return t


def _scaling_table(cfg, scaling, slopes) -> Table:
    mib = lambda b: f"{b / 2**20:.2f}"
    cols = [f"T={t}" for t in cfg.mem_lengths]
    t = Table(
        "Attention's temporary memory (MiB, XLA memory_analysis of the compiled program) against length T",
        ["method", "pass", *cols, "log-log slope", "slope between the last two lengths"],
        note=f"Batch 1, {cfg.mem_heads} heads of {cfg.mem_head_dim}, float32, causal; blocked: {cfg.mem_block} "
        f"keys per block; banded: window {cfg.mem_window}, {cfg.mem_block} queries per block. Compiled, never "
        "run: the bytes are XLA's plan, the same on every run. Goal: slope 2.0 ± 0.1 naive, <= 1.1 blocked "
        "and banded. Control rows (where measured, not in the verdict): the naive programs compiled with XLA "
        "CPU's YNNPACK fusions off (xla_cpu_experimental_ynn_fusion_type empty), whose plan does not change "
        "with T.",
    )
    for m in METHODS:
        for mode in MODES:
            b, L = scaling["temp_bytes"][m][mode], cfg.mem_lengths
            last = _last_slope(L, b)  # context only: the verdict uses the fit
            t.add(m, mode, *[mib(x) for x in b], _fmt_slope(slopes[(m, mode)]), f"{last:.3f}")
    for mode in MODES:  # the control (not in the verdict): the same naive programs without YNNPACK fusions
        b, L = _plain(scaling, mode), cfg.mem_lengths
        if b is not None:
            last = _last_slope(L, b)
            name = "naive, YNNPACK fusions off (control)"
            t.add(name, mode, *[mib(x) for x in b], _fmt_slope(loglog_slope(L, b)), f"{last:.3f}")
    return t


def _scaling_plots(cfg, scaling, slopes, outs) -> None:
    fig, axes = plots.figure(ncols=2, width=5.0)
    for i, mode in enumerate(MODES):
        ax = axes[0, i]
        for j, m in enumerate(METHODS):
            mib = np.asarray(scaling["temp_bytes"][m][mode], np.float64) / 2**20
            ax.plot(
                cfg.mem_lengths,
                mib,
                marker="o",
                color=f"C{j}",
                label=f"{m} (slope {slopes[(m, mode)][0]:.2f})",
            )
        ctl = _plain(scaling, mode)
        if ctl is not None:
            sl = loglog_slope(cfg.mem_lengths, ctl)[0]
            mib = np.asarray(ctl, np.float64) / 2**20
            label = f"naive, YNNPACK fusions off (control; slope {sl:.2f})"
            ax.plot(cfg.mem_lengths, mib, marker="x", linestyle="--", color="C0", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plots.finish(ax, f"{mode}", "sequence length T (tokens)", "temporary memory (MiB)")
    fig.suptitle("e07: attention's temporary memory against length (XLA memory_analysis, compiled only)")
    plots.save(fig, outs.plot("memory.png"))
    fig, axes = plots.figure(ncols=2, width=5.0)
    for i, mode in enumerate(MODES):
        ax = axes[0, i]
        for j, m in enumerate(METHODS):
            secs = [np.asarray(s) * 1e3 for s in scaling["seconds"][mode][m]]
            plots.points(ax, cfg.time_lengths, secs, m, color=f"C{j}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plots.finish(ax, mode, "sequence length T (tokens)", "time per call (ms)")
    fig.suptitle(f"e07: attention time against length ({scaling['device']}, each repeat)")
    plots.save(fig, outs.plot("time.png"))


def _passkey_summary(cfg, acc) -> dict:
    """Per seed at the training length: mean accuracy inside the window (distance < W), beyond it (W..T-1
    outside the sink positions), in the relay band (W..2W-2), at the sink positions (distance >= T - sinks),
    over all distances; and the change-point of the accuracy-vs-distance curve (NaN: no collapse)."""
    T, W, k = cfg.task.seq_len, cfg.window, cfg.sinks
    chance = 1.0 / cfg.task.n_values
    a = acc[:, cfg.eval_lengths.index(1), : T - 1]  # (S, T-1), distance d = index + 1
    d = np.arange(1, T)
    sink_pos = d >= T - k if k else np.zeros_like(d, bool)
    pick = lambda sel: a[:, sel].mean(1) if sel.any() else np.full(a.shape[0], np.nan)
    cps = []
    for row in a:
        where, before, after = change_point(d, row)
        cps.append(where if before - after >= DROP * (1 - chance) else np.nan)
    return {
        "inside": pick(d < W),
        "beyond": pick((d >= W) & ~sink_pos),
        "relay": pick((d >= W) & (d <= 2 * W - 2) & ~sink_pos),
        "sink_positions": pick(sink_pos),
        "all": a.mean(1),
        "collapse": np.asarray(cps, np.float64),
        "chance": chance,
    }


def _passkey_table(cfg, runs, summary) -> Table:
    T, W, k = cfg.task.seq_len, cfg.window, cfg.sinks
    lengths = [m * T for m in cfg.eval_lengths]
    t = Table(
        f"Passkey retrieval trained at T = {T}: accuracy by where the item sits (mean ± sd over seeds)",
        [
            "layers",
            "variant",
            "val loss",
            f"d < {W}",
            f"{W} <= d <= {2 * W - 2}",
            f"d >= {W}, not a sink",
            f"d >= {T - k} (sink positions)",
            "all d < T",
            "collapse point (d)",
        ],
        note=f"d: distance from the query back to the item; window W = {W}, sinks {k} (variant 'sinks'); "
        f"chance 1/{cfg.task.n_values} = {1 / cfg.task.n_values:.3f}. Collapse point: the least-squares "
        f"change-point of accuracy against d at T, counted when accuracy falls there by at least {DROP} of "
        f"(1 - chance) ('no collapse' otherwise). {cfg.eval_examples} sequences per distance at T (the "
        f"heatmap also evaluates at lengths {', '.join(map(str, lengths))}, with eval_examples / k sequences "
        "per cell at k x T).",
    )
    for key, s in summary.items():
        cp = s["collapse"]
        cp_cell = (
            summarize(cp, why="no collapse").fmt(1)
            if np.isfinite(cp).any()
            else f"no collapse ({cp.size}/{cp.size})"
        )
        t.add(
            key[0],
            key[1],
            _fmt(runs[key].final_val_loss),
            _fmt(s["inside"]),
            _fmt(s["relay"]),
            _fmt(s["beyond"]),
            _fmt(s["sink_positions"]),
            _fmt(s["all"]),
            cp_cell,
        )
    return t


def _passkey_heatmap(cfg, grid, measure: str, vmax: float, label: str, what: str, name: str, outs) -> None:
    """One panel per (depth, variant): the mean over seeds of `measure` ("accuracy" or "loss") by context
    length (rows) and item distance (columns), with the window marked."""
    T, W = cfg.task.seq_len, cfg.window
    fig, axes = plots.figure(ncols=len(cfg.variants), nrows=len(cfg.depths), width=4.6, height=2.4)
    for (n, v), ax in zip(list(grid), axes.ravel()):
        mean = np.mean(grid[(n, v)][measure], axis=0)  # (lengths, distances); NaN: d past the length
        im = ax.imshow(
            np.ma.masked_invalid(mean),
            aspect="auto",
            vmin=0,
            vmax=vmax,
            cmap="viridis",
            interpolation="nearest",
            extent=(0.5, mean.shape[1] + 0.5, len(cfg.eval_lengths) - 0.5, -0.5),
        )
        ax.set_yticks(range(len(cfg.eval_lengths)), [str(m * T) for m in cfg.eval_lengths])
        ax.axvline(W - 0.5, color="white", linestyle=":", linewidth=1, label=f"window W = {W}")
        ax.grid(False)
        plots.finish(
            ax,
            f"{n} layer(s), {v}",
            "distance from query to item (tokens)",
            "context length (tokens)",
            legend=False,
        )
    plots.colorbar(fig, im, axes[0, -1], label)
    fig.suptitle(f"e07: passkey {what} by context length and item distance (trained at T = {T}; dotted: W)")
    plots.save(fig, outs.plot(name))


def _passkey_plots(cfg, grid, summary, outs) -> None:
    T, W = cfg.task.seq_len, cfg.window
    _passkey_heatmap(
        cfg, grid, "accuracy", 1.0, "accuracy (mean over seeds)", "accuracy", "passkey_heatmap.png", outs
    )
    top = max(float(np.nanmax(g["loss"])) for g in grid.values())  # one scale for every panel
    _passkey_heatmap(
        cfg,
        grid,
        "loss",
        top,
        "answer loss, nats (mean over seeds)",
        "answer loss",
        "passkey_loss_heatmap.png",
        outs,
    )
    fig, axes = plots.figure(ncols=len(cfg.depths), width=5.0)
    d = np.arange(1, T)
    for i, n in enumerate(cfg.depths):
        ax = axes[0, i]
        for j, v in enumerate(cfg.variants):
            a = grid[(n, v)]["accuracy"][:, cfg.eval_lengths.index(1), : T - 1]
            plots.band(ax, d, a, v, color=f"C{j}")
            cp = summary[(n, v)]["collapse"]
            if np.isfinite(cp).any():
                ax.axvline(
                    np.nanmean(cp),
                    color=f"C{j}",
                    linestyle="--",
                    linewidth=1,
                    label=f"{v}: collapse point (mean)",
                )
        ax.axhline(1 / cfg.task.n_values, color="grey", linestyle=":", label="chance")
        plots.finish(
            ax,
            f"{n} layer(s), at T = {T}",
            "distance from query to item (tokens)",
            "accuracy",
            i == len(cfg.depths) - 1,
            True,
        )
    fig.suptitle(f"e07: passkey accuracy against distance (mean ± sd over {cfg.seeds} seeds; window {W})")
    plots.save(fig, outs.plot("passkey_curves.png"))
    fig, axes = plots.figure(ncols=len(cfg.depths), width=5.0)
    for i, n in enumerate(cfg.depths):
        ax = axes[0, i]
        for j, v in enumerate(cfg.variants):
            plots.band(ax, d, grid[(n, v)]["loss"][:, cfg.eval_lengths.index(1), : T - 1], v, color=f"C{j}")
        ax.axhline(np.log(cfg.task.n_values), color="grey", linestyle=":", label="chance, ln(n_values)")
        ax.axvline(W - 0.5, color="black", linestyle=":", linewidth=1, label=f"window W = {W}")
        last = i == len(cfg.depths) - 1
        plots.finish(
            ax,
            f"{n} layer(s), at T = {T}",
            "distance from query to item (tokens)",
            "answer loss (nats)",
            last,
            True,
        )
    fig.suptitle(f"e07: passkey answer loss against distance (mean ± sd over {cfg.seeds} seeds)")
    plots.save(fig, outs.plot("passkey_loss.png"))


def _stream_parts(cfg, stream) -> dict:
    """Per seed and variant, the mean loss over the stream positions past the training length T."""
    T = cfg.text_model.max_len
    return {v: np.asarray(stream[v])[:, T:].mean(1) for v in VARIANTS}


def _streaming_table(cfg, stream, text) -> Table:
    T, n = cfg.text_model.max_len, cfg.stream_mult * cfg.text_model.max_len
    parts = _stream_parts(cfg, stream)
    early = {v: np.asarray(stream[v])[:, :T].mean(1) for v in VARIANTS}
    t = Table(
        f"Streaming {n} held-out tokens through a model trained at T = {T} with full attention: loss (nats/token)",
        ["attention at run time", f"positions 0..{T - 1}", f"positions {T}..{n - 1}"],
        note=f"Window {cfg.text_window}; sinks {cfg.text_sinks} (positions renumbered inside the cache, as "
        f"StreamingLLM). {cfg.stream_examples} streams, mean ± sd over {cfg.seeds} seeds; the model's final "
        f"validation loss at T: {_fmt(text.final_val_loss)}.",
    )
    names = {"full": "full (no window)", "window": "window only", "sinks": "sinks + window"}
    for v in VARIANTS:
        t.add(names[v], _fmt(early[v]), _fmt(parts[v]))
    return t


def _streaming_plot(cfg, stream, outs) -> None:
    T, n = cfg.text_model.max_len, cfg.stream_mult * cfg.text_model.max_len
    fig, axes = plots.figure(width=7.0)
    ax = axes[0, 0]
    names = {
        "full": "full attention",
        "window": f"window {cfg.text_window}",
        "sinks": f"{cfg.text_sinks} sinks + window {cfg.text_window}",
    }
    for j, v in enumerate(VARIANTS):
        plots.band(ax, np.arange(n), np.asarray(stream[v]), names[v], color=f"C{j}")
    ax.axvline(T, color="black", linestyle=":", linewidth=1, label="training length")
    plots.finish(
        ax,
        f"e07: streaming {cfg.stream_mult}x the training length (mean ± sd over seeds)",
        "position in the stream (tokens)",
        "held-out loss (nats/token)",
    )
    plots.save(fig, outs.plot("streaming.png"))


def _last_slope(lengths, b) -> float:
    """The log-log slope between the last two lengths (context beside the fit over all of them)."""
    return float(np.log(b[-1] / b[-2]) / np.log(lengths[-1] / lengths[-2]))


def _score_buffers(cfg, temp_bytes) -> np.ndarray:
    """Temporary bytes per length in units of one score-sized buffer (batch 1 x heads x T x T float32): how
    many T x T arrays XLA's plan holds at once (the fraction: the T-linear rest)."""
    t = np.asarray(cfg.mem_lengths, np.float64)
    return np.asarray(temp_bytes, np.float64) / (4.0 * cfg.mem_heads * t * t)


def _plain(scaling, mode):
    """The control's temporary bytes of naive attention (YNNPACK fusions off) per length, or None."""
    b = scaling.get("naive_plain_temp_bytes", {}).get(mode)
    return None if not b or any(x is None for x in b) else b


def _naive_mechanism(cfg, scaling, mode) -> str:
    """Computed text: the score-sized buffers XLA's plan holds per length, where that count changes most,
    the slope between the last two lengths, and the control's buffers and slope."""
    L, b = cfg.mem_lengths, scaling["temp_bytes"]["naive"][mode]
    n = _score_buffers(cfg, b)
    step = np.abs(np.diff(n))
    i = int(np.argmax(step))
    last = _last_slope(L, b)
    text = f"score-sized (1 x {cfg.mem_heads} x T x T float32) buffers held at T = {', '.join(map(str, L))}: "
    text += ", ".join(f"{x:.2f}" for x in n)
    if step[i] >= 0.5:
        text += f", the plan changing most between T = {L[i]} and {L[i + 1]} ({n[i]:.2f} -> {n[i + 1]:.2f})"
    text += f"; slope between the last two lengths {last:.3f}"
    ctl = _plain(scaling, mode)
    if ctl is None:
        return text + "; no control without YNNPACK fusions was measured"
    nc = _score_buffers(cfg, ctl)
    text += f"; control compiled without XLA CPU's YNNPACK fusions: {nc.min():.2f}..{nc.max():.2f} buffers, "
    return text + f"slope {_fmt_slope(loglog_slope(L, ctl))} (context, not the verdict)"


def _finding_slopes(cfg, scaling, slopes) -> Finding:
    parts = {k: _slope_verdict(k[0], s) for k, s in slopes.items()}
    ev = "; ".join(f"{m} {mode}: {_fmt_slope(slopes[(m, mode)])} ({parts[(m, mode)]})" for m, mode in slopes)
    # why a naive slope is what it is: the T x T buffers of XLA's plan per length (a plan that changes with T
    # bends the fit; the T-linear rest is the fraction)
    why = [f"naive {mode}: {_naive_mechanism(cfg, scaling, mode)}" for mode in MODES]
    return Finding(
        f"Temporary memory grows as T^{NAIVE_SLOPE:.0f} (slope within ±{SLOPE_MARGIN}) for naive attention "
        f"and at most as T^{LINEAR_SLOPE} for blocked and banded attention, forward and backward",
        headline(list(parts.values())),
        "log-log slope of XLA's temporary bytes against T [95% CI of the fit]: " + ev + ". " + "; ".join(why),
    )


def _finding_window(cfg, summary) -> Finding:
    s, W, T = summary[(1, "window")], cfg.window, cfg.task.seq_len
    inside, beyond = compare_to(s["inside"], INSIDE), compare_to(s["beyond"], s["chance"])
    # a seed whose curve never collapses counts against "collapses at W": its collapse point is past the
    # last distance, T (dropping it would let the other seeds decide alone)
    never = int(np.isnan(s["collapse"]).sum())
    cp = np.where(np.isnan(s["collapse"]), float(T), s["collapse"])
    at_w = compare_to(cp, W)
    parts = [
        inside.verdict("greater"),
        beyond.verdict("equal", CHANCE_MARGIN),
        at_w.verdict("equal", COLLAPSE_MARGIN),
    ]
    return Finding(
        f"A one-layer window-{W} model retrieves items inside its window (>= {INSIDE}) and is at chance beyond "
        f"it; its accuracy collapses at distance W",
        headline(parts),
        f"inside (d < {W}) {_fmt(s['inside'])} (vs {INSIDE}: {inside.fmt()}); beyond {_fmt(s['beyond'])} vs "
        f"chance {s['chance']:.3f} ({beyond.fmt()}; margin {CHANCE_MARGIN}); collapse point "
        f"{summarize(cp).fmt(1)} vs W = {W} ({at_w.fmt()}; margin {COLLAPSE_MARGIN}; {never} of {cp.size} "
        f"seeds never collapse, counted at T = {T})",
    )


def _finding_relay(cfg, summary) -> Finding:
    s, W = summary[(2, "window")], cfg.window
    c = compare_to(s["relay"], s["chance"])
    one = summary[(1, "window")]["relay"]
    return Finding(
        f"Two stacked window-{W} layers relay items from beyond W (distances {W}..{2 * W - 2}, two hops)",
        c.verdict("greater", CHANCE_MARGIN),
        f"two layers {_fmt(s['relay'])} vs chance {s['chance']:.3f} ({c.fmt()}; margin {CHANCE_MARGIN}); one "
        f"layer {_fmt(one)} there; two-layer collapse point {summarize(s['collapse'], why='no collapse').fmt(1)}",
    )


def _finding_full(cfg, summary) -> Finding:
    s = summary[(1, "full")]
    c = compare_to(s["all"], INSIDE)
    return Finding(
        f"One layer of full attention retrieves items at every distance of its training length "
        f"(mean accuracy over the distances >= {INSIDE})",
        c.verdict("greater"),
        f"all d < {cfg.task.seq_len}: {_fmt(s['all'])} (vs {INSIDE}: {c.fmt()}); collapse point "
        f"{summarize(s['collapse'], why='no collapse').fmt(1)}",
    )


def _finding_sink_mask(cfg, summary) -> Finding:
    s, w = summary[(1, "sinks")], summary[(1, "window")]
    c, base = compare_to(s["sink_positions"], s["chance"]), compare(w["sink_positions"], s["sink_positions"])
    return Finding(
        f"Sinks in the training mask make items at the first {cfg.sinks} positions retrievable above chance "
        "from beyond the window",
        headline([c.verdict("greater", CHANCE_MARGIN), base.verdict("greater")]),
        f"items at the sink positions (d >= {cfg.task.seq_len - cfg.sinks}): sinks + window {_fmt(s['sink_positions'])} vs "
        f"chance ({c.fmt()}) and vs window only {_fmt(w['sink_positions'])} ({base.fmt()})",
    )


def _finding_length(cfg, grid) -> Finding:
    """More context at the same distances: one-layer full attention's accuracy on items within the training
    distances (d < T) falls when the sequence is top x T long, while the one-layer window model still
    retrieves inside W (>= INSIDE). Distances never seen in training (d >= T) are reported beside it: they
    measure distance extrapolation, a different question from total context."""
    T, W, top = cfg.task.seq_len, cfg.window, max(cfg.eval_lengths)
    i, j = cfg.eval_lengths.index(1), cfg.eval_lengths.index(top)
    full = grid[(1, "full")]["accuracy"]
    at_t, same_d = full[:, i, : T - 1].mean(1), full[:, j, : T - 1].mean(1)
    far = full[:, j, T - 1 : top * T - 1].mean(1)
    inside = grid[(1, "window")]["accuracy"][:, j, : W - 1].mean(1)
    falls, holds = compare(at_t, same_d, paired_by_seed=True), compare_to(inside, INSIDE)  # same models
    return Finding(
        f"At {top}x the training length, full attention retrieves items at its training distances (d < {T}) "
        f"less well, while a window model still retrieves inside its window ({cfg.model.position} positions)",
        headline([falls.verdict("less"), holds.verdict("greater")]),
        f"one-layer full attention, mean accuracy over d < {T}: {_fmt(at_t)} in sequences of {T} vs "
        f"{_fmt(same_d)} in sequences of {top * T} ({top * T} minus {T}: {falls.fmt()}); at the unseen distances {T}..{top * T - 1}: "
        f"{_fmt(far)}; one-layer window, d < {W} at {top * T}: {_fmt(inside)} (vs {INSIDE}: {holds.fmt()})",
    )


def _finding_streaming(cfg, stream) -> Finding:
    p = _stream_parts(cfg, stream)
    c = compare(p["window"], p["sinks"], paired_by_seed=True)  # each seed's model on the same streams
    T = cfg.text_model.max_len
    return Finding(
        f"Streaming at {cfg.stream_mult}x the training length, sinks + window keep the loss of a full-attention "
        "model lower than the window alone",
        c.verdict("less"),
        f"held-out loss at positions {T}..{cfg.stream_mult * T - 1}: sinks + window {_fmt(p['sinks'])} vs window "
        f"only {_fmt(p['window'])} (sinks minus window, paired by seed: {c.fmt()}); full attention past T "
        f"{_fmt(p['full'])}",
    )


EXPERIMENT = Experiment(
    name="e07_long_context",
    title="Long context: sliding windows, linear-memory exact attention, sinks, where context collapses",
    claim="Long context is not long memory: blocked and banded attention make memory linear in length, but "
    "a window-W model retrieves only within W (more with stacked layers), and a full-attention model "
    "streams past its training length only with attention sinks.",
    config_class=E07Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    set_per_run={
        "model.n_layers": "depths",
        "text_model.vocab_size": "its tokenizer (data.bpe_vocab_size for BPE)",
        "model.max_len": "the task (task.seq_len)",
        **{
            f"model.{k}": "the variant (full attention; window and sinks)"
            for k in ("attention", "window", "sinks")
        },
        **{
            f"text_model.{k}": "the variant (full attention; text_window, text_sinks)"
            for k in ("attention", "window", "sinks")
        },
    },
    check=lambda cfg: text_lm(cfg.data, cfg.text_model).check(),
)
