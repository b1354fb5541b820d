"""Project 16: "Good synthetic data beats bad real data" — generators, noise, cleaning, and model collapse.

Claims tested, all on the same clean real validation text:
  1. Synthetic text from small seeded generators (lab.data.synthetic: a probabilistic grammar of short
     stories in the spirit of TinyStories (Eldan & Li 2023), arithmetic, key-value facts) is worse training
     data than clean real text, but past some noise level it beats real text corrupted by character noise and
     token shuffles (both at rate p): the crossover noise level p*, per seed, with a CI or an honest
     inconclusive. Mixtures (half synthetic, half noisy real) are measured beside them.
  2. Model collapse (Shumailov et al. 2024, "AI models collapse when trained on recursively generated
     data"): training each generation only on the previous generation's samples ("replace") loses the tails
     of the distribution (mass on rare tokens, distinct n-grams) and raises the loss on real data, while
     keeping every earlier generation's data beside the real data ("accumulate"; Gerstgrasser et al. 2024,
     "Is model collapse inevitable?") keeps the loss bounded.
  3. Wrong facts are learned as facts: models trained on the statements of a small key-value fact world
     (`fact_entities` entities, few enough to memorize in `facts_train.steps`), wrong at each of
     `wrong_rates` (another value of the attribute), put less probability on the true values than models
     trained on true statements only; scored by each candidate value's byte log-probability after "The
     <attribute> of <entity> is", normalized over the attribute's values, against a learner of the
     statements' frequencies (1 - rate, the true value still on top).

The real data is the repo's real corpus (`data.name`, by default the standard library's docstrings, as e02,
e10 and e11 use), cut into paragraph documents, cleaned before anything trains (lab.data.clean): exact
duplicates by hash, near duplicates by MinHash + LSH with every candidate's true Jaccard checked, then a
leak-free split by document into train/val/test, with a contamination check between the splits. A probe
measures the dedupe on these documents: copies of `dup_rate` of them injected (half exact, half near copies
with 3% of words changed) and deduped again; the cleaning table says how many were removed. Training uses the
documents cleaned without the probe, so a near copy that slips through does not change the data.
Every data condition trains on the same number of tokens (streams cut to one length), byte-level, the same
model and steps; conditions x seeds are one compiled sweep (lab.data.streams.MemberStreams). Each collapse
generation is a fresh model trained for `collapse_train.steps` steps (equal compute per generation) on its
data; samples come from lab.infer's sampler (KV-cached, temperature `temperature`), `collapse_tokens` per
generation, the size of the real set it starts from.

Run:      lab run e16 [--preset smoke|cpu|gpu] [--set noise_levels=0,0.3,0.6,0.9] [--seeds 3]
Redraw:   lab analyze e16
Writes:   results/e16_synthetic_data/
  runs/curves/          one sweep: every data condition x seed (config.json, metrics.jsonl, checkpoints/)
  runs/collapse/gen<g>/ one sweep per generation: regimes x seeds (generation 0: seeds, on real data)
  runs/facts/           one sweep: wrong-fact rate x seed, validated on true statements
  runs/facts.json       per member: probability on the true values and top-1 share over the facts
  runs/data.json        cleaning report, contamination counts, realized noise rates, stream sizes
  runs/collapse.json    per generation and chain: distinct-n and rare-token mass of its samples
  plots/curves.png, plots/crossover.png, plots/collapse.png, plots/facts.png, tables/*.md, findings.json
"""

from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab.analysis import Finding, Outputs, Table, compare, compare_to, headline, summarize
from lab.analysis.findings import evidence_summary
from lab.analysis.stats import t_quantile
from lab.config import check, check_at_least
from lab.data import clean, synthetic
from lab.data.corpora import load_corpus
from lab.data.pipeline import DataConfig
from lab.data.streams import MemberStreams
from lab.experiment import Experiment
from lab.infer import generate_cached
from lab.infer.diversity import distinct_n
from lab.model import ModelConfig, apply
from lab.ops.losses import token_cross_entropy
from lab.runs import load_run, read_measurement, write_measurement
from lab.train import Member, SweepSpec, TrainConfig, train_sweep
from lab.train.config import TRAIN_PRESETS
from lab.train.loop import sweep_params
from lab.train.step import stream_loss
from lab.viz import plots

CLAIM = "Good synthetic data beats bad real data past a noise level; training on own samples collapses."
REGIMES = ("replace", "accumulate")
VOCAB = 256  # bytes


