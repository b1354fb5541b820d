"""Load a trained text model from any experiment's run directory (this package never trains one).

A run directory (written by `lab.train.train_sweep`) holds config.json (model, train config, task,
members, data description) and checkpoints/. `load_text_model` restores one member's parameters and
rebuilds the tokenizer the run was trained with (byte and char from their description; BPE by refitting
on the same corpus text, which is deterministic, and checking the ranks' hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import config as config_lib
from lab.errors import CheckpointError, ConfigError, LabError
from lab.fileio import read_json
from lab.model import ModelConfig
from lab.runs import read_rows
from lab.train.config import TrainConfig


@dataclass
class TextModel:
    cfg: ModelConfig
    params: dict
    tokenizer: object  # lab.data.tokenize tokenizer: encode(str) -> ids, decode, token_bytes
    run_dir: Path
    member: int
    description: str


def _tokenizer(info: dict, run_dir: Path):
    from lab.data.tokenize import make_tokenizer, tokenizer_from_dict

    desc = info.get("tokenizer") or {}
    if desc.get("kind") != "bpe":
        return tokenizer_from_dict(desc)
    from lab.data.corpora import load_corpus

    text = load_corpus(info["corpus"]).text
    fit_on = text[: int(len(text) * (1.0 - info.get("val_fraction", 0.1)))] or text
    tok = make_tokenizer("bpe", fit_on, desc["vocab_size"], desc["pattern"])
    if tok.to_dict() != desc:
        raise CheckpointError(
            f"{run_dir}: refitting its BPE tokenizer on {info['corpus']} gave different ranks than the run "
            f"recorded (the corpus changed?); cannot decode this model's ids"
        )
    return tok


def load_text_model(run_dir: str | Path, member: int = 0) -> TextModel:
    """Member `member` of the sweep in `run_dir`, with its tokenizer."""
    from lab.train.loop import latest_state
    from lab.train.sweep import Member

    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; --checkpoint takes a run directory with config.json and checkpoints/, "
            f"e.g. results/e01_tokenization/runs/lm/byte"
        )
    try:
        conf = read_json(path)["config"]
        cfg = config_lib.from_dict(ModelConfig, conf["model"])
        tcfg = config_lib.from_dict(TrainConfig, conf["train"])
        members = [Member.from_dict(m) for m in conf["members"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a run config written by this version of lab ({e})") from None
    if conf.get("task", {}).get("kind") != "text" or "data" not in conf:
        raise CheckpointError(
            f"{run_dir} trained on task {conf.get('task', {}).get('kind')!r}, not text; the dashboard needs a "
            f"language model (a run on a text corpus)"
        )
    if conf.get("forward"):
        raise CheckpointError(
            f"{run_dir} trains through a custom forward ({conf['forward']}), not the plain model; choose a run "
            f"of a plain language model, e.g. results/e01_tokenization/runs/lm/byte"
        )
    if not 0 <= member < len(members):
        raise ConfigError(f"--member {member} is out of range; {run_dir} has members 0..{len(members) - 1}")
    if cfg.mask != "causal":
        raise CheckpointError(f"{run_dir} holds a {cfg.mask} model; generation needs a causal one")
    step, state = latest_state(run_dir, cfg, tcfg, members)
    import jax

    params = jax.tree_util.tree_map(lambda x: x[member], state.params)
    tok = _tokenizer(conf["data"], run_dir)
    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    desc = describe(run_dir, conf, cfg, tcfg, member, members[member], step, n_params)
    return TextModel(cfg, params, tok, run_dir, member, desc)


def describe(run_dir: Path, conf: dict, cfg: ModelConfig, tcfg: TrainConfig, member: int, m, step: int,
             n_params: int) -> str:  # fmt: skip
    """One line on what a run's model is and how it was trained, from the files the run wrote: the corpus
    and tokenizer, the model's size, the steps and tokens it saw, how long that took (timing.json, when the
    last session trained every step) and its validation loss at that step (metrics.jsonl)."""
    data = conf["data"]
    seq_len = conf.get("task", {}).get("seq_len", cfg.max_len)
    tokens = step * tcfg.batch_size * seq_len
    trained = f"{step} steps of {tcfg.batch_size} x {seq_len} tokens ({tokens / 1e6:.1f}M tokens"
    try:
        timing = read_json(run_dir / "timing.json")
        if timing.get("steps") == step:  # one session trained it all: its time is the training time
            kind = (
                read_json(run_dir / "config.json").get("provenance", {}).get("devices", {}).get("device_kind")
            )
            trained += f" in {timing['train_seconds']:.0f} s" + (f" on {kind}" if kind else "")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # how long it took is a nicety; a run without timing.json still serves
    trained += ")"
    try:
        val = [r["val_loss"] for r in read_rows(run_dir / "metrics.jsonl")
               if r.get("member") == member and r.get("step") == step and "val_loss" in r]  # fmt: skip
        if val and val[-1] is not None:
            trained += f", validation loss {val[-1]:.2f} nats/token"
    except LabError:
        pass
    return (
        f"{cfg.n_layers} layer{'s' if cfg.n_layers != 1 else ''}, d_model {cfg.d_model}, context {cfg.max_len}, {n_params / 1e6:.2f}M parameters; "
        f"trained on {data.get('corpus')} ({data['tokenizer'].get('kind')} tokens, vocabulary {cfg.vocab_size}): "
        f"{trained} · {run_dir} member {member} (seed {m.seed}, lr {m.lr:g})"
    )
