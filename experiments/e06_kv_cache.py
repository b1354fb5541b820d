"""Project 6: "KV cache trades memory for massive speedups" — a fixed-shape KV cache, measured.

Claim tested: keeping every layer's keys and values (lab.ops.kv_cache) instead of recomputing the whole
prefix for each new token makes generation much faster, at the price of cache memory that grows as
2 * layers * batch * kv_heads * head_dim * length * bytes, while producing exactly the same tokens.

Measured with random weights (speed and memory do not depend on their values; the seeds vary them for the
exactness check, and every timing is a mean ± sd over one repeat per seed):
  1. tokens/s of `generate_cached` (prefill + lax.scan decode) vs the uncached `generate` (the whole buffer
     recomputed every step) vs length and batch; uncached only where batch * length <= uncached_max_tokens;
  2. time per token against position t: one cached decode step (a fixed-shape cache) vs one forward over
     the t tokens so far (a cacheless step at t); the median of `position_calls` single calls per repeat;
  3. cache bytes against length and batch: the arrays' measured sizes vs the formula;
  4. a hit/miss timeline: which K/V rows each decode step computes, reads or has evicted, with a full cache,
     a sliding-window cache (a ring buffer) and none, from the caches' slot positions (lab.infer.cache_trace).

Run:      lab run e06 [--preset smoke|cpu|gpu] [--set lengths=[64,256]] [--seeds 3]
Redraw:   lab analyze e06
Writes:   results/e06_kv_cache/   (runs/*.json: lab.runs measurement files, with the config and commit)
  runs/generation.json   per (method, batch, length): seconds per repeat, compile seconds, token equality
  runs/positions.json    per position: seconds per cached step and per uncached forward, per repeat
  runs/memory.json       measured and formula cache bytes per (batch, length), parameter bytes
  runs/timeline.json     slot positions of the full and sliding-window caches before/after each step
  plots/*.png, tables/*.md, findings.json
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, beside, compare, compare_to, headline, summarize
from lab.config import check, check_at_least, check_causal, check_distinct
from lab.data.pipeline import DataConfig, text_lm
from lab.errors import DataError
from lab.experiment import Experiment
from lab.infer import cache_trace as ct
from lab.infer import generate, generate_cached
from lab.infer.timing import timed, token_seconds
from lab.model import PRESETS, ModelConfig, init, param_count
from lab.model.flops import forward_flops_per_token
from lab.model.transformer import cache_memory
from lab.progress import Work
from lab.runs import read_measurement, write_measurement
from lab.viz import plots

MIN_SPEEDUP = 5.0  # the target at long generations: "massive" means at least this on CPU
# "Flat": the per-token time at the last position within this factor of the first (either way), fixed with the
# claim before measuring (the pre-foundation rule's threshold); compared as ln(time), margin ln(FLAT_RATIO).
FLAT_RATIO = 1.5


@dataclass(frozen=True)
class E06Config:
    model: ModelConfig = PRESETS["cpu"].replace(max_len=1040)
    data: DataConfig = DataConfig()  # the prompt is the start of its validation split
    prompt_len: int = 16
    lengths: tuple[int, ...] = (64, 128, 256, 512, 1024)  # generated tokens
    batches: tuple[int, ...] = (1, 8)
    uncached_max_tokens: int = 2048  # run the uncached baseline only where batch * length <= this
    positions: tuple[int, ...] = (64, 128, 256, 512, 1024)  # per-token timing positions
    position_calls: int = 30  # single calls per per-token timing (their median is recorded)
    window: int = 12  # sliding-window cache of the timeline
    timeline_steps: int = 40  # decode steps shown in the timeline
    seeds: int = 3

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "prompt_len", "lengths", "batches", "positions", "position_calls")
        check_distinct(self, "lengths", "batches", "positions")
        check_at_least(self, 0, "uncached_max_tokens")
        check_at_least(self, 2, "timeline_steps")
        check_causal(self.model, "e06 decodes autoregressively")
        m, longest = self.model, self.prompt_len + max(self.lengths)
        need = max(longest, self.prompt_len + self.timeline_steps)
        msg = f"model.max_len ({m.max_len}) must be >= prompt_len + max(max(lengths), timeline_steps)"
        check(m.position != "learned" or m.max_len >= need, msg + f" = {need} (learned positions)")
        msg = f"positions must be <= prompt_len + max(lengths) = {longest}, got {max(self.positions)}"
        check(max(self.positions) <= longest, msg)
        msg = f"window must be in [1, prompt_len + timeline_steps) so that it evicts, got {self.window}"
        check(1 <= self.window < self.prompt_len + self.timeline_steps, msg)


# fmt: off
PRESET_TABLE = {
    "smoke": E06Config(model=PRESETS["smoke"].replace(max_len=40), prompt_len=8, lengths=(24,),
                       batches=(1, 2), uncached_max_tokens=64, positions=(8, 32), position_calls=3,
                       window=4, timeline_steps=12),
    "cpu": E06Config(),
    "gpu": E06Config(model=PRESETS["gpu"].replace(max_len=4160), data=DataConfig(name="pystdlib"),
                     prompt_len=64, lengths=(64, 256, 1024, 4096), batches=(1, 32),
                     uncached_max_tokens=32 * 1024, positions=(64, 256, 1024, 4096), position_calls=20,
                     window=32, timeline_steps=96),
}
# fmt: on


def _model(cfg: E06Config) -> tuple[ModelConfig, np.ndarray]:
    """(model config with the data's vocabulary, (prompt_len,) prompt ids from the validation split)."""
    lm = text_lm(cfg.data, cfg.model)
    if lm.text.val.shape[0] < cfg.prompt_len:
        raise DataError(f"the validation split has {lm.text.val.shape[0]} tokens, fewer than prompt_len")
    return lm.model, lm.text.val[: cfg.prompt_len].astype(np.int32)


# --- run: measurements, written to runs/*.json -------------------------------------------------------------
def run(cfg: E06Config, out: Path, opts) -> None:
    model, prompt = _model(cfg)
    params = [init(model, jax.random.PRNGKey(s)) for s in range(cfg.seeds)]
    measure = {"generation": _generation, "positions": _positions, "memory": _memory, "timeline": _timeline}
    with Work(_expected_seconds(cfg, model), "e06", opts.progress) as work:
        for name, fn in measure.items():
            work.label(name)
            write_measurement(out / "runs" / f"{name}.json", fn(cfg, model, params, prompt, work), cfg)


def _methods(cfg, b: int, n: int):
    """(name, generate function) of the methods timed at batch b and length n: the uncached baseline only
    where b * n <= uncached_max_tokens (where it is affordable)."""
    yield "cached", generate_cached
    if b * n <= cfg.uncached_max_tokens:
        yield "uncached", generate


def _generation(cfg, model, params, prompt, work) -> dict:
    rows = []
    for b, n in ((b, n) for b in cfg.batches for n in cfg.lengths):
        x, toks = jnp.asarray(np.tile(prompt, (b, 1))), {}
        for name, gen in _methods(cfg, b, n):
            fn = functools.partial(gen, model, prompt_BP=x, n_new=n)  # fn(params) -> tokens
            work.label(f"{name} generation, batch {b}, {n} tokens")
            call_s = _call_seconds(model, name, b, cfg.prompt_len, n)  # expected, for the bar
            first_s = _compile_seconds(name) + call_s
            compile_s = work.done(first_s, timed(lambda fn=fn: fn(params[0])))[0]  # first call: compile + run
            runs = [work.done(call_s, timed(lambda fn=fn, p=p: fn(p))) for p in params]  # one per seed
            toks[name] = [y for _, y in runs]
            row = {"method": name, "batch": b, "n_new": n, "seconds": [s for s, _ in runs]}
            rows.append(row | {"first_call_seconds": compile_s})
        if "uncached" in toks:
            same = [bool(np.array_equal(a, c)) for a, c in zip(toks["cached"], toks["uncached"])]
            rows[-1]["tokens_equal_cached"] = rows[-2]["tokens_equal_cached"] = same
    return {"prompt_len": cfg.prompt_len, "rows": rows}


def _positions(cfg, model, params, prompt, work) -> dict:
    """Seconds for the token at position t: one cached decode step, and one forward over t tokens."""
    size, cached, uncached = cfg.prompt_len + max(cfg.lengths), {}, {}
    for t in cfg.positions:
        work.label(f"time per token at position {t}")
        c, u = token_seconds(model, params, prompt, (t,), size, cfg.position_calls)
        cached, uncached = cached | c, uncached | u
        work.done(_position_seconds(cfg, model, t))
    return {"cache_size": size, "cached": cached, "uncached": uncached, "calls": cfg.position_calls}


def _memory(cfg, model, params, _prompt, work) -> dict:
    lengths = sorted({cfg.prompt_len + n for n in cfg.lengths})
    rows = [{"batch": b, "length": n} | cache_memory(model, b, n) for b in cfg.batches for n in lengths]
    shape = {"layers": model.n_layers, "kv_heads": model.kv_heads, "head_dim": model.head_dim}
    itemsize = jnp.dtype(model.dtype).itemsize
    work.done(MEMORY_S)
    return {"rows": rows, "param_bytes": 4 * param_count(params[0]), **shape, "bytes_per_element": itemsize}


def _timeline(cfg, model, params, prompt, work) -> dict:
    """Greedy decoding (the first seed's weights) with a full and with a sliding-window cache, recording
    each cache's slot positions (which K/V rows it holds) before and after every step."""
    out = {"prompt_len": cfg.prompt_len, "steps": cfg.timeline_steps, "window": cfg.window, "caches": {}}
    for kind, window in (("full", None), ("sliding", cfg.window)):
        steps = ct.slot_trace(model, params[0], prompt, cfg.timeline_steps, window)
        out["caches"][kind] = {"window": window, "slots": len(steps[-1]["after"]), "steps": steps}
        work.done(_trace_seconds(cfg))
    return out


# --- run: what each piece of it is expected to cost, for the progress bar's ETA only -----------------------
# Seconds on the 2-core CPU the cpu preset is sized for (fitted to runs of it); results never use these.
COMPILE_S = 0.7  # compiling one program: an uncached generation, a forward over t tokens, a decode step
CACHED_COMPILE_S = 1.5  # compiling a cached generation (its prefill and its lax.scan of decode steps)
CALL_S = 4e-4  # the fixed cost of one small call (dispatch, a fresh cache)
FORWARD_FLOPS = 4e10  # FLOP/s of forward passes over whole sequences
DECODE_FLOPS = 6e9  # FLOP/s of cached decode steps (one token per sequence: bound by overheads)
MEMORY_S = 0.5  # allocating the caches whose bytes are counted


def _compile_seconds(method: str) -> float:
    return CACHED_COMPILE_S if method == "cached" else COMPILE_S


def _call_seconds(model, method: str, b: int, p: int, n: int) -> float:
    """One generation call of n tokens at batch b after a p-token prompt: n forwards over the whole buffer
    of p + n positions without a cache; n decode steps attending over p + n cache slots with one."""
    per_token = forward_flops_per_token(model, p + n)
    if method == "uncached":
        return n * b * (p + n) * per_token / FORWARD_FLOPS
    return n * b * per_token / DECODE_FLOPS  # the steps are one lax.scan: no per-step call


def _position_seconds(cfg, model, t: int) -> float:
    """Timing position t: compiling a forward over t tokens (and at the first position the decode step),
    then per seed `position_calls` cached decode steps over the whole cache (and their fresh caches) and as
    many forwards over t tokens."""
    step = 2 * CALL_S + forward_flops_per_token(model, cfg.prompt_len + max(cfg.lengths)) / DECODE_FLOPS
    forward = CALL_S + t * forward_flops_per_token(model, t) / FORWARD_FLOPS
    compiles = 2 if t == cfg.positions[0] else 1
    return compiles * COMPILE_S + cfg.seeds * cfg.position_calls * (step + forward)


def _trace_seconds(cfg) -> float:
    """One slot trace: compiling its prefill and decode step, then `timeline_steps` steps read back."""
    return 2 * COMPILE_S + cfg.timeline_steps * CALL_S


def _expected_seconds(cfg, model) -> float:
    """The expected cost of all of `run`'s pieces: the sum of what `run` counts as each is done."""
    gen = sum(
        _compile_seconds(name) + (1 + cfg.seeds) * _call_seconds(model, name, b, cfg.prompt_len, n)
        for b in cfg.batches
        for n in cfg.lengths
        for name, _ in _methods(cfg, b, n)
    )
    pos = sum(_position_seconds(cfg, model, t) for t in cfg.positions)
    return gen + pos + MEMORY_S + 2 * _trace_seconds(cfg)


# --- analysis: reads runs/*.json only ----------------------------------------------------------------------
def _generation_data(gen: dict) -> dict:
    """tokens/s per repeat per (method, batch, length); where both ran, per (batch, length): the speedup per
    repeat (time without / with, the same seed's weights) and whether the tokens were the same."""
    by = {(r["method"], r["batch"], r["n_new"]): r for r in gen["rows"]}
    d = {"tps": {k: np.array([k[1] * k[2] / s for s in r["seconds"]]) for k, r in by.items()}}
    uncached = {(b, n): np.array(r["seconds"]) for (m, b, n), r in by.items() if m == "uncached"}
    d["speedup"] = {k: s / np.array(by[("cached", *k)]["seconds"]) for k, s in uncached.items()}
    d["same"] = {(b, n): by[("cached", b, n)]["tokens_equal_cached"] for b, n in d["speedup"]}
    return d


def _throughput(cfg: E06Config, prompt_len: int, d: dict, outs: Outputs) -> None:
    tps, speedup = d["tps"], d["speedup"]
    fig, axes = plots.figure(ncols=2, width=5.5)
    for b, (method, style) in ((b, ms) for b in cfg.batches for ms in (("cached", "-"), ("uncached", "--"))):
        if ns := [n for n in cfg.lengths if (method, b, n) in tps]:
            label = f"{'with' if method == 'cached' else 'without'} cache, batch {b}"
            plots.points(axes[0, 0], ns, [tps[(method, b, n)] for n in ns], label, linestyle=style)
    plots.log_axes(axes[0, 0], 2)
    title = "e06: generation throughput (mean ± sd over repeats)"
    plots.finish(axes[0, 0], title, "generated tokens", "tokens/s (log)")
    title = f"Generation throughput (prompt {prompt_len} tokens; mean ± sd over {cfg.seeds} repeats)"
    cols = ["batch", "generated", "with cache (tok/s)", "without cache (tok/s)", "speedup", "same tokens"]
    t = Table(title, cols)
    for b in cfg.batches:
        for n in cfg.lengths:
            row, same = ["not run", "", ""], d["same"].get((b, n), [])
            if (b, n) in speedup:
                row = [summarize(tps[("uncached", b, n)]).fmt(0), summarize(speedup[(b, n)]).fmt(1) + "×"]
                row.append(f"{sum(same)}/{len(same)}")
            t.add(b, n, summarize(tps[("cached", b, n)]).fmt(0), *row)
        if ns := [n for n in cfg.lengths if (b, n) in speedup]:
            plots.points(axes[0, 1], ns, [speedup[(b, n)] for n in ns], f"batch {b}")
    axes[0, 1].axhline(MIN_SPEEDUP, color="grey", linestyle=":", label=f"{MIN_SPEEDUP:g}× target")
    plots.log_axes(axes[0, 1], 2)
    title = "e06: speedup of the KV cache (time without / with)"
    plots.finish(axes[0, 1], title, "generated tokens", "speedup (×, log)")
    plots.save(fig, outs.plot("throughput.png"))
    outs.table("throughput.md", t)


def _exact_finding(d: dict) -> Finding:
    equal = [x for same in d["same"].values() for x in same]
    verdict = "supported" if equal and all(equal) else ("refuted" if equal else "inconclusive")
    ev = f"greedy tokens identical in {sum(equal)}/{len(equal)} (batch, length, seed) runs where both were "
    ev += "run (the test suite also checks sampling, GQA and logits to 1e-5)"
    return Finding("Cached generation produces exactly the tokens of full recomputation", verdict, ev)


def _speed_finding(cfg: E06Config, d: dict) -> Finding:
    """Per batch: the speedup at the longest length compared is above MIN_SPEEDUP, and above the speedup at
    the shortest (where more than one length was compared)."""
    ev, parts = [], []
    for b in cfg.batches:
        if not (ns := sorted(n for (bb, n) in d["speedup"] if bb == b)):
            continue
        lo, hi = d["speedup"][(b, ns[0])], d["speedup"][(b, ns[-1])]
        tests = [(f"against {MIN_SPEEDUP:g}×", compare_to(hi, MIN_SPEEDUP))]
        tests += [("longest against shortest", compare(lo, hi))] if len(ns) > 1 else []
        parts += [c.verdict("greater") for _, c in tests]
        at = f"{summarize(lo).fmt(1)}× at {ns[0]} tokens, {summarize(hi).fmt(1)}× at {ns[-1]} tokens"
        ev.append(f"batch {b}: {at} ({'; '.join(f'{k}: {c.fmt(1)}' for k, c in tests)})")
    b, n = cfg.batches[0], max(cfg.lengths)
    tps = summarize(d["tps"][("cached", b, n)]).fmt(0)
    ev.append(f"with the cache, batch {b} still makes {tps} tok/s at {n} tokens")
    claim = f"The cache speeds generation up by at least {MIN_SPEEDUP:g}× at long lengths, more the longer"
    return Finding(claim, headline(parts), "; ".join(ev))


def _position_finding(pos: dict, outs: Outputs) -> Finding:
    """Per-token time from the first position to the last: within FLAT_RATIO either way with the cache
    (compared as ln(time)), growing without it (the CI of ln(time) above 0 and not inside ±ln FLAT_RATIO)."""
    ts = sorted(int(t) for t in pos["cached"])
    cached_ms, uncached_ms = ([1e3 * np.array(pos[k][str(t)]) for t in ts] for k in ("cached", "uncached"))
    fig, axes = plots.figure()
    ax = axes[0, 0]
    plots.points(ax, ts, cached_ms, f"with cache: one decode step (cache of {pos['cache_size']} slots)")
    plots.points(ax, ts, uncached_ms, "without cache: one forward over the t tokens so far")
    plots.log_axes(ax, 2)
    title = "e06: time for the token at position t (batch 1, median of calls, mean ± sd over repeats)"
    plots.finish(ax, title, "position t (tokens)", "ms per token (log)")
    plots.save(fig, outs.plot("time_per_position.png"))
    c0, c1, u0, u1 = (summarize(x[i]) for x in (cached_ms, uncached_ms) for i in (0, -1))
    flat, grows = (compare(np.log(x[0]), np.log(x[-1])) for x in (cached_ms, uncached_ms))  # last vs first
    m = math.log(FLAT_RATIO)
    verdict = headline([flat.verdict("equal", m), grows.verdict("greater", m)])
    ev = f"from position {ts[0]} to {ts[-1]} ({ts[-1] / ts[0]:.0f}× longer): with cache {c0.fmt(3)} → "
    ev += f"{c1.fmt(3)} ms ({c1.mean / c0.mean:.2f}×; the fixed-shape cache attends over all "
    ev += f"{pos['cache_size']} slots, masked, whatever the position), without {u0.fmt(3)} → {u1.fmt(3)} ms "
    ev += f"({u1.mean / u0.mean:.1f}×); ln(time) last minus first, with cache {flat.fmt()} (flat would be "
    ev += f"inside ±ln {FLAT_RATIO:g}: {flat.verdict('equal', m)}), without {grows.fmt()} (growing would be "
    ev += f"above 0 and not inside ±ln {FLAT_RATIO:g}: {grows.verdict('greater', m)})"
    return Finding("Per-token time is flat with the cache and grows with position without it", verdict, ev)


def _memory_finding(cfg: E06Config, mem: dict, outs: Outputs) -> Finding:
    rows, params = mem["rows"], mem["param_bytes"]
    fig, axes = plots.figure()
    ax = axes[0, 0]
    for b in cfg.batches:
        r = [x for x in rows if x["batch"] == b]
        lens = [x["length"] for x in r]
        ax.plot(lens, [x["formula_bytes"] / 2**20 for x in r], linestyle="-", label=f"formula, batch {b}")
        mib = [x["measured_bytes"] / 2**20 for x in r]
        ax.plot(lens, mib, linestyle="none", marker="o", label=f"measured arrays, batch {b}")
    ax.axhline(params / 2**20, color="grey", linestyle=":", label="model parameters")
    plots.log_axes(ax, 2)
    plots.finish(ax, "e06: KV-cache memory vs sequence length", "cached positions (tokens)", "MiB (log)")
    plots.save(fig, outs.plot("memory.png"))
    title = f"KV-cache bytes (2 × {mem['layers']} layers × batch × {mem['kv_heads']} kv heads × "
    title += f"{mem['head_dim']} head dim × length × {mem['bytes_per_element']} bytes)"
    cols = ["batch", "length", "formula", "measured", "+ pos/length bookkeeping", "× parameter bytes"]
    t = Table(title, cols)
    for x in rows:
        nums = (x["formula_bytes"], x["measured_bytes"], x["bookkeeping_bytes"])
        t.add(x["batch"], x["length"], *(f"{v:,}" for v in nums), f"{x['measured_bytes'] / params:.2f}")
    outs.table("memory.md", t)
    same = sum(x["measured_bytes"] == x["formula_bytes"] for x in rows)
    big = max(rows, key=lambda x: x["measured_bytes"])
    ev = f"measured array bytes equal the formula in {same}/{len(rows)} (batch, length) cases; at batch "
    ev += f"{big['batch']} and {big['length']} positions the cache holds {big['measured_bytes'] / 2**20:.2f} "
    ev += f"MiB, {big['measured_bytes'] / params:.1f}× the model's {params / 2**20:.2f} MiB of parameters"
    claim = "Cache memory is 2 · layers · batch · kv_heads · head_dim · length · bytes, linear in length"
    return Finding(claim, "supported" if same == len(rows) else "refuted", ev)


def _timeline_finding(tl: dict, outs: Outputs) -> Finding:
    p, n, w = tl["prompt_len"], tl["steps"], tl["window"]
    grids = {
        "no cache": ct.recompute_states(p, n),
        "full cache": ct.slot_states(tl["caches"]["full"]["steps"], p + n, None),
        f"sliding window, W={w}": ct.slot_states(tl["caches"]["sliding"]["steps"], p + n, w),
    }
    count = lambda g, state: int((g == state).sum())  # cells of `g` in `state`
    titled = {f"{name}: {count(g, ct.COMPUTED)} K/V rows computed": g for name, g in grids.items()}
    colors = ["#d62728", "#2ca02c", "#7f7f7f", "#ffffff"]  # of the states ct.COMPUTED, READ, EVICTED, NOT_YET
    xy = "position of the K/V row (tokens)", "decode step (0 = prefill)"
    fig = plots.category_maps(titled, colors, ct.STATE_NAMES, *xy, width=4.2, height=4.2)
    fig.suptitle("e06: which K/V rows each decode step computes and which it reads from the cache")
    plots.save(fig, outs.plot("cache_timeline.png"))
    none, full, slide = grids.values()
    reads = count(slide[-1], ct.READ)
    ev = f"over {n} steps after a {p}-token prompt: no cache computes {count(none, ct.COMPUTED)} K/V rows, "
    ev += f"a full cache {count(full, ct.COMPUTED)} (each once) and reads {count(full[-1], ct.READ)} at the "
    ev += f"last step; the window-{w} ring reads {reads} at the last step and has evicted "
    ev += f"{count(slide[-1], ct.EVICTED)} rows, holding {tl['caches']['sliding']['slots']} slots instead of "
    ev += f"{tl['caches']['full']['slots']}"
    claim = "A sliding-window cache bounds memory at W rows by evicting the oldest"
    return Finding(claim, "supported" if reads <= w - 1 else "refuted", ev)


def analyze(cfg: E06Config, out: Path):
    outs, runs = Outputs(out), out / "runs"
    names = ("generation", "positions", "memory", "timeline")
    gen, pos, mem, tl = (read_measurement(runs / f"{k}.json", cfg) for k in names)
    d = _generation_data(gen)
    _throughput(cfg, gen["prompt_len"], d, outs)
    findings = [_exact_finding(d), _speed_finding(cfg, d), _position_finding(pos, outs)]
    findings += [_memory_finding(cfg, mem, outs), _timeline_finding(tl, outs)]
    b0, params = cfg.batches[0], mem["param_bytes"]
    big = max(mem["rows"], key=lambda x: x["measured_bytes"])
    n = max((n for (b, n) in d["speedup"] if b == b0), default=None)  # the longest generation compared
    sp = f"{summarize(d['speedup'][(b0, n)]).fmt(1)}× at {n} generated tokens (batch {b0})" if n else "n/a"
    exact, speed, flat, memory = findings[:4]
    ts = sorted(int(t) for t in pos["cached"])
    per_token = {
        k: np.mean(pos[k][str(ts[-1])]) / np.mean(pos[k][str(ts[0])]) for k in ("cached", "uncached")
    }
    summary = f"The cache made generation {sp} ({speed.verdict}); its tokens equal recomputation's "
    summary += f"({exact.verdict}). It computes each position's keys and values once; the price is memory "
    summary += f"({memory.verdict} against the formula, linear in length and batch): "
    summary += f"{big['measured_bytes'] / 2**20:.2f} MiB at batch {big['batch']} × {big['length']} "
    summary += f"positions, {big['measured_bytes'] / params:.1f}× the parameters. From position {ts[0]} to "
    summary += (
        f"{ts[-1]} ({ts[-1] / ts[0]:.0f}× longer) one token's time changed {per_token['uncached']:.1f}× "
    )
    summary += (
        f"without the cache (growth exponent {np.log(per_token['uncached']) / np.log(ts[-1] / ts[0]):.2f}) "
    )
    summary += f"and {per_token['cached']:.2f}× with it, whose fixed shape pays for all slots at every step "
    summary += f"(flat with the cache and growing without: {flat.verdict})."
    # The sliding window (findings[4]) is a variant beside the claim, which is about the full cache.
    return outs.findings(headline(findings[:4]), summary, [*findings[:4], *map(beside, findings[4:])])


EXPERIMENT = Experiment(
    name="e06_kv_cache",
    title="KV cache: exact, fast, and paid for in memory",
    claim="A KV cache trades memory for massive speedups.",
    config_class=E06Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=_model,  # refuses a validation split shorter than the prompt before anything runs
)