@dataclass(frozen=True)
class E16Config:
    model: ModelConfig = ModelConfig(max_len=32, n_layers=2, d_model=32, n_heads=4)
    train: TrainConfig = TrainConfig(
        steps=150, batch_size=16, lr=3e-3, warmup_steps=15, eval_every=50, eval_batches=16, ckpt_every=150
    )
    # the real corpus, byte-level (its name and tokenizer are used; the split is by document, below)
    data: DataConfig = DataConfig()
    seeds: int = 3
    real_docs: int = 3000  # paragraphs of the corpus sampled as the real documents
    min_doc_chars: int = 64  # shorter paragraphs are left out (headings, one-liners)
    split: tuple[float, ...] = (0.8, 0.1, 0.1)  # train, val, test by document, after dedupe
    # the cleaning probe: copies of this share of the documents injected (half exact, half near copies with 3%
    # of words changed; lab.data.synthetic.inject_duplicates) and deduped again, to count how many are removed
    dup_rate: float = 0.05
    dedup: clean.DedupConfig = clean.DedupConfig()
    noise_levels: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)  # char noise + token shuffle rate
    mix_levels: tuple[float, ...] = (0.4, 0.8)  # noise levels also trained half synthetic, half real
    mix_fraction: float = 0.5  # synthetic share of a mixture
    synth_weights: tuple[float, ...] = (0.6, 0.2, 0.2)  # stories, arithmetic, facts
    generations: int = 5  # collapse: generations after generation 0 (trained on real data)
    collapse_tokens: int = 16384  # real tokens of generation 0, and samples drawn per generation
    collapse_train: TrainConfig = TrainConfig(
        steps=80,
        batch_size=16,
        lr=3e-3,
        warmup_steps=8,
        log_every=10,
        eval_every=40,
        eval_batches=16,
        ckpt_every=80,
    )
    # wrong facts: a small world of key-value facts (few enough to be memorized in `facts_train.steps`), its
    # statements wrong at each rate (another value of the attribute), one model per rate and seed; scored on
    # the world's true facts
    wrong_rates: tuple[float, ...] = (0.0, 0.2, 0.4)
    fact_entities: int = 8
    facts_train: TrainConfig = TrainConfig(
        steps=600, batch_size=16, lr=3e-3, warmup_steps=30, eval_every=150, eval_batches=16, ckpt_every=600
    )
    prompt_len: int = 1  # sampling prompt: tokens from the chain's own current data
    temperature: float = 1.0
    rare_mass: float = 0.1  # rare tokens: the least frequent real tokens holding this much real mass
    ngram: int = 4  # distinct-n of the samples (byte n-grams)
    collapse_margin: float = 0.1  # nats: "accumulate keeps the loss" means within this of generation 0
    data_seed: int = 0

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "generations", "prompt_len", "ngram")
        check_at_least(self, 10, "real_docs")
        check(
            self.data.tokenizer == "byte", f"data.tokenizer must be 'byte' here, got {self.data.tokenizer!r}"
        )
        for name in ("noise_levels", "mix_levels", "mix_fraction", "rare_mass", "dup_rate", "wrong_rates"):
            for v in (
                getattr(self, name) if isinstance(getattr(self, name), tuple) else (getattr(self, name),)
            ):
                synthetic.check_rate(name, v)
        lv = self.noise_levels
        check(
            len(lv) >= 3 and 0.0 in lv and list(lv) == sorted(set(lv)),
            f"noise_levels must be >= 3 distinct increasing rates including 0 (clean real), got {lv}",
        )
        check(
            set(self.mix_levels) <= set(lv), f"mix_levels {self.mix_levels} must be among noise_levels {lv}"
        )
        check(0 < self.mix_fraction < 1, f"mix_fraction must be in (0, 1), got {self.mix_fraction}")
        wr = self.wrong_rates
        check(
            len(wr) >= 2 and 0.0 in wr and list(wr) == sorted(set(wr)),
            f"wrong_rates must be >= 2 distinct increasing rates including 0 (true facts only), got {wr}",
        )
        synthetic.FactWorld(self.data_seed, self.fact_entities)  # refuses a size out of range
        check(
            len(self.split) == 3 and all(f > 0 for f in self.split) and abs(sum(self.split) - 1) < 1e-9,
            f"split must be three fractions > 0 summing to 1 (train, val, test), got {self.split}",
        )
        check(
            len(self.synth_weights) == 3
            and all(w >= 0 for w in self.synth_weights)
            and sum(self.synth_weights),
            f"synth_weights must be three weights >= 0, not all 0 (stories, arithmetic, facts), got "
            f"{self.synth_weights}",
        )
        check(self.temperature > 0, f"temperature must be > 0 (sampling), got {self.temperature}")
        check(self.collapse_margin > 0, f"collapse_margin must be > 0, got {self.collapse_margin}")
        check(
            self.prompt_len < self.model.max_len,
            f"prompt_len ({self.prompt_len}) must be < model.max_len ({self.model.max_len})",
        )
        for tc, name in ((self.train, "train"), (self.collapse_train, "collapse_train")):
            check(
                self.collapse_tokens >= tc.batch_size * (self.model.max_len + 1),
                f"collapse_tokens ({self.collapse_tokens}) is smaller than one batch of {name} "
                f"({tc.batch_size} x {self.model.max_len + 1} tokens)",
            )


# fmt: off
PRESET_TABLE = {
    "smoke": E16Config(
        model=ModelConfig(max_len=16, n_layers=1, d_model=16, n_heads=2),
        train=TRAIN_PRESETS["smoke"], collapse_train=TRAIN_PRESETS["smoke"].replace(steps=10),
        seeds=2, real_docs=200, noise_levels=(0.0, 0.3, 0.8), mix_levels=(0.8,), generations=2,
        collapse_tokens=2048, wrong_rates=(0.0, 0.5), fact_entities=4, facts_train=TRAIN_PRESETS["smoke"],
    ),
    "cpu": E16Config(),
    "gpu": E16Config(
        model=ModelConfig(max_len=128, n_layers=4, d_model=256, n_heads=8), train=TRAIN_PRESETS["gpu"],
        collapse_train=TRAIN_PRESETS["gpu"].replace(steps=1000), real_docs=10000,
        noise_levels=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8), mix_levels=(0.0, 0.2, 0.4, 0.8),
        generations=8, collapse_tokens=262144,
    ),
}
# fmt: on


def conditions(cfg: E16Config) -> list[str]:
    """The learning-curve data conditions, in sweep order: real at each noise level, synthetic, mixtures."""
    return [f"real@{p:g}" for p in cfg.noise_levels] + ["synthetic"] + [f"mix@{p:g}" for p in cfg.mix_levels]


# --- data: documents, cleaning, noise, streams (pure Python + NumPy) -------------------------------------------
def _bytes(docs: list[str]) -> np.ndarray:
    return np.frombuffer("\n\n".join(docs).encode("utf-8"), np.uint8)


