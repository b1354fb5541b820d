"""Benchmark: one training step of nanoGPT's shakespeare_char CPU recipe, in JAX and (if installed) PyTorch.

    python scripts/bench_train.py                                   # speed only, synthetic char data
    python scripts/bench_train.py --data file:PATH --steps 2000     # + train to the end, report val loss
    python scripts/bench_train.py --write                           # also update results/benchmarks.md

Shape (nanoGPT's README, "I only have a macbook"): char-level, n_layer 4, n_head 4, n_embd 128,
block 64, batch 12, dropout 0, AdamW lr 1e-3 (warmup 100, cosine to 1e-4 at 2000 steps, weight decay 0.1,
beta2 0.99, clip 1.0), bias off. In one process it measures:
  * a matmul ceiling: the best float32 GFLOP/s of square matmuls, for JAX (and PyTorch);
  * JAX: compile time, steady-state ms/step and tokens/s of the jitted step (lab.train), and model
    FLOPs utilization (lab.model.flops) against JAX's ceiling;
  * PyTorch eager, the same model and step (batch sampling, forward, backward, clipping, AdamW), and
    the ratio of step times.
With --steps N it then trains the JAX model N steps through the real driver (lab.train.train_sweep:
metrics, checkpoints) and reports the validation loss over --eval-batches batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np

SHAPE = dict(n_layers=4, n_heads=4, d_model=128, max_len=64)
BATCH = 12


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


def bench_jax(train, val, vocab, args):
    import jax

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.train import Member, TrainConfig, init_sweep
    from lab.train.sweep import SweepRunner

    cfg = ModelConfig(vocab_size=vocab, **SHAPE)
    tcfg = TrainConfig(steps=2000, batch_size=BATCH, lr=1e-3, warmup_steps=100, log_every=args.chunk)
    task = TextWindows(cfg.max_len, vocab)
    runner = SweepRunner(cfg, tcfg, task, 1, "loop")
    state = runner.place(init_sweep(cfg, tcfg, [Member(1337, 1e-3)]))
    data = runner.place_data({"train": train, "val": val})
    t0 = time.perf_counter()
    runner._compiled_train(args.chunk, state, data)
    compile_s = time.perf_counter() - t0
    holder = {"s": state}

    def chunk():
        holder["s"], m = runner.train(holder["s"], data, args.chunk)
        jax.block_until_ready(m)

    calls = max(1, args.time_steps // args.chunk)
    t = timed(chunk, calls) / args.chunk
    return cfg, compile_s, t


def bench_torch(train, vocab, args):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(1337)
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

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.t()  # tied, as nanoGPT
            return F.cross_entropy(logits.view(-1, vocab), targets.view(-1))

    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
    )
    data = torch.from_numpy(train.astype(np.int64))

    def step():
        ix = torch.randint(len(data) - t_len, (BATCH,))
        x = torch.stack([data[i : i + t_len] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + t_len] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(5):
        step()
    return timed(step, args.time_steps)


def train_to_the_end(train, val, vocab, args) -> tuple[float, float]:
    """Train through lab's real driver; (final val loss over eval_batches fixed batches, seconds)."""
    import jax

    from lab.data.tasks import TextWindows
    from lab.model import ModelConfig
    from lab.train import Member, TrainConfig, train_sweep
    from lab.train.loop import latest_state
    from lab.train.step import eval_step

    cfg = ModelConfig(vocab_size=vocab, **SHAPE)
    tcfg = TrainConfig(
        steps=args.steps,
        batch_size=BATCH,
        lr=1e-3,
        warmup_steps=100,
        log_every=args.chunk,
        eval_every=max(args.chunk, (args.steps // 10) // args.chunk * args.chunk),
        ckpt_every=args.steps,
        eval_batches=args.eval_batches,
    )
    task = TextWindows(cfg.max_len, vocab)
    members = [Member(1337, 1e-3)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        train_sweep(
            d,
            cfg=cfg,
            tcfg=tcfg,
            task=task,
            data={"train": train, "val": val},
            members=members,
            desc="bench_train",
        )
        seconds = time.perf_counter() - t0
        _, state = latest_state(d, cfg, tcfg, members)
    params = jax.tree_util.tree_map(lambda x: x[0], state.params)
    ev = jax.jit(lambda p: eval_step(p, {"val": val}, cfg=cfg, tcfg=tcfg, task=task, split="val"))(params)
    return float(ev["val_loss"]), seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="corpus for --steps (e.g. tinyshakespeare or file:PATH)")
    p.add_argument("--steps", type=int, default=0, help="also train this many steps and report val loss")
    p.add_argument("--time-steps", type=int, default=200, help="steps timed for ms/step")
    p.add_argument("--chunk", type=int, default=10, help="train steps per compiled call (lax.scan)")
    p.add_argument("--eval-batches", type=int, default=200, help="val batches of 12 x 64 for the final loss")
    p.add_argument("--devices", type=int, default=1, help="host CPU devices to expose (default 1)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--write", action="store_true", help="update results/benchmarks.md")
    args = p.parse_args(argv)

    from lab.runtime import init_jax

    init_jax(args.devices)
    import jax

    from lab.model.flops import train_flops_per_step

    train, val, vocab = load_tokens(args.data)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    dev = jax.devices()[0]
    say(
        f"JAX {jax.__version__} on {len(jax.devices())} x {dev.device_kind} ({dev.platform}); "
        f"shape {SHAPE}, batch {BATCH}, vocab {vocab}, {args.chunk} steps per compiled call"
    )
    ceiling, n = jax_ceiling()
    say(f"- JAX float32 matmul ceiling: {ceiling:.0f} GFLOP/s (best square size {n})")
    cfg, compile_s, t_jax = bench_jax(train, val, vocab, args)
    flops = train_flops_per_step(cfg, BATCH)
    tokens = BATCH * cfg.max_len
    say(
        f"- JAX train step: {1000 * t_jax:.1f} ms/step, {tokens / t_jax:,.0f} tokens/s, compile {compile_s:.1f} s, "
        f"{flops / 1e9:.2f} GFLOP/step -> {flops / t_jax / 1e9:.0f} GFLOP/s = MFU {flops / t_jax / 1e9 / ceiling:.1%} "
        "of the JAX ceiling"
    )
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            say("- PyTorch: not installed (pip install torch to compare)")
        else:
            tc, tn = torch_ceiling()
            t_torch = bench_torch(train, vocab, args)
            say(
                f"- PyTorch {torch.__version__} eager ({torch.get_num_threads()} threads): {1000 * t_torch:.1f} ms/step, "
                f"{tokens / t_torch:,.0f} tokens/s, MFU {flops / t_torch / 1e9 / tc:.1%} of its own ceiling "
                f"({tc:.0f} GFLOP/s at size {tn})"
            )
            say(f"- JAX step time / PyTorch step time = {t_jax / t_torch:.2f} (below 1: JAX is faster)")
    if args.steps:
        loss, seconds = train_to_the_end(train, val, vocab, args)
        say(
            f"- trained {args.steps} steps on {args.data or 'synthetic data'} in {seconds:.0f} s: val loss "
            f"{loss:.4f} (mean over {args.eval_batches} batches of {BATCH} x {cfg.max_len}); nanoGPT's recipe: 1.88"
        )
    if args.write:
        from lab.report import update_benchmarks

        cmd = "python scripts/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
        update_benchmarks(
            "train", f"## Training step (nanoGPT CPU recipe)\n\n`{cmd.strip()}`\n\n" + "\n".join(lines)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
