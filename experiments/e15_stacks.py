"""Project 15: "Infrastructure choices shape model behaviour" — one trained checkpoint in seven stacks.

Claims tested (goals of the issue, each decided by the one rule over seeds from the measured numbers):
  1. at float32, PyTorch (eager) and ONNX Runtime compute the JAX model's logits within 1e-4 (max |Δ| over
     every position and vocabulary entry, against JAX jit, per seed);
  2. every stack's 64-token greedy continuation is identical to the float64 reference's (the fraction of
     (stack, prompt) continuations that differ is 0 within a margin of 1%, per seed).
A small causal LM (lab.model) is trained per seed through the one training driver on the real-text corpus of
the other LM experiments; its Orbax checkpoint is restored and the same parameters run, each port a pure
function of them (lab.port), in: JAX (jit), JAX (no jit: op by op), NumPy float64 (the reference,
lab.port.numpy_ref), PyTorch eager (a module written from our config, with its own KV cache), torch.compile
(inductor, dynamic shapes), ONNX Runtime (the PyTorch module through torch.onnx.export) and exported StableHLO
(jax.export, serialized, reloaded from the bytes; seed 0's file also run in a fresh process). Parity: on
`prompts` held-out windows, each stack's logits against float64 (max |Δ|, KL, top-1 agreement) and against
JAX jit, then greedy continuations of `new_tokens` from their first `prompt_len` tokens; where one diverges,
the token index and the reference's top-1 / top-2 logit margin there (a margin below the stack's logit error
is a near-tie decided by roundoff: summation order, fused kernels). JAX runs with float32 matmuls
("highest" precision: on a GPU the default would use TF32); PyTorch and ONNX Runtime run on the CPU.
Profile (seed 0's model, one process, so ratios to JAX jit compare like with like): prefill latency and
throughput at `lengths` x `batches`, per-token decode latency at the longest length (with a KV cache where
the stack has one: lab.model's for JAX jit and op by op, the port's own for PyTorch eager and torch.compile;
NumPy, ONNX Runtime and StableHLO recompute the whole sequence), compile or load time, and the peak bytes one prefill call allocates, each stack by its own
allocator's accounting (lab.port.memory: tracemalloc for NumPy, XLA's compiled memory analysis for JAX jit and
StableHLO, which on a GPU is device memory, torch.profiler's allocator events for PyTorch; "n/a" for JAX
without jit and ONNX Runtime, which expose none).

Run:      lab run e15 [--preset smoke|cpu|gpu] [--set stacks=jax_jit,numpy_f64,torch_eager] [--seeds 3]
Redraw:   lab analyze e15
Writes:   results/e15_stacks/
  runs/model/           the training sweep (config.json, metrics.jsonl, checkpoints/)
  runs/parity.json      per stack, per seed: max |Δ| vs float64 and vs JAX jit, KL, top-1, greedy results
  runs/profile.json     seed 0: per stack and shape, latencies, throughput, compile/load time, memory
  runs/export/          seed 0's model.onnx and model.stablehlo (file sizes in the table)
  plots/parity.png, plots/profile.png, tables/parity.md, tables/profile.md, findings.json
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, compare_to, headline, summarize
from lab.config import check, check_at_least
from lab.data.pipeline import DataConfig, text_lm
from lab.errors import ConfigError
from lab.experiment import Experiment
from lab.model import PRESETS, ModelConfig, apply, apply_cached, init_cache
from lab.port import STACKS, missing, numpy_ref, parity
from lab.port import memory as port_mem
from lab.port import stablehlo as port_hlo
from lab.quant import export as qexport
from lab.runs import load_run, read_measurement, write_measurement
from lab.train import SweepSpec, TrainConfig, members_grid
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import sweep_params, train_sweeps
from lab.viz import plots

CLAIM = "At float32 every stack computes the same model: logits within 1e-4 and identical greedy text."
TOL = 1e-4  # the goal: PyTorch and ONNX Runtime within 1e-4 of JAX at float32
GREEDY_MARGIN = 0.01  # "identical" = the fraction of differing continuations is 0 within 1%
GOAL_STACKS = ("torch_eager", "onnxruntime")


@dataclass(frozen=True)
class E15Config:
    model: ModelConfig = PRESETS["cpu"].replace(max_len=80)  # prompt_len + new_tokens
    train: TrainConfig = TrainConfig(steps=200, lr=3e-3, warmup_steps=20, eval_every=100, ckpt_every=200)
    data: DataConfig = DataConfig()
    seeds: int = 3
    stacks: tuple[str, ...] = tuple(STACKS)
    prompts: int = 4  # held-out windows: parity logits on all prompt_len + new_tokens positions
    prompt_len: int = 16
    new_tokens: int = 64  # greedy continuation length
    # profile shapes; (prompts, prompt_len + new_tokens) among them reuses what parity compiled
    lengths: tuple[int, ...] = (16, 48, 80)  # profile: sequence lengths
    # profile: batch sizes. Not 1: torch.compile(dynamic=True) specializes size-1 dimensions, and the recompile
    # costs a minute of inductor on 2 cores
    batches: tuple[int, ...] = (2, 4, 8)
    repeats: int = 5  # timed calls per measurement (the median is reported)

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "prompts", "prompt_len", "new_tokens", "repeats")
        bad = [s for s in self.stacks if s not in STACKS]
        check(not bad, f"stacks: {bad} unknown; allowed: {', '.join(STACKS)}")
        check(len(set(self.stacks)) == len(self.stacks), f"stacks: {list(self.stacks)} lists one twice")
        for need in ("jax_jit", "numpy_f64"):
            check(need in self.stacks, f"stacks must include {need} (every stack is compared with it)")
        total = self.prompt_len + self.new_tokens
        check(
            total <= self.model.max_len,
            f"prompt_len + new_tokens = {total} exceeds model.max_len={self.model.max_len}",
        )
        check(len(self.lengths) > 0 and len(self.batches) > 0, "lengths and batches must not be empty")
        check(
            all(1 <= t <= self.model.max_len for t in self.lengths),
            f"lengths must be in 1..model.max_len={self.model.max_len}, got {list(self.lengths)}",
        )
        check(all(b >= 1 for b in self.batches), f"batches must be >= 1, got {list(self.batches)}")
        numpy_ref.check_supported(self.model)
        check(self.model.mask == "causal", f"model.mask must be 'causal', got {self.model.mask!r}")
        check(
            self.model.dtype == "float32",
            f"model.dtype must be 'float32' (parity is measured at float32; the ports compute float32), "
            f"got {self.model.dtype!r}",
        )


# fmt: off
PRESET_TABLE = {
    # torch.compile is left out of smoke: its first compile (inductor, C++) takes 15-80 s on 2 cores, past
    # the test budget; tests/port covers the port it compiles, and the cpu preset runs it.
    "smoke": E15Config(model=PRESETS["smoke"], train=TRAIN_PRESETS["smoke"].replace(ckpt_every=20), seeds=2,
                       stacks=tuple(s for s in STACKS if s != "torch_compile"), prompts=2, prompt_len=4,
                       new_tokens=12, lengths=(16,), batches=(2,), repeats=2),
    "cpu": E15Config(),
    "gpu": E15Config(model=PRESETS["gpu"].replace(dtype="float32", max_len=128), train=TRAIN_PRESETS["gpu"],
                     data=DataConfig(name="pystdlib"), prompts=8, lengths=(16, 80, 128), batches=(2, 8, 32)),
}
# fmt: on


def check_config(cfg: E15Config) -> None:
    text_lm(cfg.data, cfg.model).check()
    for s in cfg.stacks:
        if why := missing(s):
            raise ConfigError(why)


# --- run: every computation with a model, written to files ---------------------------------------------------
def _windows(stream, t: int, n: int) -> np.ndarray:
    check(stream.size >= t + n, f"the text has {stream.size} tokens; {n} windows of {t} need more")
    starts = np.linspace(0, stream.size - t, n).astype(np.int64)
    return np.asarray(stream, np.int64)[starts[:, None] + np.arange(t)[None, :]]


def _seconds(fn, repeats: int) -> float:
    """The median wall time of `repeats` calls of `fn` (after the caller's warm-up), results made ready."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


class _Stacks:
    """Each stack's forward (tokens (B, T) int64 -> logits NumPy) for one seed's parameters, built lazily;
    `load_s` records what building it cost (compilation happens at the first call and is timed there)."""

    def __init__(self, cfg: E15Config, params32: dict, folder: Path | None):
        self.cfg, self.p, self.folder = cfg, params32, folder
        self.jp = jax.tree_util.tree_map(jnp.asarray, params32)
        self._jit = jax.jit(apply, static_argnums=0)
        self.load_s, self.files = {}, {}
        self._torch = self._compiled = self._sess = None
        self._hlo, self._blobs = {}, {}

    def forward(self, stack: str, tokens):
        m = self.cfg.model
        if stack == "numpy_f64":
            return numpy_ref.forward(m, self.p, tokens)
        if stack == "jax_jit":
            return np.asarray(self._jit(m, self.jp, jnp.asarray(tokens, jnp.int32)))
        if stack == "jax_nojit":
            with jax.disable_jit():
                return np.asarray(apply(m, self.jp, jnp.asarray(tokens, jnp.int32)))
        if stack == "torch_eager":
            from lab.port import torch_port

            return torch_port.logits(self.torch(), tokens)
        if stack == "torch_compile":
            from lab.port import torch_port

            return torch_port.logits(self.compiled(), tokens)
        if stack == "onnxruntime":
            from lab.port import onnx_port

            return onnx_port.run(self.session(), tokens)
        if stack == "stablehlo":
            return self.hlo(np.shape(tokens))(tokens)
        raise ValueError(stack)

    def torch(self):
        if self._torch is None:
            from lab.port import torch_port

            t0 = time.perf_counter()
            self._torch = torch_port.from_params(self.cfg.model, self.p)
            self.load_s["torch_eager"] = time.perf_counter() - t0
        return self._torch

    def compiled(self):
        if self._compiled is None:
            import torch

            self._compiled = torch.compile(self.torch(), dynamic=True)  # compiles at the first call
        return self._compiled

    def session(self):
        if self._sess is None:
            import tempfile

            from lab.port import onnx_port

            t0 = time.perf_counter()
            if self.folder is None:  # seeds after the first: a scratch file, removed with this object
                self._tmp = tempfile.TemporaryDirectory()
            folder = self.folder or Path(self._tmp.name)
            path = onnx_port.export(self.torch(), folder / "model.onnx", np.zeros((1, 4), np.int64))
            self._sess = onnx_port.session(path)
            self.load_s["onnxruntime"] = time.perf_counter() - t0
            self.files["onnxruntime"] = path
        return self._sess

    def hlo(self, shape):
        """StableHLO is exported for fixed shapes: one module per (B, T), each serialized and reloaded."""
        if shape not in self._hlo:
            t0 = time.perf_counter()
            blob = self._blobs[shape] = port_hlo.export(self.cfg.model, self.p, np.zeros(shape, np.int32))
            self._hlo[shape] = port_hlo.load(blob)
            self.load_s.setdefault("stablehlo", time.perf_counter() - t0)
            if self.folder is not None and "stablehlo" not in self.files:
                path = self.folder / "model.stablehlo"
                path.write_bytes(blob)
                self.files["stablehlo"] = path
        return self._hlo[shape]

    def hlo_blob(self, shape) -> bytes:
        self.hlo(shape)
        return self._blobs[shape]

    def greedy(self, stack: str, prompt, n: int):
        if stack == "numpy_f64":
            return numpy_ref.greedy(self.cfg.model, self.p, prompt, n)
        if stack == "torch_eager":  # through the port's own KV cache
            from lab.port import torch_port

            return torch_port.greedy(self.torch(), prompt, n)
        return parity.greedy_fixed(lambda t: self.forward(stack, t), prompt, n)


def _parity(cfg: E15Config, st: _Stacks, windows: np.ndarray) -> dict:
    """One seed: every stack's logits on `windows` against float64 and JAX jit, and its greedy continuation."""
    logits, first = {}, {}
    for s in cfg.stacks:  # each stack's first call: building it, compiling, running once
        t0 = time.perf_counter()
        logits[s] = st.forward(s, windows)
        first[s] = time.perf_counter() - t0
    ref, jit = logits["numpy_f64"], logits["jax_jit"]
    prompt = windows[:, : cfg.prompt_len]
    ref_greedy = st.greedy("numpy_f64", prompt, cfg.new_tokens)
    out = {}
    for s in cfg.stacks:
        got, first_s = logits[s], first[s]
        toks = st.greedy(s, prompt, cfg.new_tokens)
        div = parity.first_divergence(toks, ref_greedy, cfg.prompt_len)
        row = {
            "max_abs_vs_f64": parity.max_abs_diff(got, ref),
            "max_abs_vs_jax_jit": parity.max_abs_diff(got, jit),
            "kl_vs_f64": parity.kl(ref, got) if s != "numpy_f64" else 0.0,
            "top1_vs_f64": parity.top1(got, ref),
            "greedy_differs": int(np.sum(np.any(toks != ref_greedy, axis=1))),
            "first_divergence": div,
            "first_call_s": first_s,
        }
        if div is not None:  # why: the reference's top-1 / top-2 margin where the continuations part
            rows = np.nonzero(toks[:, cfg.prompt_len + div] != ref_greedy[:, cfg.prompt_len + div])[0]
            pos = cfg.prompt_len + div - 1
            r = int(rows[0])
            ref_at = numpy_ref.forward(cfg.model, st.p, ref_greedy[r : r + 1, : pos + 1])[0, -1]
            srt = np.sort(ref_at)
            row["margin_at_divergence"] = float(srt[-1] - srt[-2])
        out[s] = row
    return out


def _memory(st: _Stacks, stack: str, toks) -> int | None:
    """Peak bytes one call allocates, by the stack's own accounting (lab.port.memory.PEAK_METHOD); None where
    the stack exposes none. Called after the stack's warm-up, so compilation is not counted."""
    m = st.cfg.model
    if stack == "numpy_f64":
        return port_mem.numpy_peak(lambda: st.forward(stack, toks))
    if stack == "jax_jit":
        return port_mem.xla_peak(st._jit.lower(m, st.jp, jnp.asarray(toks, jnp.int32)).compile())
    if stack == "stablehlo":
        return port_mem.xla_peak(port_hlo.compile_for(st.hlo_blob(np.shape(toks)), toks))
    if stack in ("torch_eager", "torch_compile"):
        return port_mem.torch_peak(lambda: st.forward(stack, toks))
    return None


def _decode_seconds(cfg: E15Config, st: _Stacks, stack: str, b: int, t: int) -> tuple[float, bool]:
    """(seconds per generated token at position t - 1, with a KV cache?). JAX (jit and op by op) decode one
    token from lab.model's cache holding t - 1 positions, PyTorch (eager and torch.compile) from the port's;
    NumPy, ONNX Runtime and StableHLO (exported for whole sequences) recompute the whole (b, t) sequence."""
    toks = np.zeros((b, t), np.int64)
    if stack in ("jax_jit", "jax_nojit"):  # the same cached step, compiled whole or run op by op
        m = cfg.model
        # one jit wrapper: prefill and decode are two shapes of it
        step = jax.jit(apply_cached, static_argnums=0) if stack == "jax_jit" else apply_cached
        with jax.disable_jit(stack == "jax_nojit"):
            _, filled = step(m, st.jp, jnp.zeros((b, t - 1), jnp.int32), init_cache(m, b, t))
            one = jnp.zeros((b, 1), jnp.int32)
            jax.block_until_ready(step(m, st.jp, one, filled))  # compile, or each op's first dispatch
            return _seconds(lambda: step(m, st.jp, one, filled)[0], cfg.repeats), True
    if stack in ("torch_eager", "torch_compile"):  # the port's own cache; torch.compile wraps the same module
        import torch

        mod = st.torch()
        step = mod if stack == "torch_eager" else st.compiled()
        with torch.inference_mode():
            cache = mod.new_cache(b, t)
            _, cache = mod(torch.zeros((b, t - 1), dtype=torch.long), cache)
            one = torch.zeros((b, 1), dtype=torch.long)
            step(one, cache)  # warm-up (and compile); each step rewrites position t - 1: the same work
            return _seconds(lambda: step(one, cache)[0], cfg.repeats), True
    st.forward(stack, toks)
    return _seconds(lambda: st.forward(stack, toks), cfg.repeats), False


def _profile(cfg: E15Config, st: _Stacks) -> dict:
    prof = {"platform": jax.devices()[0].platform, "stacks": {}}
    for s in cfg.stacks:
        rows = {}
        first = None
        for t in cfg.lengths:
            for b in cfg.batches:
                toks = np.random.default_rng(b * 1000 + t).integers(0, cfg.model.vocab_size, (b, t))
                t0 = time.perf_counter()
                st.forward(s, toks)  # compiles (jit, torch.compile, each StableHLO shape) or warms up
                warm = time.perf_counter() - t0
                first = warm if first is None else first
                sec = _seconds(lambda toks=toks, s=s: st.forward(s, toks), cfg.repeats)
                rows[f"{b}x{t}"] = {
                    "batch": b,
                    "length": t,
                    "prefill_s": sec,
                    "tokens_per_s": b * t / sec,
                    "first_call_s": warm,
                    "peak_bytes": _memory(st, s, toks),
                    "peak_method": port_mem.PEAK_METHOD[s],
                }
        t_max = max(cfg.lengths)
        decode = {str(b): _decode_seconds(cfg, st, s, b, t_max) for b in cfg.batches}
        prof["stacks"][s] = {
            "shapes": rows,
            "decode_s": {b: v[0] for b, v in decode.items()},
            "decode_cache": next(iter(decode.values()))[1],
            "decode_length": t_max,
            # torch.compile wraps the module torch_eager built: the same load
            "load_s": st.load_s.get("torch_eager" if s == "torch_compile" else s, 0.0),
            "first_call_s": first,
        }
    return prof


def run(cfg: E15Config, out: Path, opts) -> None:
    lm = text_lm(cfg.data, cfg.model)
    model = lm.model
    run_cfg = dataclasses.replace(cfg, model=model)  # the vocabulary set by the tokenizer
    spec = SweepSpec.text(lm, cfg.train, members_grid(range(cfg.seeds), [cfg.train.lr]))
    train_sweeps(out / "runs", {"model": spec}, "e15", opts)
    stacked = jax.device_get(sweep_params(out / "runs" / "model", spec))  # restored from Orbax
    windows = _windows(lm.text.val, cfg.prompt_len + cfg.new_tokens, cfg.prompts)
    folder = out / "runs" / "export"
    folder.mkdir(parents=True, exist_ok=True)
    par = {s: [] for s in cfg.stacks}
    prof, fresh = None, None
    with jax.default_matmul_precision("highest"):
        for i in range(cfg.seeds):
            p = numpy_ref.to_numpy(jax.tree_util.tree_map(lambda a, i=i: a[i], stacked), np.float32)
            st = _Stacks(run_cfg, p, folder if i == 0 else None)
            for s, row in _parity(run_cfg, st, windows).items():
                par[s].append(row)
            if i == 0:
                if (
                    "stablehlo" in cfg.stacks
                ):  # the saved file alone, in an interpreter that never saw the model
                    back = qexport.run_in_fresh_process(
                        {"m": st.files["stablehlo"]}, windows.astype(np.int32)
                    )
                    fresh = parity.max_abs_diff(back["m"], st.forward("stablehlo", windows))
                prof = _profile(run_cfg, st)
                files = {s: p.stat().st_size for s, p in st.files.items()}
    write_measurement(
        out / "runs" / "parity.json",
        {"stacks": par, "files": files, "stablehlo_fresh_process_diff": fresh},
        cfg,
    )
    write_measurement(out / "runs" / "profile.json", prof, cfg)


# --- analyze: NumPy only, from the files -------------------------------------------------------------------
def _col(rows, key):
    return np.asarray([r[key] for r in rows], np.float64)


def finding_goal(cfg: E15Config, par: dict) -> Finding:
    parts, ev = [], []
    for s in GOAL_STACKS:
        if s not in par:
            continue
        d = _col(par[s], "max_abs_vs_jax_jit")
        c = compare_to(d, TOL)
        parts.append(c.verdict("less"))
        ev.append(f"{s}: max |Δ logits| vs JAX jit {d.max():.2e} at worst over {d.size} seeds ({parts[-1]})")
    claim = f"PyTorch (eager) and ONNX Runtime compute the JAX model's logits within {TOL:g} at float32"
    if not parts:
        return Finding(claim, "inconclusive", "neither stack was run")
    return Finding(claim, headline(parts), "; ".join(ev))


def finding_greedy(cfg: E15Config, par: dict) -> Finding:
    others = [s for s in cfg.stacks if s != "numpy_f64"]
    differ = np.sum([_col(par[s], "greedy_differs") for s in others], axis=0)  # (seeds,)
    frac = differ / (len(others) * cfg.prompts)
    c = compare_to(frac, 0.0)
    v = c.verdict("equal", GREEDY_MARGIN)
    where = []
    for s in others:
        for i, r in enumerate(par[s]):
            if r["first_divergence"] is not None:
                where.append(
                    f"{s} seed {i} at token {r['first_divergence']} (reference top-1/top-2 margin "
                    f"{r['margin_at_divergence']:.2e}, stack's max |Δ logits| {r['max_abs_vs_f64']:.1e})"
                )
    ev = (
        f"{int(differ.sum())} of {len(others) * cfg.prompts * cfg.seeds} continuations of {cfg.new_tokens} "
        f"tokens differ from float64's over {cfg.seeds} seeds ({len(others)} stacks x {cfg.prompts} prompts; "
        f"fraction per seed {summarize(frac).fmt(3)}); "
        + ("diverging: " + "; ".join(where) if where else "none diverges")
    )
    claim = f"Every stack's {cfg.new_tokens}-token greedy continuation equals the float64 reference's"
    return Finding(claim, v, ev)


def _ratio(x, base) -> str:
    return f"{x / base:.2f}x" if base else "n/a"


def _tables(cfg, par, prof, files, fresh, outs):
    t = Table(
        f"Parity with the float64 NumPy reference ({cfg.prompts} held-out windows of "
        f"{cfg.prompt_len + cfg.new_tokens} tokens; worst over {cfg.seeds} seeds)",
        ["stack", "max |Δ| vs f64", "max |Δ| vs JAX jit", "KL vs f64 (nats)", "top-1 vs f64",
         f"greedy {cfg.new_tokens} identical", "first divergence", "file bytes"],
        note=f"Goal: PyTorch and ONNX Runtime within {TOL:g} of JAX jit. StableHLO reloaded in a fresh "
        f"process vs in this one: max |Δ| {fresh if fresh is None else f'{fresh:.1e}'}.",
    )  # fmt: skip
    for s in cfg.stacks:
        rows = par[s]
        same = sum(r["greedy_differs"] == 0 for r in rows)
        divs = [r["first_divergence"] for r in rows if r["first_divergence"] is not None]
        t.add(
            s,
            f"{_col(rows, 'max_abs_vs_f64').max():.2e}",
            f"{_col(rows, 'max_abs_vs_jax_jit').max():.2e}",
            f"{_col(rows, 'kl_vs_f64').max():.1e}",
            f"{_col(rows, 'top1_vs_f64').min():.4f}",
            f"{same}/{len(rows)} seeds",
            f"token {min(divs)}" if divs else "none",
            files.get(s, ""),
        )
    base = prof["stacks"]["jax_jit"]
    p = Table(
        f"Profile of seed 0's model on {prof['platform']} (median of {cfg.repeats} calls; ratios to JAX jit "
        "in the same run)",
        ["stack", "batch x length", "prefill ms", "ratio", "tokens/s", "first call s", "peak bytes",
         "peak measured by"],
        note="Peak bytes: what one prefill call allocates above what was live before it (the parameters are "
        "not counted), by each stack's own accounting; NumPy computes in float64 and converts the parameters to "
        "float64 inside each call, which it counts. n/a: the stack exposes no "
        "per-call allocator statistics (JAX without jit dispatches op by op; ONNX Runtime's arena).",
    )  # fmt: skip
    for s in cfg.stacks:
        for key, r in prof["stacks"][s]["shapes"].items():
            b0 = base["shapes"][key]["prefill_s"]
            pb = r["peak_bytes"]
            p.add(s, key, f"{1e3 * r['prefill_s']:.3f}", _ratio(r["prefill_s"], b0), f"{r['tokens_per_s']:.0f}",
                  f"{r['first_call_s']:.2f}", pb if pb is not None else "n/a",
                  r["peak_method"] or "n/a")  # fmt: skip
    d = Table(
        f"Per-token decode at position {max(cfg.lengths)}, and the first call (ratios to JAX jit)",
        [
            "stack",
            "KV cache",
            *[f"decode ms (batch {b})" for b in cfg.batches],
            f"ratio (batch {cfg.batches[0]})",
            "load s",
            "first call s (load + compile + run)",
            "ratio",
        ],
        note="Load: building the stack from the parameters alone (PyTorch module, ONNX export and session, "
        "StableHLO export and reload of the first shape; nothing for JAX and NumPy, which take the parameters "
        "as they are). First call: seed 0's first forward in the parity run: loading, compiling (jit, "
        "torch.compile, XLA for the reloaded module) and running once.",
    )
    b1 = str(cfg.batches[0])
    for s in cfg.stacks:
        r = prof["stacks"][s]
        d.add(s, "yes" if r["decode_cache"] else "no (recompute)",
              *[f"{1e3 * r['decode_s'][str(b)]:.3f}" for b in cfg.batches],
              _ratio(r["decode_s"][b1], base["decode_s"][b1]), f"{r['load_s']:.2f}", f"{par[s][0]['first_call_s']:.2f}",
              _ratio(par[s][0]["first_call_s"], par["jax_jit"][0]["first_call_s"]))  # fmt: skip
    outs.table("parity.md", t)
    outs.table("profile.md", p, d)


def _plots(cfg, par, prof, outs):
    fig, axes = plots.figure(ncols=2, width=6.0)
    names = list(cfg.stacks)
    floor = 1e-18  # the reference against itself is exactly 0: drawn at the floor of the log axis
    for key, ax, title in (
        ("max_abs_vs_f64", axes[0, 0], "max |Δ logits| vs the float64 reference"),
        ("max_abs_vs_jax_jit", axes[0, 1], "max |Δ logits| vs JAX jit"),
    ):
        for j, s in enumerate(names):
            ax.scatter([j] * cfg.seeds, np.maximum(_col(par[s], key), floor), s=18, label=s)
        ax.axhline(TOL, color="grey", linestyle=":", label=f"goal {TOL:g}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        plots.finish(ax, title, "stack", "max |Δ logits| (nats, log)", legend=key == "max_abs_vs_jax_jit",
                     outside=True)  # fmt: skip
    fig.suptitle(f"e15: logit parity per seed ({cfg.seeds} seeds)")
    plots.save(fig, outs.plot("parity.png"))

    fig, axes = plots.figure(ncols=2, width=6.0)
    b = max(cfg.batches)
    for s in names:
        rows = prof["stacks"][s]["shapes"]
        axes[0, 0].plot(
            cfg.lengths, [1e3 * rows[f"{b}x{t}"]["prefill_s"] for t in cfg.lengths], "o-", label=s
        )
        axes[0, 1].plot(cfg.batches, [1e3 * prof["stacks"][s]["decode_s"][str(bb)] for bb in cfg.batches],
                        "o-", label=s)  # fmt: skip
    for ax in axes[0]:
        ax.set_yscale("log")
    plots.finish(axes[0, 0], f"prefill latency, batch {b}", "sequence length (tokens)", "ms per call (log)")
    plots.finish(axes[0, 1], f"per-token decode at position {max(cfg.lengths)}", "batch size",
                 "ms per token step (log)", outside=True)  # fmt: skip
    fig.suptitle(f"e15: profile on {prof['platform']} (seed 0; median of {cfg.repeats} calls)")
    plots.save(fig, outs.plot("profile.png"))


def analyze(cfg: E15Config, out: Path):
    load_run(out / "runs" / "model")  # refuses unfinished training
    meas = read_measurement(out / "runs" / "parity.json", cfg)
    prof = read_measurement(out / "runs" / "profile.json", cfg)
    par = meas["stacks"]
    outs = Outputs(out)
    _tables(cfg, par, prof, meas["files"], meas["stablehlo_fresh_process_diff"], outs)
    _plots(cfg, par, prof, outs)
    findings = [finding_goal(cfg, par), finding_greedy(cfg, par)]
    b1, t = str(cfg.batches[0]), max(cfg.lengths)
    base = prof["stacks"]["jax_jit"]
    speeds = ", ".join(
        f"{s} {_ratio(prof['stacks'][s]['shapes'][f'{b1}x{t}']['prefill_s'], base['shapes'][f'{b1}x{t}']['prefill_s'])}"
        for s in cfg.stacks
    )
    summary = " ".join(f"[{f.verdict}] {f.claim}: {f.evidence}." for f in findings)
    summary += f" Prefill time relative to JAX jit at batch {b1}, length {t}: {speeds}."
    peaks = [(s, prof["stacks"][s]["shapes"][f"{b1}x{t}"]) for s in cfg.stacks]
    summary += " Peak bytes one such prefill allocates: " + ", ".join(
        f"{s} {r['peak_bytes']} ({r['peak_method']}{'; float64, its parameter copy included' if s == 'numpy_f64' else ''})"
        for s, r in peaks
        if r["peak_bytes"] is not None
    )
    summary += (
        "; not measurable: " + (", ".join(s for s, r in peaks if r["peak_bytes"] is None) or "none") + "."
    )
    return outs.findings(headline([f.verdict for f in findings]), summary, findings)


EXPERIMENT = Experiment(
    name="e15_stacks",
    title="One model across stacks: JAX, NumPy, PyTorch, ONNX Runtime, StableHLO",
    claim=CLAIM,
    config_class=E15Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    check=check_config,
)