@functools.lru_cache(maxsize=2)
def prepare(cfg: E16Config) -> tuple[dict[str, np.ndarray], dict]:
    """(streams, record): byte streams "val", "test", one per condition (cut to one length) and
    "collapse_real"; the record holds the cleaning report, contamination counts, realized noise rates and
    sizes (written to runs/data.json)."""
    text = load_corpus(cfg.data.name).text
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) >= cfg.min_doc_chars]
    check(
        len(paragraphs) >= cfg.real_docs,
        f"the corpus has {len(paragraphs)} paragraphs of >= {cfg.min_doc_chars} characters; real_docs asks "
        f"for {cfg.real_docs}",
    )
    docs = random.Random(cfg.data_seed).sample(paragraphs, cfg.real_docs)
    splits, report = clean.clean_split(docs, cfg.dedup, cfg.split, cfg.data_seed)
    # A probe of the cleaner on these documents: copies injected (each right after its original) and deduped
    # again. Training uses the cleaning above, so the probe measures the dedupe without changing the data.
    probe_docs, injected = synthetic.inject_duplicates(docs, cfg.dup_rate, random.Random(cfg.data_seed + 3))
    recovery = clean.injected_recovery(probe_docs, injected, clean.dedupe(probe_docs, cfg.dedup), cfg.dedup)
    contam = {
        f"{a}-{b}": len(clean.contamination(splits[a], splits[b], cfg.dedup))
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
    }
    # the same split without deduplication first, for contrast: what the check finds when a split leaks
    raw = clean.split_indices(len(docs), cfg.split, cfg.data_seed)
    raw_docs = {k: [docs[i] for i in v] for k, v in raw.items()}
    contam_raw = len(clean.contamination(raw_docs["train"], raw_docs["val"], cfg.dedup))
    train = splits["train"]
    streams: dict[str, np.ndarray] = {}
    noise = {}
    for i, p in enumerate(cfg.noise_levels):
        noisy, stats = synthetic.noisy_documents(train, p, seed=cfg.data_seed + 17 * (i + 1))
        streams[f"real@{p:g}"] = _bytes(noisy)
        noise[f"{p:g}"] = stats | {
            "char_rate": stats["chars_changed"] / max(stats["chars"], 1),
            "shuffle_rate": stats["tokens_selected"] / max(stats["tokens"], 1),
        }
    want = max(s.size for s in streams.values())
    synth, n = np.zeros(0, np.uint8), max(64, len(train))
    while synth.size < want:  # as many synthetic documents as it takes to match the real stream's size
        synth = _bytes(synthetic.synthetic_corpus(n, cfg.data_seed + 5, cfg.synth_weights))
        n *= 2
    streams["synthetic"] = synth
    size = min(s.size for s in streams.values())
    streams = {k: v[:size] for k, v in streams.items()}
    k_syn = int(round(cfg.mix_fraction * size))
    for p in cfg.mix_levels:
        streams[f"mix@{p:g}"] = np.concatenate([streams[f"real@{p:g}"][: size - k_syn], synth[:k_syn]])
    streams["val"], streams["test"] = _bytes(splits["val"]), _bytes(splits["test"])
    facts, wrong = fact_streams(cfg, size)
    streams |= facts
    streams["collapse_real"] = streams["real@0"][: cfg.collapse_tokens]
    record = {
        "documents": len(docs),
        "injected": recovery,
        "dedup": report.to_dict(),
        "split_documents": {k: len(v) for k, v in splits.items()},
        "contamination_after_dedupe": contam,
        "contamination_without_dedupe_train_val": contam_raw,
        "noise": noise,
        "stream_tokens": size,
        "val_tokens": int(streams["val"].size),
        "collapse_tokens": int(streams["collapse_real"].size),
        "wrong_facts": wrong,
    }
    return streams, record


