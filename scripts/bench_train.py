"""Benchmark: one training step of nanoGPT's shakespeare_char CPU recipe, in JAX and (if installed) PyTorch.

    python scripts/bench_train.py                                   # speed only, synthetic char data
    python scripts/bench_train.py --data file:PATH --steps 2000     # + train to the end, report val loss
    python scripts/bench_train.py --write                           # also update results/benchmarks.md
    python scripts/bench_train.py --shape gpt2-small --dtype bfloat16   # GPT-2 small on an accelerator: MFU
    python scripts/bench_train.py --attention fused                 # the timed JAX step with another attention
    python scripts/bench_train.py --cores 1                         # both frameworks pinned to one core
    python scripts/bench_train.py --shape gpt2-small --dtype bfloat16 --compare-attention fused  # both, one process

Shape (nanoGPT's README, "I only have a macbook"): char-level, n_layer 4, n_head 4, n_embd 128,
block 64, batch 12, dropout 0, AdamW lr 1e-3 (warmup 100, cosine to 1e-4 at 2000 steps, weight decay 0.1,
beta2 0.99, clip 1.0), bias off. In one process it measures:
  * a matmul ceiling: the best float32 GFLOP/s of square matmuls, for JAX (and PyTorch);
  * JAX: compile time, steady-state ms/step and tokens/s of the jitted step (lab.train), and model
    FLOPs utilization (lab.model.flops) against JAX's ceiling;
  * PyTorch eager, the same model and step (batch sampling, forward, backward, clipping, AdamW), and
    the ratio of step times;
  * where the two differ (`parts_timing`): an attention projection, the MLP's matmuls, the attention core
    and the whole forward+backward, each timed in both after checking they compute the same numbers.
With --steps N it then:
  * trains JAX and PyTorch from the same weights on the same batches for N steps (--check-steps) and
    compares their losses at every step and their exact val losses at the end;
  * trains --seeds PyTorch models with nanoGPT's recipe and reports their exact val loss (every
    non-overlapping window of the val split, not nanoGPT's 20 random batches);
  * trains --seeds JAX models through the real driver (lab.train.train_sweep: one vmapped sweep, metrics,
    checkpoints) for each of --schedules: nanoGPT's cosine, and warmup-stable-decay (same peak 1e-3);
  * with --dev, first scores each schedule on a held-out tenth of the train split (how one is chosen);
  * draws nanoGPT's noisy 20-batch estimate 100 times for one model, to show what one reported run means.

--shape gpt2-small is GPT-2 small (Radford et al. 2019: 12 layers, 12 heads, d_model 768, block 1024, tanh
GELU, biases, tied embeddings; 124,439,808 parameters at its vocabulary of 50257, here padded to 50304 =
393 x 128 as nanoGPT does), for one accelerator: speed only (no PyTorch, no --steps), on synthetic tokens,
with --dtype bfloat16 for mixed precision (bfloat16 matmuls; float32 parameters, AdamW state, logits and
loss). It prints ms/step, tokens/s and MFU against the device's peak dense bfloat16 FLOP/s (PEAK_BF16: a
table by device kind; a kind not in it gets MFU "n/a" and the reason). --json PATH also writes the figures.

--attention {naive,blocked,banded,fused} is the timed JAX model's model.attention (default naive, the model
every published figure used): fused is jax.nn.dot_product_attention (lab.ops.long_attention.fused_attention;
on a GPU in bfloat16, cuDNN's flash attention unless LAB_FUSED_ATTENTION=xla), blocked takes model.attn_block
(64) keys per step, banded gets a window of the whole block (model.window = max_len: full causal attention,
the same function). The description line and the JSON record it (for fused, with the implementation
chosen). --steps trains nanoGPT's recipe with naive attention only.

Bad input (an unknown option, a count out of range, --steps not a multiple of --chunk, a --json path that is
a directory or cannot be made, a missing or corrupted corpus) is refused in one line on stderr with exit
status 2, before anything is timed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # this checkout's lab, and _script_args beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SHAPE = dict(n_layers=4, n_heads=4, d_model=128, max_len=64)
BATCH = 12

# --shape: the default nanoGPT CPU recipe above (speed, PyTorch, --steps), or a speed-only model shape:
# (model fields, batch, vocabulary, the same code path at toy size for --smoke).
SHAPES = {
    "nanogpt-cpu": None,
    "gpt2-small": (
        dict(n_layers=12, n_heads=12, d_model=768, max_len=1024, bias=True, activation="gelu_tanh"),
        16,
        50304,
        (dict(n_layers=2, n_heads=2, d_model=64, max_len=64, bias=True, activation="gelu_tanh"), 4, 512),
    ),
}

# Peak dense (no sparsity) bfloat16 tensor-core FLOP/s from the vendors' data sheets, by jax.Device.device_kind
# (first pattern that matches the lower-cased kind): MFU's denominator (Chowdhery et al. 2022, appendix B).
# NVL and other variants run at other clocks and are left out: they get "n/a" rather than a wrong peak.
PEAK_BF16 = (
    (r"h200(?!.*nvl)", 989e12, "H200 SXM"),
    (r"h100.*pcie", 756e12, "H100 PCIe"),
    (r"h100(?!.*(pcie|nvl))", 989e12, "H100 SXM"),
    (r"a100", 312e12, "A100"),
)


def peak_bf16(device_kind: str) -> tuple[float | None, str]:
    """(peak dense bfloat16 FLOP/s, the table's name for it), or (None, why there is none)."""
    for pattern, flops, name in PEAK_BF16:
        if re.search(pattern, device_kind.lower()):
            return flops, name
    return None, (
        f"no peak bfloat16 FLOP/s for device kind {device_kind!r} in bench_train.PEAK_BF16 (known: "
        + ", ".join(name for _, _, name in PEAK_BF16)
        + ")"
    )


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def jax_ceiling(sizes=(256, 512, 1024, 2048)) -> tuple[float, int]:
    import jax
    import jax.numpy as jnp

    best = (0.0, 0)
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(lambda x: x @ x)
        t = timed(lambda f=f, a=a: f(a).block_until_ready(), 5)
        best = max(best, (2 * n**3 / t / 1e9, n))
    return best


def torch_ceiling(sizes=(256, 512, 1024, 2048)) -> tuple[float, int]:
    import torch

    best = (0.0, 0)
    for n in sizes:
        a = torch.randn(n, n)
        t = timed(lambda a=a: a @ a, 5)
        best = max(best, (2 * n**3 / t / 1e9, n))
    return best


def load_tokens(spec: str | None):
    """(train ids, val ids, vocab size): char-level, as nanoGPT's shakespeare_char."""
    from lab.data.pipeline import DataConfig, load_text_data

    if spec is None:  # synthetic: speed does not depend on the text
        rng = np.random.default_rng(0)
        return (
            rng.integers(0, 65, 1_000_000).astype(np.int32),
            rng.integers(0, 65, 100_000).astype(np.int32),
            65,
        )
    text = load_text_data(DataConfig(name=spec, tokenizer="char"))
    return text.train.astype(np.int32), text.val.astype(np.int32), text.tokenizer.vocab_size


def bench_jax(train, val, vocab, args, shape=SHAPE, batch=BATCH, dtype="float32"):
    """(config, compile seconds, a function that runs args.chunk steps and waits for them, the SweepRunner).
    The model computes attention as args.attention."""
    import jax

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.train import Member, TrainConfig, init_sweep
    from lab.train.sweep import SweepRunner

    window = shape["max_len"] if args.attention == "banded" else None  # the whole block: full causal
    cfg = ModelConfig(vocab_size=vocab, dtype=dtype, attention=args.attention, window=window, **shape)
    tcfg = TrainConfig(steps=2000, batch_size=batch, lr=1e-3, warmup_steps=100, log_every=args.chunk)
    task = TextWindows(cfg.max_len, vocab)
    runner = SweepRunner(cfg, tcfg, task, 1, "loop")
    state = runner.place(init_sweep(cfg, tcfg, [Member(1337, 1e-3)]))
    data = runner.place_data({"train": train, "val": val})
    t0 = time.perf_counter()
    runner.compile_train(args.chunk, state, data)
    compile_s = time.perf_counter() - t0
    holder = {"s": state}

    def chunk():
        holder["s"], m = runner.train(holder["s"], data, args.chunk)
        jax.block_until_ready(m)

    chunk()  # warm up
    return cfg, compile_s, chunk, runner


def val_windows(val: np.ndarray, t_len: int) -> np.ndarray:
    """Every non-overlapping (t_len + 1)-token window of the validation split: the exact val loss."""
    n = (len(val) - 1) // t_len
    return np.stack([val[i * t_len : i * t_len + t_len + 1] for i in range(n)])


def torch_model(vocab, seed: int = 1337):
    """nanoGPT's GPT at this shape in PyTorch eager, with its optimizer and lr schedule."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(seed)
    d, h, n_layers, t_len = SHAPE["d_model"], SHAPE["n_heads"], SHAPE["n_layers"], SHAPE["max_len"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t_len, d)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layers))
            self.ln_f = nn.LayerNorm(d, bias=False)
            for name, p in self.named_parameters():  # nanoGPT's init: N(0, 0.02), residual outputs scaled
                if p.dim() >= 2:
                    std = (
                        0.02 / math.sqrt(2 * n_layers)
                        if name.endswith(("proj.weight", "out.weight"))
                        else 0.02
                    )
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.t()  # tied, as nanoGPT
            return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
    )
    return model, opt


def nanogpt_lr(it: int, steps: int) -> float:
    if it < 100:
        return 1e-3 * (it + 1) / 101
    ratio = min(1.0, (it - 100) / max(steps - 100, 1))
    return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)


def torch_trainer(train, vocab, total_steps: int, seed: int = 1337):
    """(step function, model): each call of step() is one nanoGPT iteration (batch, forward, backward,
    clipping, AdamW with the scheduled learning rate)."""
    import torch

    model, opt = torch_model(vocab, seed)
    t_len = SHAPE["max_len"]
    data = torch.from_numpy(train.astype(np.int64))
    it = [0]

    def step():
        for g in opt.param_groups:
            g["lr"] = nanogpt_lr(it[0], total_steps)
        ix = torch.randint(len(data) - t_len, (BATCH,))
        x = torch.stack([data[i : i + t_len] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + t_len] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        it[0] += 1

    return step, model


def interleaved_timing(fns: dict, steps_per_call: dict, calls: dict, rounds: int) -> dict:
    """Median seconds per step of each function, timed in alternating rounds so that all of them see
    the same machine load (these machines are shared and noisy)."""
    per_step = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[k]):
                fn()
            per_step[k].append((time.perf_counter() - t0) / (calls[k] * steps_per_call[k]))
    return {k: statistics.median(v) for k, v in per_step.items()}


def parts_timing(vocab: int, repeats: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """Where the JAX step loses or gains against PyTorch's, piece by piece at the step's own shapes:
    [(piece, JAX ms, PyTorch ms, max |JAX - PyTorch| of the piece's outputs)], each piece timed in
    alternating rounds (median of `rounds`, `repeats` calls each) from the same inputs, after checking that
    both compute the same numbers. The pieces:
      * the matmul library (XLA's dot against PyTorch's mm): an attention projection (768 tokens,
        128 -> 128) and the MLP's two matmuls (128 -> 512 -> 128), each chained `repeats` times (x <- x @ w,
        orthonormal weights) inside one JAX program and one PyTorch loop: no JAX call overhead counts, and
        PyTorch's eager dispatch per matmul is part of its cost, as in its train step;
      * causal attention's core, forward and backward, per layer (B 12, H 4, T 64, head 32): our
        lab.ops.attention (two batched matmuls around a float32 softmax) against PyTorch's fused
        scaled_dot_product_attention, nanoGPT's choice;
      * the whole model's loss, forward and backward: JAX inside a lax.scan of `repeats` steps, the way the
        train step runs (one top-level call per step is slower on XLA:CPU), PyTorch eager. Each JAX pass
        depends on the last through two elementwise ops over the parameters (a few % of its time); the check
        compares the loss and every parameter's gradient.
    The pieces are the naive-attention model's (the published figures'), whatever --attention is.
    The train step's other parts (batch sampling, clipping, AdamW, the divergence guard) are the difference
    between the last piece and the whole step."""
    import jax
    import jax.numpy as jnp
    import torch

    from lab import ops
    from lab.model import ModelConfig, apply

    d, h, n_tok = SHAPE["d_model"], SHAPE["n_heads"], BATCH * SHAPE["max_len"]
    t_len, e = SHAPE["max_len"], SHAPE["d_model"] // SHAPE["n_heads"]
    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    model, _ = torch_model(vocab)
    params = jax.tree_util.tree_map(jnp.asarray, params_from_torch(model))
    cfg = ModelConfig(vocab_size=vocab, **SHAPE)
    x_np, y_np = (rng.integers(0, vocab, (BATCH, t_len)) for _ in range(2))
    x_j, y_j = jnp.asarray(x_np, jnp.int32), jnp.asarray(y_np, jnp.int32)
    x_t, y_t = torch.from_numpy(x_np), torch.from_numpy(y_np)
    loss_j = lambda p: ops.cross_entropy(apply(cfg, p, x_j), y_j)[0]

    def grads_scan(p):
        """(loss, gradient) at p, `repeats` times in one program (each pass depends on the last)."""

        def body(carry, _):  # carry: (loss, zeros that make the next pass depend on this one, gradient)
            loss, g = jax.value_and_grad(loss_j)(jax.tree_util.tree_map(lambda a, b: a + 0 * b, p, carry[1]))
            return (loss, jax.tree_util.tree_map(lambda a: a * 0, g), g), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, p)
        loss, _, grads = jax.lax.scan(body, (jnp.float32(0), zeros, zeros), None, length=repeats)[0]
        return loss, grads

    def torch_grads():  # (loss, gradient) in the JAX parameters' layout and leaf order
        model.zero_grad(set_to_none=True)
        loss = model(x_t, y_t)
        loss.backward()
        grads = params_from_state({k: p.grad.numpy() for k, p in model.named_parameters()})
        return (loss.detach(), *(torch.from_numpy(np.array(g)) for g in jax.tree_util.tree_leaves(grads)))

    q, k, v, g = (normal(BATCH, t_len, h, e) for _ in range(4))
    mask = ops.causal_mask(t_len)
    attn_j = jax.jit(
        lambda q, k, v, g: jax.vjp(lambda *a: ops.dot_product_attention(*a, mask), q, k, v)[1](g)
    )
    tq, tk, tv = (torch.from_numpy(z.transpose(0, 2, 1, 3).copy()).requires_grad_() for z in (q, k, v))
    tg = torch.from_numpy(g.transpose(0, 2, 1, 3).copy())

    def attn_t():
        for z in (tq, tk, tv):
            z.grad = None
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tg)
        return tuple(z.grad.transpose(1, 2) for z in (tq, tk, tv))

    def chain(ws):  # x <- x @ w for each w, `repeats` times in one program: the library without dispatch
        wj = [jnp.asarray(w) for w in ws]
        body = lambda x, _: (functools.reduce(jnp.matmul, wj, x), None)
        return jax.jit(lambda x: jax.lax.scan(body, x, None, length=repeats, unroll=True)[0])

    def torch_chain(ws):
        wt = [torch.from_numpy(w) for w in ws]

        def run(x):
            for _ in range(repeats):
                for w in wt:
                    x = x @ w
            return x

        return run

    # orthonormal weights (x @ w @ w.T = x): the chains' values stay the size they start at
    square = np.linalg.qr(normal(d, d))[0].astype(np.float32)
    wide = np.linalg.qr(normal(4 * d, d))[0].T.astype(np.float32).copy()  # (d, 4d), orthonormal rows
    x0 = normal(n_tok, d)
    pieces = []
    for name, ws in (
        ("attention projection 768x128 @ 128x128", [square]),
        ("MLP matmuls 768x128 @ 128x512 @ 512x128", [wide, wide.T.copy()]),
    ):
        fj, ft, xj, xt = chain(ws), torch_chain(ws), jnp.asarray(x0), torch.from_numpy(x0)
        pieces.append((name, lambda fj=fj, xj=xj: fj(xj), lambda ft=ft, xt=xt: ft(xt), repeats, True))
    qj, kj, vj, gj = map(jnp.asarray, (q, k, v, g))
    attn = lambda: attn_j(qj, kj, vj, gj)
    pieces.append(("causal attention core fwd+bwd, one layer", attn, attn_t, 1, False))
    whole = jax.jit(grads_scan)
    pieces.append(("whole model's loss fwd+bwd", lambda: whole(params), torch_grads, repeats, False))
    out = []
    for name, fj, ft, per_call, torch_loops in pieces:
        got_j = jax.tree_util.tree_leaves(jax.block_until_ready(fj()))
        got_t = ft()
        got_t = [z.detach().numpy() for z in (got_t if isinstance(got_t, tuple) else (got_t,))]
        diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(got_j, got_t, strict=True))
        if not diff <= 1e-3:  # float32 rounding gives ~1e-6 here (1e-4 after the 80 matmuls of a chain)
            raise RuntimeError(f"parts_timing: {name} differs between JAX and PyTorch by {diff:.2e}")
        t = interleaved_timing(  # per_call: repetitions inside one JAX call (and one PyTorch call if it loops)
            {"jax": lambda fj=fj: jax.block_until_ready(fj()), "torch": ft},
            {"jax": per_call, "torch": per_call if torch_loops else 1},
            {"jax": max(1, repeats // per_call), "torch": 1 if torch_loops else repeats},
            rounds,
        )
        out.append((name, 1000 * t["jax"], 1000 * t["torch"], diff))
    return out


def torch_val_loss(model, windows) -> float:
    import torch

    w = torch.from_numpy(windows.astype(np.int64))
    with torch.no_grad():
        losses = [
            float(model(w[i : i + 64, :-1], w[i : i + 64, 1:])) * len(w[i : i + 64])
            for i in range(0, len(w), 64)
        ]
    return sum(losses) / len(w)


def params_from_torch(model):
    """Our parameter dict holding the PyTorch model's weights (nn.Linear stores out x in)."""
    return params_from_state({k: v.detach().numpy() for k, v in model.state_dict().items()})


def params_from_state(state: dict):
    """Our parameter dict from NumPy arrays named as torch_model's state_dict: its weights, or their
    gradients (the same layout change)."""
    import jax.numpy as jnp

    d, h = SHAPE["d_model"], SHAPE["n_heads"]
    sd = {k: np.asarray(v, np.float32) for k, v in state.items()}
    heads = lambda w: w.T.reshape(d, h, d // h)
    params = {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "norm_f": {"scale": sd["ln_f.weight"]}}
    for i in range(SHAPE["n_layers"]):
        wq, wk, wv = np.split(sd[f"blocks.{i}.qkv.weight"], 3, axis=0)
        params[f"block_{i}"] = {
            "attn": {
                "wq": heads(wq),
                "wk": heads(wk),
                "wv": heads(wv),
                "wo": sd[f"blocks.{i}.proj.weight"].T.reshape(h, d // h, d),
            },
            "mlp": {"w1": sd[f"blocks.{i}.fc.weight"].T, "w2": sd[f"blocks.{i}.out.weight"].T},
            "norm1": {"scale": sd[f"blocks.{i}.ln1.weight"]},
            "norm2": {"scale": sd[f"blocks.{i}.ln2.weight"]},
        }
    return {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in params.items()}


def same_start_check(train, val, vocab, n_steps: int) -> tuple[float, float, float]:
    """From the same weights on the same batches for n_steps: (max |JAX loss - PyTorch loss| over the
    steps, PyTorch's exact val loss at the end, JAX's). Are the two training steps (model, loss, clipping,
    AdamW, schedule) the same computation, all the way to the end of training?"""
    import jax
    import jax.numpy as jnp
    import torch

    from lab import ops
    from lab.model import ModelConfig, apply
    from lab.train import TrainConfig
    from lab.train.optimizer import apply_updates, make_optimizer

    model, opt = torch_model(vocab, 1337)
    params = jax.tree_util.tree_map(jnp.asarray, params_from_torch(model))
    cfg = ModelConfig(vocab_size=vocab, **SHAPE)
    tx = make_optimizer(TrainConfig(steps=n_steps, batch_size=BATCH, lr=1e-3, warmup_steps=100))
    opt_state = tx.init(params)

    @jax.jit
    def step(p, o, x, y):
        loss, g = jax.value_and_grad(lambda p: ops.cross_entropy(apply(cfg, p, x), y)[0])(p)
        u, o = tx.update(g, o, p)
        return apply_updates(p, u, 1e-3), o, loss

    rng = np.random.default_rng(0)
    worst = 0.0
    for it in range(n_steps):
        ix = rng.integers(0, len(train) - SHAPE["max_len"], BATCH)
        x = np.stack([train[i : i + SHAPE["max_len"]] for i in ix]).astype(np.int64)
        y = np.stack([train[i + 1 : i + 1 + SHAPE["max_len"]] for i in ix]).astype(np.int64)
        for g in opt.param_groups:
            g["lr"] = nanogpt_lr(it, n_steps)
        loss_t = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        params, opt_state, loss_j = step(params, opt_state, jnp.asarray(x), jnp.asarray(y))
        worst = max(worst, abs(float(loss_t.detach()) - float(loss_j)))
    windows = val_windows(val, SHAPE["max_len"])
    return worst, torch_val_loss(model, windows), exact_val_loss(cfg, windows)(params)


def exact_val_loss(cfg, windows: np.ndarray):
    """A jitted `params -> mean next-token loss over every window` (see val_windows), compiled once and
    used for each model scored on the same windows."""
    import jax
    import jax.numpy as jnp

    from lab import ops
    from lab.model import apply

    w = jnp.asarray(windows)
    loss = jax.jit(lambda p: ops.cross_entropy(apply(cfg, p, w[:, :-1]), w[:, 1:])[0])
    return lambda params: float(loss(params))


def train_to_the_end(train, val, vocab, args, schedule: str):
    """Train --seeds models through lab's real driver (one vmapped sweep) with the recipe's AdamW and the
    named learning-rate schedule; (exact loss on `val` per seed, seconds, final params of the sweep)."""
    import jax

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.train import SweepSpec, TrainConfig, members_grid, train_sweep
    from lab.train.loop import latest_state

    cfg = ModelConfig(vocab_size=vocab, **SHAPE)
    tcfg = TrainConfig(
        steps=args.steps,
        batch_size=BATCH,
        lr=1e-3,
        warmup_steps=100,
        schedule=schedule,
        min_lr_ratio=RECIPES[schedule]["min_lr_ratio"],
        log_every=args.chunk,
        eval_every=max(args.chunk, (args.steps // 10) // args.chunk * args.chunk),
        ckpt_every=args.steps,
    )
    task = TextWindows(cfg.max_len, vocab)
    members = members_grid(range(1337, 1337 + args.seeds), [1e-3])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        train_sweep(
            d,
            SweepSpec(model=cfg, train=tcfg, task=task, data={"train": train, "val": val}, members=members),
            desc=f"bench_train {schedule}",
        )
        seconds = time.perf_counter() - t0
        _, state = latest_state(d, cfg, tcfg, members)
    score = exact_val_loss(cfg, val_windows(val, cfg.max_len))
    losses = [score(jax.tree_util.tree_map(lambda x, i=i: x[i], state.params)) for i in range(args.seeds)]
    return losses, seconds, state.params


def nanogpt_estimates(val, params, n_draws: int = 100) -> np.ndarray:
    """nanoGPT's own val estimate (the mean loss of 20 random val batches, --eval_iters=20) of one model,
    drawn n_draws times with different batches: how noisy a single reported figure is."""
    import jax
    import jax.numpy as jnp

    from lab import ops
    from lab.model import ModelConfig, apply

    cfg = ModelConfig(vocab_size=int(params["wte"].shape[0]), **SHAPE)
    vals = jnp.asarray(val)

    @jax.jit
    def estimate(key):
        starts = jax.random.randint(key, (20 * BATCH,), 0, len(val) - cfg.max_len)
        win = vals[starts[:, None] + jnp.arange(cfg.max_len + 1)]
        return ops.cross_entropy(apply(cfg, params, win[:, :-1]), win[:, 1:])[0]

    return np.array([float(estimate(jax.random.PRNGKey(i))) for i in range(n_draws)])


# The learning-rate schedules trained with --steps (peak 1e-3, warmup 100, AdamW as nanoGPT's recipe):
#   cosine  nanoGPT's own recipe: cosine from 1e-3 down to 1e-4 at the last step
#   wsd     warmup-stable-decay: 1e-3 held until the last 20% of the steps, then linearly down to 0
#           (the cooldown fraction Hägele et al. 2024 recommend; chosen on --dev, never on val)
RECIPES = {
    "cosine": {"min_lr_ratio": 0.1, "what": "nanoGPT's recipe: cosine 1e-3 -> 1e-4"},
    "wsd": {"min_lr_ratio": 0.0, "what": "warmup-stable-decay: 1e-3 held, last 20% linear to 0"},
}
TARGET = 1.89  # the issue's target; nanoGPT's README reports "a loss of only 1.88" (one run, 20 val batches)


SMOKE_HELP = "tiny sizes, to check the script runs end to end (tests/test_readme.py); figures mean nothing; writes nothing"


def bench_shape(args, say) -> dict:
    """Speed only, for --shape other than nanogpt-cpu: one model on synthetic tokens; the figures (and a
    one-row Markdown table, through `say`) with MFU against the device's peak bfloat16 FLOP/s."""
    import jax

    from lab.model.flops import train_flops_per_step
    from lab.model.transformer import init, param_count

    shape, batch, vocab, smoke = SHAPES[args.shape]
    size = args.shape
    if args.smoke:  # the same code path at toy size
        shape, batch, vocab = smoke
        size = f"{args.shape}, smoke-sized"
    batch = args.batch or batch
    rng = np.random.default_rng(0)  # speed does not depend on the text
    train = rng.integers(0, vocab, 1_000_000).astype(np.int32)
    val = rng.integers(0, vocab, 100_000).astype(np.int32)
    cfg, compile_s, chunk, _ = bench_jax(train, val, vocab, args, shape, batch, args.dtype)
    fns, compiles, cfgs = {"main": chunk}, {"main": compile_s}, {"main": cfg}
    if args.compare_attention:  # the same model with another attention, timed in the same rounds
        alt = argparse.Namespace(**{**vars(args), "attention": args.compare_attention})
        cfgs["other"], compiles["other"], fns["other"], _ = bench_jax(
            train, val, vocab, alt, shape, batch, args.dtype
        )
    n_params = param_count(jax.eval_shape(lambda: init(cfg, jax.random.PRNGKey(0))))
    label = attention_label(cfg.attention, cfg.dtype, cfg.head_dim, cfg.position == "alibi")
    dev = jax.devices()[0]
    say(
        f"JAX {jax.__version__} on {len(jax.devices())} x {dev.device_kind} ({dev.platform}); {size}: "
        f"{cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}, block {cfg.max_len}, vocabulary "
        f"{vocab}, {n_params:,} parameters; batch {batch}; {args.dtype} compute, float32 parameters and AdamW "
        f"state; attention {label}; {args.chunk} steps per compiled call; synthetic tokens"
    )
    calls = max(1, args.time_steps // args.rounds // args.chunk)
    times = interleaved_timing(fns, dict.fromkeys(fns, args.chunk), dict.fromkeys(fns, calls), args.rounds)
    flops = train_flops_per_step(cfg, batch)  # attention's FLOPs are counted the same for every kind
    peak, peak_name = peak_bf16(dev.device_kind)

    def figures_of(key: str, shown: str, attention: str) -> dict:
        t = times[key]
        return {
            "shape": shown,
            "device_kind": dev.device_kind,
            "platform": dev.platform,
            "jax": jax.__version__,
            "dtype": args.dtype,
            "attention": attention,
            "parameters": n_params,
            "batch": batch,
            "block": cfg.max_len,
            "vocab": vocab,
            "ms_per_step": 1000 * t,
            "tokens_per_s": batch * cfg.max_len / t,
            "compile_s": compiles[key],
            "flops_per_step": flops,
            "flops_per_s": flops / t,
            "peak_flops": peak,
            "mfu": flops / t / peak if peak else None,
            "mfu_note": f"of {peak_name}'s peak, {peak / 1e12:.0f} TFLOP/s" if peak else peak_name,
        }

    figures = figures_of("main", size, label)
    if "other" in fns:
        c = cfgs["other"]
        other = attention_label(c.attention, c.dtype, c.head_dim, c.position == "alibi")
        figures["compare"] = figures_of("other", f"{size}, attention {other}", other)
        figures["compare_ratio"] = times["other"] / times["main"]
    say()
    for line in mfu_table(figures):
        say(line)
    if "other" in fns:
        say(mfu_table(figures["compare"])[2])
    say()
    if "other" in fns:
        say(
            f"Step time, attention {figures['compare']['attention']} / {label}: **{figures['compare_ratio']:.2f}** "
            "(the same rounds, alternating, in one process)."
        )
    say(
        f"Median of {args.rounds} rounds of ~{calls * args.chunk} steps after compiling and one warm-up call. "
        "FLOPs per step: lab.model.flops (6 per matmul parameter per token, the tied unembedding included, "
        "plus 12 x layers x block x d_model per token for attention scores and values)."
        + ("" if peak else f" MFU n/a: {peak_name}.")
    )
    return figures


def attention_label(attention: str, dtype: str, head_dim: int, alibi: bool = False) -> str:
    """The timed model's attention as printed and recorded: "fused (cudnn)", "fused (xla)", or the name."""
    if attention != "fused":
        return attention
    from lab.ops.long_attention import fused_implementation

    return f"fused ({fused_implementation(dtype, head_dim, alibi)})"


def mfu_table(f: dict) -> list[str]:
    """bench_shape's figures as a one-row Markdown table."""
    peak = f"{f['peak_flops'] / 1e12:.0f} | **{f['mfu']:.1%}**" if f["peak_flops"] else "n/a | n/a"
    return [
        "| shape | parameters | compute | batch x block | ms/step | tokens/s | compile (s) | GFLOP/step "
        "| TFLOP/s | peak bf16 TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {f['shape']} | {f['parameters'] / 1e6:.1f}M | {f['dtype']} | {f['batch']} x {f['block']} | "
        f"{f['ms_per_step']:.1f} | {f['tokens_per_s']:,.0f} | {f['compile_s']:.1f} | "
        f"{f['flops_per_step'] / 1e9:,.1f} | {f['flops_per_s'] / 1e12:.1f} | {peak} |",
    ]


def write_json(path: Path, figures: dict, lines: list[str]) -> None:
    from lab.fileio import atomic_write_text

    atomic_write_text(path, json.dumps({**figures, "lines": lines}, indent=1) + "\n")


def main(argv=None) -> int:
    from _script_args import Parser, at_least, writable

    p = Parser(prog="bench_train.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="corpus for --steps (e.g. tinyshakespeare or file:PATH)")
    p.add_argument("--steps", type=int, default=0, help="also train this many steps and report val loss")
    p.add_argument("--time-steps", type=int, default=300, help="steps timed for ms/step, per framework")
    p.add_argument("--rounds", type=int, default=6, help="alternating JAX/PyTorch timing rounds")
    p.add_argument("--chunk", type=int, default=10, help="train steps per compiled call (lax.scan)")
    p.add_argument("--seeds", type=int, default=3, help="models trained for --steps (one vmapped sweep)")
    p.add_argument("--devices", type=int, default=1, help="host CPU devices to expose (default 1)")
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="pin the main thread to this many of the logical CPUs it may use before JAX and PyTorch start, so "
        "every thread they start runs there (default: all of them); --write records the run in a section of "
        "its own (Linux)",
    )
    p.add_argument("--no-torch", action="store_true")
    p.add_argument(
        "--check-steps",
        type=int,
        default=None,
        help="steps of JAX vs PyTorch from identical weights and batches (default: --steps, else 300; 0: skip)",
    )
    p.add_argument(
        "--schedules",
        default="cosine,wsd",
        help=f"learning-rate schedules trained with --steps, of: {', '.join(RECIPES)}",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        help="also train each schedule on the first 90%% of the train split and score the last 10%% of it "
        "(the held-out part of train a schedule is chosen on; val is never used for that)",
    )
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument(
        "--shape",
        default="nanogpt-cpu",
        choices=list(SHAPES),
        help="nanogpt-cpu (default: the recipe above) or gpt2-small (124M; speed and MFU only)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype with --shape gpt2-small (parameters and optimizer state stay float32)",
    )
    p.add_argument("--batch", type=int, default=None, help="batch size with --shape gpt2-small (default 16)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument(
        "--attention",
        default="naive",
        choices=("naive", "blocked", "banded", "fused"),
        help="model.attention of the timed JAX step (default naive: the published figures' model)",
    )
    p.add_argument(
        "--compare-attention",
        default=None,
        choices=("naive", "blocked", "banded", "fused"),
        help="with --shape gpt2-small: also time the model with this attention, alternating rounds in one "
        "process, and print the step-time ratio to --attention's",
    )
    args = p.parse_args(argv)
    at_least(p, args, steps=0, time_steps=1, rounds=1, chunk=1, seeds=1, devices=1, check_steps=0, batch=1)
    if args.json is not None:
        args.json = writable(p, "--json", args.json)
    if args.compare_attention is not None and args.shape == "nanogpt-cpu":
        p.error(
            "--compare-attention goes with --shape gpt2-small (the nanoGPT recipe compares JAX with PyTorch)"
        )
    if args.compare_attention is not None and args.compare_attention == args.attention:
        p.error(f"--compare-attention {args.compare_attention} is --attention already; name another")
    if args.attention != "naive" and args.steps:
        p.error("--attention: only the timed step; --steps trains nanoGPT's recipe with naive attention")
    if args.shape != "nanogpt-cpu":
        given = [f for f, v in (("--steps", args.steps), ("--data", args.data), ("--write", args.write)) if v]
        if given:
            p.error(f"{', '.join(given)}: only with --shape nanogpt-cpu; --shape {args.shape} measures speed")
    elif args.dtype != "float32" or args.batch is not None:
        p.error("--dtype and --batch go with --shape gpt2-small; nanogpt-cpu is float32 at batch 12")
    given_steps = args.steps
    if args.smoke:
        args.steps, args.time_steps, args.rounds, args.seeds = min(args.steps, 20), 10, 1, 1
        args.check_steps, args.schedules, args.dev, args.write = (
            min(args.check_steps or 20, 20),
            "cosine",
            False,
            False,
        )
    schedules = [x.strip() for x in args.schedules.split(",") if x.strip()]
    unknown = [x for x in schedules if x not in RECIPES]
    if unknown or not schedules:
        p.error(f"--schedules: unknown {unknown or 'empty'}; allowed: {', '.join(RECIPES)}")
    if args.steps % args.chunk:  # the driver logs every --chunk steps and checkpoints at the end
        cut = f" (--smoke cut {given_steps} to {args.steps})" if args.steps != given_steps else ""
        p.error(f"--steps {args.steps}{cut} must be 0 or a multiple of --chunk ({args.chunk})")
    if args.check_steps is None:
        args.check_steps = args.steps or 300

    from lab.errors import LabError
    from lab.runtime import available_cores, init_jax

    if args.cores is not None:  # before JAX and PyTorch size their thread pools from the affinity mask
        if not hasattr(os, "sched_setaffinity"):
            p.error("--cores needs an affinity mask to pin to (os.sched_setaffinity: Linux)")
        if not 1 <= args.cores <= available_cores():
            p.error(
                f"--cores must be between 1 and {available_cores()} (the cores it may use), got {args.cores}"
            )
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    init_jax(args.devices)
    import jax

    from lab.model.flops import train_flops_per_step

    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    if args.shape != "nanogpt-cpu":
        figures = bench_shape(args, say)
        if args.json:
            write_json(args.json, figures, lines)
        return 0
    try:
        train, val, vocab = load_tokens(args.data)
    except LabError as e:  # a missing, empty or corrupted corpus: one line, exit 2
        p.exit(2, f"bench_train.py: error: --data {args.data}: {e}\n")
    if args.smoke:  # the same code paths; exact val losses over 32 windows, not every one of val's
        val = val[: 32 * SHAPE["max_len"] + 1]
    dev = jax.devices()[0]
    label = attention_label(args.attention, "float32", SHAPE["d_model"] // SHAPE["n_heads"])
    say(
        f"JAX {jax.__version__} on {len(jax.devices())} x {dev.device_kind} ({dev.platform}), "
        f"{available_cores()} CPU core(s); shape {SHAPE}, batch {BATCH}, vocab {vocab}, "
        f"{args.chunk} steps per compiled call, attention {label}"
    )
    ceiling, n = jax_ceiling((256, 512)) if args.smoke else jax_ceiling()
    say(f"- JAX float32 matmul ceiling: {ceiling:.0f} GFLOP/s (best square size {n})")
    cfg, compile_s, jax_chunk, _ = bench_jax(train, val, vocab, args)
    flops = train_flops_per_step(cfg, BATCH)
    tokens = BATCH * cfg.max_len
    fns, per_call = {"jax": jax_chunk}, {"jax": args.chunk}
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            say("- PyTorch: not installed (pip install torch to compare)")
    if torch is not None:
        torch_step, _ = torch_trainer(train, vocab, 2000)
        for _ in range(5):
            torch_step()  # warm up
        fns["torch"], per_call["torch"] = torch_step, 1
    calls = {k: max(1, args.time_steps // args.rounds // v) for k, v in per_call.items()}
    t = interleaved_timing(fns, per_call, calls, args.rounds)
    t_jax = t["jax"]
    say(
        f"- JAX train step: {1000 * t_jax:.1f} ms/step, {tokens / t_jax:,.0f} tokens/s, compile {compile_s:.1f} s, "
        f"{flops / 1e9:.2f} GFLOP/step -> {flops / t_jax / 1e9:.0f} GFLOP/s = MFU {flops / t_jax / 1e9 / ceiling:.1%} "
        "of the JAX ceiling"
    )
    figures = {
        "shape": "nanogpt-cpu",
        "device_kind": dev.device_kind,
        "attention": label,
        "ms_per_step": 1000 * t_jax,
        "tokens_per_s": tokens / t_jax,
        "compile_s": compile_s,
        "flops_per_step": flops,
        "mfu": flops / t_jax / 1e9 / ceiling,
        "mfu_note": f"of the measured float32 matmul ceiling, {ceiling:.0f} GFLOP/s",
    }
    if torch is not None:
        tc, tn = torch_ceiling()
        t_torch = t["torch"]
        say(
            f"- PyTorch {torch.__version__} eager ({torch.get_num_threads()} threads): {1000 * t_torch:.1f} ms/step, "
            f"{tokens / t_torch:,.0f} tokens/s, MFU {flops / t_torch / 1e9 / tc:.1%} of its own ceiling "
            f"({tc:.0f} GFLOP/s at size {tn})"
        )
        say(
            f"- JAX step time / PyTorch step time = {t_jax / t_torch:.2f} on this machine's float32 matmul ceilings "
            f"of {ceiling:.0f} (JAX) and {tc:.0f} (PyTorch) GFLOP/s (below 1: JAX is faster; medians of "
            f"{args.rounds} alternating rounds of ~{args.time_steps // args.rounds} steps each)"
        )
        parts = parts_timing(vocab, 5 if args.smoke else 40, args.rounds)  # the naive-attention model's
        say(
            "- where the difference is (`parts_timing`: each piece at the step's shapes, JAX / PyTorch in "
            "alternating rounds, after checking both compute the same numbers"
            + ("" if args.attention == "naive" else "; the naive-attention model's pieces, not --attention's")
            + "): "
            + "; ".join(
                f"{n} {j:.3f} / {t:.3f} ms = {j / t:.2f} (max diff {dd:.1e})" for n, j, t, dd in parts
            )
        )
        figures["parts"] = [dict(piece=n, jax_ms=j, torch_ms=t, max_abs_diff=dd) for n, j, t, dd in parts]
        if args.check_steps:
            worst, val_t, val_j = same_start_check(train, val, vocab, args.check_steps)
            say(
                f"- same weights, same batches, {args.check_steps} steps of nanoGPT's recipe: max |JAX loss - "
                f"PyTorch loss| = {worst:.1e}; exact val loss at the end: PyTorch {val_t:.5f}, JAX {val_j:.5f}"
            )
        if args.steps:
            from lab.analysis.stats import summarize

            windows = val_windows(val, SHAPE["max_len"])
            torch_losses = []
            for seed in range(1337, 1337 + args.seeds):
                step, model = torch_trainer(train, vocab, args.steps, seed)
                for _ in range(args.steps):
                    step()
                torch_losses.append(torch_val_loss(model, windows))
            say(
                f"- PyTorch, nanoGPT's recipe, {args.steps} steps, {args.seeds} seeds: exact val loss "
                f"{summarize(torch_losses).fmt(4)} (per seed: "
                + ", ".join(f"{x:.4f}" for x in torch_losses)
                + ")"
            )
    if args.steps:
        from lab.analysis.stats import summarize

        if args.dev:
            cut = int(len(train) * 0.9)
            for schedule in schedules:
                losses, seconds, _ = train_to_the_end(train[:cut], train[cut:], vocab, args, schedule)
                say(
                    f"- JAX, {RECIPES[schedule]['what']}, trained on the first 90% of train, {args.seeds} seeds: "
                    f"exact loss on the last 10% of train (dev) {summarize(losses).fmt(4)}"
                )
        results = {}
        for schedule in schedules:
            losses, seconds, params = train_to_the_end(train, val, vocab, args, schedule)
            results[schedule] = losses
            say(
                f"- JAX, {RECIPES[schedule]['what']}, {args.steps} steps on {args.data or 'synthetic data'}, "
                f"{args.seeds} seeds as one sweep in {seconds:.0f} s: exact val loss {summarize(losses).fmt(4)} "
                "(per seed: " + ", ".join(f"{x:.4f}" for x in losses) + ")"
            )
            if schedule == "cosine":
                first = jax.tree_util.tree_map(lambda x: x[0], params)
                est = nanogpt_estimates(val, first, n_draws=3 if args.smoke else 100)
                say(
                    f"- nanoGPT's estimator (mean of 20 random val batches) on seed 1337's cosine model, drawn "
                    f"{len(est)} times: {est.mean():.4f} ± {est.std(ddof=1):.4f}, range {est.min():.4f}..{est.max():.4f}; "
                    f"{np.mean(est <= TARGET):.0%} of draws are <= {TARGET}"
                )
        say(
            f"- target: exact val loss <= {TARGET} after {args.steps} steps (nanoGPT's README reports "
            '"a loss of only 1.88" for its recipe: one run, scored on 20 random val batches): '
            + "; ".join(
                f"{k} {np.mean(v):.4f} {'met' if max(v) <= TARGET else 'not met'}"
                f"{' by every seed' if max(v) <= TARGET else ''}"
                for k, v in results.items()
            )
        )
    if args.json:
        write_json(args.json, figures, lines)
    if args.write:
        from lab.report import record_benchmark

        section, title = "train", "Training step (nanoGPT CPU recipe)"
        if args.cores is not None:  # a pinned run sits beside the machine's, not in place of it
            section, title = f"train-{args.cores}core", f"{title} on {args.cores} pinned core(s)"
        record_benchmark(section, title, "bench_train.py", argv, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