def fact_streams(cfg: E16Config, size: int) -> tuple[dict[str, np.ndarray], dict]:
    """({"facts@<r>": stream of `size` bytes whose statements are wrong at rate r, for r in wrong_rates,
    "facts_val": true statements only, another draw}, {r: realized wrong share}): documents of the small fact
    world (`fact_entities` entities, lab.data.synthetic.facts), as many as it takes to fill `size` bytes."""
    world = synthetic.FactWorld(cfg.data_seed, cfg.fact_entities)
    streams, wrong = {}, {}
    for i, r in enumerate((*cfg.wrong_rates, None)):
        seed, n, docs = cfg.data_seed + 31 * (i + 1), 256, []
        while sum(len(d) + 2 for d in docs) < size:
            docs = synthetic.facts(n, world, seed, wrong_rate=r or 0.0)[0]
            n *= 2
        stream = _bytes(docs)[:size]
        if r is None:
            streams["facts_val"] = stream[: max(size // 8, 4096)]
        else:
            streams[f"facts@{r:g}"] = stream
            bad, total = wrong_statements(stream, world)  # in the bytes kept, not in all generated
            wrong[f"{r:g}"] = {"wrong": bad, "statements": total, "rate": bad / max(total, 1)}
    return streams, wrong


_STATEMENT = re.compile(r"The (" + "|".join(synthetic.ATTRIBUTES) + r") of (\w+) is ([^.]+)\.")


def wrong_statements(stream: np.ndarray, world) -> tuple[int, int]:
    """(wrong, all): the complete fact statements in a byte stream, and how many give a value other than
    the world's true one."""
    truth = world.truth
    found = _STATEMENT.findall(stream.tobytes().decode("utf-8", errors="replace"))
    return sum(v != truth[(e, a)] for a, e, v in found if (e, a) in truth), len(found)


def fact_probe(cfg: E16Config) -> dict:
    """Every (entity, attribute) of the fact world with every candidate value, one row of max_len + 1 bytes
    each: the same context for every candidate of a fact (the end of "<a true statement about another
    entity> The <attribute> of <entity> is ", cut to leave room for the attribute's longest value), then the
    value and ".", then spaces (after the scored bytes: a causal model's scores do not see them). At the
    cpu preset (max_len 32) the context keeps "<attribute> of <entity> is " whole; a small max_len cuts
    into it. Returns tokens (N, max_len + 1) uint8, each row's fact index, whether its value is the true
    one, the value, where it starts and its length in bytes (value and ".")."""
    world = synthetic.FactWorld(cfg.data_seed, cfg.fact_entities)
    truth, ents, width = world.truth, world.entities, cfg.model.max_len + 1
    rows, owner, is_true, values, start, tail = [], [], [], [], [], []
    for i, (e, a) in enumerate((e, a) for e in ents for a in synthetic.ATTRIBUTES):
        other = ents[(ents.index(e) + 1) % len(ents)]
        longest = max(len((v + ".").encode("utf-8")) for v in synthetic.ATTRIBUTES[a])
        ctx = (synthetic.fact_sentence(other, a, truth[(other, a)]) + f" The {a} of {e} is ").encode("utf-8")
        ctx = ctx[-(width - longest) :]
        for v in synthetic.ATTRIBUTES[a]:
            b = ctx + (v + ".").encode("utf-8")
            rows.append(np.frombuffer(b.ljust(width, b" "), np.uint8))
            owner.append(i)
            is_true.append(v == truth[(e, a)])
            values.append(v)
            start.append(len(ctx))
            tail.append(len(b) - len(ctx))
    return {
        "tokens": np.stack(rows),
        "fact": np.asarray(owner),
        "true": np.asarray(is_true),
        "value": values,
        "start": np.asarray(start),
        "tail": np.asarray(tail),
    }


@functools.partial(jax.jit, static_argnames=("model",))
def _row_logprobs(model, params, tokens_NL):
    """(M, N, L - 1): each member's log-probability of every next byte of every row."""

    return jax.vmap(lambda p: -token_cross_entropy(apply(model, p, tokens_NL[:, :-1]), tokens_NL[:, 1:]))(
        params
    )


def _frequency_top(rate: float, k: int) -> str:
    """Whether a learner of the statements' frequencies keeps the true value on top of every fact: the true
    value has frequency 1 - rate, each of the other k - 1 candidates at most rate / (k - 1) when the wrong
    values are spread evenly over them (k: the fewest candidates of any fact)."""
    if k < 2:  # one candidate: the true value is the only one, on top whatever the rate
        return " and the true value on top of every fact (it is the only candidate)"
    if 1 - rate > rate / (k - 1):
        return f" and the true value on top of every fact (1 - {rate:.3f} > {rate:.3f} / {k - 1}, the wrong values spread over the others)"
    return f", but not the true value on top of every fact (1 - {rate:.3f} <= {rate:.3f} / {k - 1})"


def fact_scores(cfg: E16Config, model, params) -> dict:
    """Per member (M): the probability its candidate scores (each value's summed byte log-probability,
    normalized over the attribute's values) put on the true value, averaged over the facts, and the share
    of facts whose true value scores highest."""
    probe = fact_probe(cfg)
    lp = np.asarray(_row_logprobs(model, params, jnp.asarray(probe["tokens"], jnp.int32)), np.float64)
    # log-prob column j scores token j + 1: the value's bytes and "." are columns start - 1 .. start + tail - 2
    cols = np.arange(lp.shape[-1])[None, :]
    first = probe["start"][:, None] - 1
    in_value = (cols >= first) & (cols < first + probe["tail"][:, None])  # (N, L - 1)
    score = (lp * in_value[None]).sum(-1)  # (M, N)
    p_true, top1 = [], []
    for f in range(int(probe["fact"].max()) + 1):
        sel = probe["fact"] == f
        z = score[:, sel] - score[:, sel].max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        t = np.argmax(probe["true"][sel])
        p_true.append(p[:, t])
        top1.append(np.argmax(p, axis=1) == t)
    chance = float(np.mean(1 / np.bincount(probe["fact"])))  # 1 / candidates, averaged over the facts
    return {
        "p_true": np.mean(p_true, axis=0).tolist(),
        "top1": np.mean(top1, axis=0).tolist(),
        "chance": chance,
        "facts": len(p_true),
        "fewest_candidates": int(np.bincount(probe["fact"]).min()),
    }


def rare_tokens(real: np.ndarray, mass: float) -> np.ndarray:
    """(256,) bool: the least frequent byte values of `real` (among those it contains) whose frequencies sum
    to at most `mass`."""
    counts = np.bincount(real, minlength=VOCAB).astype(np.float64)
    freq = counts / counts.sum()
    order = [t for t in np.argsort(freq, kind="stable") if counts[t] > 0]
    rare, total = np.zeros(VOCAB, bool), 0.0
    for t in order:
        if total + freq[t] > mass:
            break
        rare[t], total = True, total + freq[t]
    return rare


def sample_stats(rows: np.ndarray, rare: np.ndarray, n: int) -> dict:
    """Distinct-n (byte n-grams, pooled over rows), the fraction of tokens in the rare set and the number of
    distinct byte values of (R, L) generated rows."""
    return {
        "distinct": distinct_n([list(r) for r in rows], n),
        "rare_mass": float(rare[rows.ravel()].mean()),
        "types": int(np.unique(rows).size),
    }


# --- run: every JAX computation, written to files ------------------------------------------------------------
def _spec(cfg, tcfg, streams: list[np.ndarray], val, members, info, pad_to: int | None = None) -> SweepSpec:
    """A sweep of `members`, member i training on streams[extra[0]] (padded with zeros to `pad_to` tokens,
    its valid length given, if set), all evaluated on `val`."""
    task = MemberStreams(cfg.model.max_len, VOCAB, len(streams))
    data = {"val": val}
    for c, st in enumerate(streams):
        key = task.stream_key(c)
        if pad_to is None:
            data[key] = st
        else:
            data[key] = np.concatenate([st, np.zeros(pad_to - st.size, st.dtype)])
            data[f"{key}_len"] = np.asarray(st.size, np.int32)
    return SweepSpec(cfg.model.replace(vocab_size=VOCAB), tcfg, task, members, data, info, loss=stream_loss)


def _info(cfg: E16Config, what: str) -> dict:
    return {"corpus": cfg.data.name, "tokenizer": "byte", "streams": what}


@functools.partial(jax.jit, static_argnames=("model", "new", "temperature"))
def _generate_members(model, params, prompts_MRP, keys, new: int, temperature: float):
    """(M, R, P + new): each member's rows generated by lab.infer's KV-cached sampler (one program)."""
    one = lambda w, x, k: generate_cached(model, w, x, new, temperature=temperature, key=k)
    return jax.vmap(one)(params, prompts_MRP, keys)


def _samples(cfg: E16Config, model, params, streams, lengths, n_tokens: int, seed: int) -> np.ndarray:
    """(M, R, L) tokens each member samples at `temperature`: R rows of L = max_len - prompt_len new tokens,
    R * L >= n_tokens; each member's prompts are random windows of `prompt_len` tokens of the valid part of
    its own stream."""
    p, new = cfg.prompt_len, cfg.model.max_len - cfg.prompt_len
    rows = -(-n_tokens // new)
    rng = np.random.default_rng(seed)
    prompts = np.stack(
        [s[rng.integers(0, n - p, rows)[:, None] + np.arange(p)[None, :]] for s, n in zip(streams, lengths)]
    ).astype(np.int32)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(streams))
    out = _generate_members(model, params, prompts, keys, new, float(cfg.temperature))
    return np.asarray(jax.device_get(out))[:, :, p:].astype(np.uint8)


def run(cfg: E16Config, out: Path, opts) -> None:
    streams, record = prepare(cfg)
    write_measurement(out / "runs" / "data.json", record, cfg)
    kw = opts.train_kw()
    names = conditions(cfg)
    members = [
        Member(s, cfg.train.lr, cfg.train.init_scale, (c,))
        for c in range(len(names))
        for s in range(cfg.seeds)
    ]
    spec = _spec(
        cfg, cfg.train, [streams[n] for n in names], streams["val"], members, _info(cfg, ",".join(names))
    )
    train_sweep(out / "runs" / "curves", spec, desc="e16 curves", **kw)
    _facts(cfg, out, streams, kw)
    _collapse(cfg, out, streams, kw)


def _facts(cfg: E16Config, out: Path, streams: dict, kw: dict) -> None:
    """One sweep of wrong_rates x seeds on the fact streams (validated on true statements), then the probe
    of every member's final parameters: runs/facts.json, rate-major like the members."""
    names = [f"facts@{r:g}" for r in cfg.wrong_rates]
    members = [
        Member(s, cfg.facts_train.lr, cfg.facts_train.init_scale, (c,))
        for c in range(len(names))
        for s in range(cfg.seeds)
    ]
    info = _info(cfg, "fact world: " + ",".join(names))
    spec = _spec(cfg, cfg.facts_train, [streams[n] for n in names], streams["facts_val"], members, info)
    train_sweep(out / "runs" / "facts", spec, desc="e16 wrong facts", **kw)
    scores = fact_scores(cfg, spec.model, sweep_params(out / "runs" / "facts", spec))
    write_measurement(out / "runs" / "facts.json", scores, cfg)


def _collapse(cfg: E16Config, out: Path, streams: dict, kw: dict) -> None:
    """Generation 0 on the real set, then `generations` generations per regime and seed (a chain), each a
    fresh model on its chain's data: replace = the previous generation's samples only, accumulate = the real
    set and every generation's samples so far. Every generation is one sweep of the 2 x seeds chains (at
    generation 0 both regimes' chains train on the real set from the same initialization per seed, in their
    own batch order), with the streams
    padded to the largest accumulated size, so all generations share one compiled program."""
    real, val, tc, s = streams["collapse_real"], streams["val"], cfg.collapse_train, cfg.seeds
    n_tok = cfg.collapse_tokens
    cap = real.size + cfg.generations * n_tok
    rare = rare_tokens(real, cfg.rare_mass)
    root, runners = out / "runs" / "collapse", {}
    chains = [real] * (2 * s)
    record = {
        "real": sample_stats(real[: (real.size // 64) * 64].reshape(-1, 64), rare, cfg.ngram),
        "rare_tokens": int(rare.sum()),
    }
    for g in range(cfg.generations + 1):
        members = [Member(1000 * g + i % s, tc.lr, tc.init_scale, (i,)) for i in range(2 * s)]
        spec = _spec(cfg, tc, chains, val, members, _info(cfg, f"gen{g}: " + ",".join(REGIMES)), cap)
        train_sweep(root / f"gen{g}", spec, desc=f"e16 collapse gen {g}", runners=runners, **kw)
        lengths = [c.size for c in chains]
        samples = _samples(cfg, spec.model, sweep_params(root / f"gen{g}", spec), chains, lengths, n_tok, g)
        record[f"gen{g}"] = [sample_stats(x, rare, cfg.ngram) for x in samples]
        flat = samples.reshape(2 * s, -1)[:, :n_tok]
        chains = [flat[i] for i in range(s)] + [
            np.concatenate([chains[s + i], flat[s + i]]) for i in range(s)
        ]
    write_measurement(out / "runs" / "collapse.json", record, cfg)


# --- analyze: NumPy only, from the files -------------------------------------------------------------------
def _ms(values, digits: int = 3) -> str:
    return summarize(values).fmt(digits)


def final_losses(cfg: E16Config, run) -> dict[str, np.ndarray]:
    """Condition -> (seeds,) final validation loss, from the curves sweep (members: condition-major)."""
    v = run.final_val_loss
    cond = run.extra(0).astype(int)
    return {n: v[cond == c] for c, n in enumerate(conditions(cfg))}


def crossing(levels, gap) -> float:
    """The first noise level at which `gap` (noisy real loss - synthetic loss) turns from <= 0 to > 0, by
    linear interpolation between levels; NaN if it never does, the first level if it is > 0 there."""
    levels, gap = np.asarray(levels, np.float64), np.asarray(gap, np.float64)
    if gap[0] > 0:
        return float(levels[0])
    for i in range(1, len(levels)):
        if gap[i] > 0 >= gap[i - 1]:
            return float(levels[i - 1] + (levels[i] - levels[i - 1]) * (-gap[i - 1]) / (gap[i] - gap[i - 1]))
    return math.nan


def crossover(cfg: E16Config, final: dict) -> dict:
    """Per seed (conditions share a seed's initialization and batch keys: paired), the crossover noise level,
    and their mean with its t interval when every seed crosses."""
    levels = cfg.noise_levels
    per_seed = [
        crossing(levels, [final[f"real@{p:g}"][i] - final["synthetic"][i] for p in levels])
        for i in range(cfg.seeds)
    ]
    x = np.asarray(per_seed)
    out = {"per_seed": per_seed, "mean": math.nan, "ci95": (math.nan, math.nan)}
    if np.isfinite(x).all() and x.size >= 2:
        half = t_quantile(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
        out |= {"mean": float(x.mean()), "ci95": (float(x.mean() - half), float(x.mean() + half))}
    elif np.isfinite(x).all():
        out["mean"] = float(x.mean())
    return out


def finding_crossover(cfg: E16Config, final: dict) -> Finding:
    """Clean real beats synthetic (p = 0), synthetic beats the noisiest real: both decided by the rule, per
    seed paired; the crossover level reported with its CI (or why there is none)."""
    lo, hi = cfg.noise_levels[0], cfg.noise_levels[-1]
    c_clean = compare(final[f"real@{lo:g}"], final["synthetic"], paired_by_seed=True)
    c_noisy = compare(final[f"real@{hi:g}"], final["synthetic"], paired_by_seed=True)
    parts = [c_clean.verdict("greater"), c_noisy.verdict("less")]
    x = crossover(cfg, final)
    crossed = int(np.isfinite(x["per_seed"]).sum())
    if math.isfinite(x["ci95"][0]):
        where = f"crossover noise level {x['mean']:.3f} [95% CI {x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"
    else:
        where = f"no crossover CI: synthetic overtakes noisy real within [0, {hi:g}] for {crossed} of {cfg.seeds} seeds"
    per = ", ".join("none" if not math.isfinite(v) else f"{v:.3f}" for v in x["per_seed"])
    gaps = "; ".join(f"p={p:g}: real {_ms(final[f'real@{p:g}'])}" for p in cfg.noise_levels)
    evidence = (
        f"final val loss on clean real text (nats/byte), synthetic {_ms(final['synthetic'])}; {gaps}. "
        f"Synthetic minus clean real {c_clean.fmt()} ({parts[0]}); synthetic minus real at p={hi:g} "
        f"{c_noisy.fmt()} ({parts[1]}). {where}; per seed: {per}"
    )
    claim = (
        f"Clean real data beats synthetic data, but past a noise level in (0, {hi:g}] synthetic beats noisy real "
        "data (character noise + token shuffles at rate p)"
    )
    return Finding(claim, headline(parts), evidence)


def finding_mixture(cfg: E16Config, final: dict) -> Finding:
    parts, ev = [], []
    for p in cfg.mix_levels:
        c = compare(final[f"real@{p:g}"], final[f"mix@{p:g}"], paired_by_seed=True)
        parts.append(c.verdict("less"))
        ev.append(
            f"p={p:g}: mix {_ms(final[f'mix@{p:g}'])} vs real {_ms(final[f'real@{p:g}'])} ({c.fmt()}: {parts[-1]})"
        )
    claim = f"Replacing {cfg.mix_fraction:.0%} of noisy real data with synthetic data lowers the loss on clean real text"
    return Finding(claim, headline(parts), "; ".join(ev))


def fact_table(cfg: E16Config, facts: dict, run) -> dict[str, dict]:
    """Wrong-fact rate -> (seeds,) arrays: probability on the true values, top-1 share, and the final val
    loss on true statements; members picked by their rate index (extra 0), the probe's lists being in the
    sweep's member order."""
    rate = run.extra(0).astype(int)
    p, top = np.asarray(facts["p_true"]), np.asarray(facts["top1"])
    return {
        f"{r:g}": {"p_true": p[rate == i], "top1": top[rate == i], "loss": run.final_val_loss[rate == i]}
        for i, r in enumerate(cfg.wrong_rates)
    }


def finding_facts(cfg: E16Config, table: dict, facts: dict, wrong: dict) -> Finding:
    """Wrong facts are learned: p(true value) falls from rate 0 to the largest rate (paired by seed: the
    members of a seed share its initialization and batch keys). Tested only if the model learned the true
    facts at rate 0 (p(true) above chance); otherwise inconclusive, and the evidence says why."""
    lo, hi = f"{cfg.wrong_rates[0]:g}", f"{cfg.wrong_rates[-1]:g}"
    learned = compare_to(table[lo]["p_true"], facts["chance"])
    drop = compare(table[lo]["p_true"], table[hi]["p_true"], paired_by_seed=True)
    ok = learned.verdict("greater") == "supported"
    verdict = drop.verdict("less") if ok else "inconclusive"
    per = "; ".join(
        f"rate {r} (realized {wrong[r]['rate']:.3f}): p(true) {_ms(v['p_true'])}, top-1 {_ms(v['top1'])}, "
        f"loss on true statements {_ms(v['loss'])} nats/byte"
        for r, v in table.items()
    )
    ev = (
        f"{facts['facts']} facts of {cfg.fact_entities} entities, {cfg.facts_train.steps} steps; {per}. "
        f"Learned at rate {lo}: p(true) vs chance {facts['chance']:.3f} {learned.fmt()} "
        f"({learned.verdict('greater')}); rate {hi} minus rate {lo}: {drop.fmt()}"
        + ("" if ok else " (not judged: the model did not learn the true facts)")
        + f". At rate {hi}, p(true) is {np.mean(table[hi]['p_true']) / np.mean(table[lo]['p_true']):.2f} of "
        f"its value at rate {lo} and the true value scores highest for {np.mean(table[hi]['top1']):.0%} of the "
        f"facts; a learner of the statements' frequencies would keep {1 - wrong[hi]['rate']:.2f} of it"
        + (  # measured since 2026-12-04
            _frequency_top(wrong[hi]["rate"], facts["fewest_candidates"])
            if "fewest_candidates" in facts
            else ""
        )
    )
    claim = (
        f"Wrong facts are learned: at a wrong-fact rate of {float(hi):.0%} the model puts less probability on "
        "the true values than when trained on true facts only"
    )
    return Finding(claim, verdict, ev)


def collapse_series(cfg: E16Config, runs: dict, record: dict) -> dict:
    """regime -> {"loss", "distinct", "rare_mass", "types"}: (generations + 1, seeds) arrays (members of each
    generation's sweep: regime-major, then seed)."""
    s = cfg.seeds
    out = {r: {k: [] for k in ("loss", "distinct", "rare_mass", "types")} for r in REGIMES}
    for g in range(cfg.generations + 1):
        loss = runs[g].final_val_loss
        for j, r in enumerate(REGIMES):
            sl = slice(j * s, (j + 1) * s)
            out[r]["loss"].append(loss[sl])
            for k in ("distinct", "rare_mass", "types"):
                out[r][k].append([m[k] for m in record[f"gen{g}"][sl]])
    return {r: {k: np.asarray(v, np.float64) for k, v in d.items()} for r, d in out.items()}


def finding_collapse(cfg: E16Config, series: dict, regime: str) -> Finding:
    """replace: loss on real data rises, rare-token mass and distinct-n fall from generation 0 to the last
    (paired by chain). accumulate: its last-generation loss is within collapse_margin of generation 0, and
    below replace's."""
    d, g = series[regime], cfg.generations
    loss = compare(d["loss"][0], d["loss"][g], paired_by_seed=True)
    if regime == "replace":
        rare = compare(d["rare_mass"][0], d["rare_mass"][g], paired_by_seed=True)
        dist = compare(d["distinct"][0], d["distinct"][g], paired_by_seed=True)
        parts = [loss.verdict("greater"), rare.verdict("less"), dist.verdict("less")]
        claim = (
            f"Training each generation only on the previous one's samples (replace) collapses over {g} "
            "generations: the loss on real data rises, the mass on rare tokens and distinct n-grams fall"
        )
        evidence = (
            f"generation 0 -> {g}: val loss {_ms(d['loss'][0])} -> {_ms(d['loss'][g])} ({loss.fmt()}: "
            f"{parts[0]}); rare-token mass {_ms(d['rare_mass'][0])} -> {_ms(d['rare_mass'][g])} ({rare.fmt()}: "
            f"{parts[1]}); distinct-{cfg.ngram} {_ms(d['distinct'][0])} -> {_ms(d['distinct'][g])} "
            f"({dist.fmt()}: {parts[2]})"
        )
        return Finding(claim, headline(parts), evidence)
    other = series["replace"]
    vs = compare(other["loss"][g], d["loss"][g], paired_by_seed=True)
    parts = [loss.verdict("equal", cfg.collapse_margin), vs.verdict("less")]
    claim = (
        f"Accumulating real and synthetic data avoids collapse over {g} generations: the loss on real data stays "
        f"within {cfg.collapse_margin:g} nats of generation 0 and below replace's"
    )
    evidence = (
        f"generation 0 -> {g}: val loss {_ms(d['loss'][0])} -> {_ms(d['loss'][g])} ({loss.fmt()}, margin "
        f"±{cfg.collapse_margin:g}: {parts[0]}); against replace at generation {g} {_ms(other['loss'][g])} "
        f"({vs.fmt()}: {parts[1]}); rare-token mass {_ms(d['rare_mass'][0])} -> {_ms(d['rare_mass'][g])}, "
        f"distinct-{cfg.ngram} {_ms(d['distinct'][0])} -> {_ms(d['distinct'][g])}"
    )
    return Finding(claim, headline(parts), evidence)


def _plots(cfg, run, final, series, record, outs: Outputs) -> None:
    names = conditions(cfg)
    cond = run.extra(0).astype(int)
    tokens = run.val_steps * cfg.train.batch_size * cfg.model.max_len
    fig, axes = plots.figure(ncols=2, width=6.0)
    for c, n in enumerate(names):
        ax = axes[0, 1] if n.startswith("mix") or n == "synthetic" else axes[0, 0]
        plots.band(ax, tokens, run.val_loss[cond == c], n)
        if n == "synthetic":
            plots.band(axes[0, 0], tokens, run.val_loss[cond == c], n)
    for ax, what in (
        (axes[0, 0], "real at noise level p, and synthetic"),
        (axes[0, 1], "mixtures and synthetic"),
    ):
        plots.finish(ax, f"e16: {what}", "training tokens seen (bytes)", "val loss on clean real (nats/byte)")
    fig.suptitle(
        f"e16: learning curves on the same clean real validation text (mean ± sd, {cfg.seeds} seeds)"
    )
    plots.save(fig, outs.plot("curves.png"))

    fig, axes = plots.figure(width=7.0)
    ax = axes[0, 0]
    lv = list(cfg.noise_levels)
    plots.points(ax, lv, [final[f"real@{p:g}"] for p in lv], "noisy real")
    plots.points(
        ax,
        list(cfg.mix_levels),
        [final[f"mix@{p:g}"] for p in cfg.mix_levels],
        f"mix ({cfg.mix_fraction:.0%} synthetic)",
    )
    m, sd = plots.mean_sd(final["synthetic"])
    ax.axhline(m, color="grey", linestyle="--", label=f"synthetic (mean, sd {sd:.3f})")
    x = crossover(cfg, final)
    if math.isfinite(x["mean"]):
        ax.axvline(x["mean"], color="black", linestyle=":", label=f"crossover p* = {x['mean']:.2f}")
    plots.finish(
        ax,
        "e16: final val loss against the noise level of the real data (mean ± sd)",
        "noise level p (rate)",
        "val loss on clean real (nats/byte)",
    )
    plots.save(fig, outs.plot("crossover.png"))

    fig, axes = plots.figure(ncols=3, width=4.6)
    gens = np.arange(cfg.generations + 1)
    real = record["real"]
    for j, (key, label, ref) in enumerate(
        (
            ("loss", "val loss on clean real (nats/byte)", None),
            ("distinct", f"distinct-{cfg.ngram} (fraction)", real["distinct"]),
            ("rare_mass", "mass on rare tokens (fraction)", real["rare_mass"]),
        )
    ):
        ax = axes[0, j]
        for r in REGIMES:
            plots.band(ax, gens, series[r][key].T, r)
        if ref is not None:
            ax.axhline(ref, color="grey", linestyle=":", label="real data")
        plots.finish(ax, f"e16 collapse: {key.replace('_', ' ')}", "generation", label)
    fig.suptitle(f"e16: model collapse, replace vs accumulate (mean ± sd over {cfg.seeds} chains)")
    plots.save(fig, outs.plot("collapse.png"))


def _tables(cfg, final, series, record, outs: Outputs) -> None:
    t = Table(
        f"Final val loss on clean real text after {cfg.train.steps} steps, equal tokens per condition (mean ± sd, "
        f"{cfg.seeds} seeds)",
        ["condition", "val loss (nats/byte)", "realized char noise", "realized token shuffle"],
    )
    for n in conditions(cfg):
        p = n.split("@")[1] if "@" in n else None
        nz = record["noise"].get(p, {}) if n.startswith("real") else {}
        t.add(
            n,
            _ms(final[n]),
            f"{nz['char_rate']:.3f}" if nz else "—",
            f"{nz['shuffle_rate']:.3f}" if nz else "—",
        )
    outs.table("conditions.md", t)
    d = record
    c = Table("Cleaning the real documents (before any split)", ["what", "count"])
    for k, v in (
        ("documents", d["documents"]),
        *((f"dedupe: {k}", v) for k, v in d["dedup"].items()),
        *((f"split documents: {k}", v) for k, v in d["split_documents"].items()),
        *((f"contamination after dedupe: {k}", v) for k, v in d["contamination_after_dedupe"].items()),
        ("contamination train-val, same split without dedupe", d["contamination_without_dedupe_train_val"]),
        *(
            (f"probe, copies of {cfg.dup_rate:.0%} of the documents injected: {k.replace('_', ' ')}", v)
            for k, v in d["injected"].items()
        ),
    ):
        c.add(k, v)
    outs.table("cleaning.md", c)
    g = Table(
        f"Model collapse per generation (mean ± sd over {cfg.seeds} chains; {cfg.collapse_tokens} tokens of data "
        f"per generation, {cfg.collapse_train.steps} steps)",
        [
            "generation",
            *(f"{r}: {k}" for r in REGIMES for k in ("val loss", f"distinct-{cfg.ngram}", "rare mass")),
        ],
    )
    for i in range(cfg.generations + 1):
        g.add(i, *(_ms(series[r][k][i]) for r in REGIMES for k in ("loss", "distinct", "rare_mass")))
    outs.table("collapse.md", g)


def _fact_outputs(cfg, table: dict, facts: dict, wrong: dict, outs: Outputs) -> None:
    t = Table(
        f"Wrong facts: {facts['facts']} facts ({cfg.fact_entities} entities x {len(synthetic.ATTRIBUTES)} "
        f"attributes), one model per wrong-fact rate and seed, {cfg.facts_train.steps} steps (mean ± sd, "
        f"{cfg.seeds} seeds)",
        ["wrong-fact rate", "realized", "p(true value)", "1 - realized", "top-1 true", "loss on true statements"],
        note=f"p(true value): each candidate value's summed byte log-probability after \"The <attribute> of "
        f"<entity> is\", normalized over the attribute's values, averaged over the facts; chance "
        f"{facts['chance']:.3f}. 1 - realized: what a learner of the statements' frequencies would give.",
    )  # fmt: skip
    for r, v in table.items():
        t.add(r, f"{wrong[r]['rate']:.3f}", _ms(v["p_true"]), f"{1 - wrong[r]['rate']:.3f}", _ms(v["top1"]),
              _ms(v["loss"]))  # fmt: skip
    outs.table("facts.md", t)
    fig, axes = plots.figure(width=6.5)
    ax = axes[0, 0]
    rates = [float(r) for r in table]
    plots.points(ax, rates, [v["p_true"] for v in table.values()], "p(true value)")
    plots.points(ax, rates, [v["top1"] for v in table.values()], "top-1 is the true value")
    realized = [1 - wrong[r]["rate"] for r in table]
    ax.plot(rates, realized, color="grey", linestyle="--", label="1 - realized rate (frequency learner)")
    ax.axhline(facts["chance"], color="black", linestyle=":", label=f"chance {facts['chance']:.3f}")
    plots.finish(
        ax,
        f"e16: wrong facts, scored on true facts ({cfg.seeds} seeds)",
        "wrong-fact rate of the training statements",
        "probability / share of facts",
        outside=True,
    )
    plots.save(fig, outs.plot("facts.png"))


def analyze(cfg: E16Config, out: Path):
    record = read_measurement(out / "runs" / "data.json", cfg)
    collapse = read_measurement(out / "runs" / "collapse.json", cfg)
    run = load_run(out / "runs" / "curves")
    gens = [load_run(out / "runs" / "collapse" / f"gen{g}") for g in range(cfg.generations + 1)]
    facts = read_measurement(out / "runs" / "facts.json", cfg)
    ftab = fact_table(cfg, facts, load_run(out / "runs" / "facts"))
    final = final_losses(cfg, run)
    series = collapse_series(cfg, gens, collapse)
    outs = Outputs(out)
    _tables(cfg, final, series, record, outs)
    _fact_outputs(cfg, ftab, facts, record["wrong_facts"], outs)
    _plots(cfg, run, final, series, collapse, outs)
    findings = [
        finding_crossover(cfg, final),
        finding_mixture(cfg, final),
        finding_collapse(cfg, series, "replace"),
        finding_collapse(cfg, series, "accumulate"),
        finding_facts(cfg, ftab, facts, record["wrong_facts"]),
    ]
    contam = sum(record["contamination_after_dedupe"].values())
    inj = record["injected"]
    summary = evidence_summary(findings)
    summary += (
        f" Cleaning: {record['dedup']['exact_removed']} exact and {record['dedup']['near_removed']} near duplicates "
        f"removed of {record['documents']} documents; {contam} contaminated documents across splits after "
        f"dedupe, {record['contamination_without_dedupe_train_val']} in train-val without it; with copies of "
        f"{cfg.dup_rate:.0%} of the documents injected, the dedupe removed {inj['exact_removed']} of "
        f"{inj['exact_injected']} exact copies, {inj['near_J>=0.8_removed']} of {inj['near_J>=0.8_injected']} "
        f"near copies at Jaccard >= 0.8 and {inj['near_J<0.8_removed']} of {inj['near_J<0.8_injected']} below it."
    )
    return outs.findings(headline([f.verdict for f in findings]), summary, findings)


EXPERIMENT = Experiment(
    name="e16_synthetic_data",
    title="Synthetic data: generators, noise, cleaning, crossover and model collapse",
    claim=CLAIM,
    config_class=E16Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
)
