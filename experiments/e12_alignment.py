"""Project 12: "RLHF doesn't teach skills, it reshapes preferences".

Claim tested: after RLHF (PPO against a learned reward model), a model's skills on instruction tasks stay
where instruction tuning left them (exact match within a margin stated in advance, `skill_margin`), while
the feature the reward model prefers changes frequency (the number of "!" in chat responses rises).
Along the way, on a character-level model trained from scratch (lab.align.data has the data):

  plain finetuning     the base model (pretrained on the source domain, words over a-m) trained on with the
                       target-domain text (the instruction payloads as running text): target loss falls,
                       source loss rises (forgetting), and no instruction is followed
  instruction tuning   the base model trained on prompt -> response examples, loss on the response only
                       (Reverse, Uppercase, Summarize = extract the [marked] sentence, Add, and chat):
                       held-out exact match against plain finetuning on the same text (goal >= 0.9 vs <= 0.1)
  reward model         the instruction-tuned model with a reward head, trained on preference pairs of its
                       own chat samples labelled by a programmatic gold preference ("!" liked up to `gold_peak`
                       per response, less beyond); held-out pair accuracy (goal >= 0.85)
  PPO                  all under jit inside the one driver (lab.train.step's on-policy path): rollouts at the
                       sampling temperature, value head, KL penalty to the frozen reference (k1 and k3 both
                       logged), GAE, clipped policy and value losses, several epochs per batch
  DPO                  on the same preference pairs, from the same initial policy
  over-optimization    gold reward against d = sqrt(KL) for best-of-n (n = 1..bon_max_n, KL = log n - (n-1)/n)
                       and along PPO, fitted with Gao et al.'s d(a - b d) and d(a - b log d), with R^2

Every training (pretraining, finetuning, instruction tuning, reward model, PPO, DPO) is a sweep over seeds
through lab.train.train_sweep, with metrics, checkpoints and resume.
The cpu preset took 195 s run alone on 2 cores (`lab run e12 --fresh`, 769f791, 2026-12-05), within the
house's 5 minutes and the issue's 8; inside `lab run all` at 25e8d2b it took 307 s. The instruction-tuning
stage needs thousands of steps for held-out exact match to reach the 0.9 goal (the summarize skill is learned
late and at a seed-dependent step), and that stage is most of the run. On CPU the sweeps run as one vmapped
program on one device when the strategy is left to `auto` (see `run`).

Run:      lab run e12 [--preset smoke|cpu|gpu] [--set kl_coef=0.1] [--seeds 3]
Redraw:   lab analyze e12
Writes:   results/e12_alignment/
  runs/{pretrain,finetune,instruct,reward,ppo,dpo}/   one sweep over seeds each (config.json, metrics.jsonl,
                       checkpoints/); ppo's metrics hold proxy_reward, gold_reward, kl_k1, kl_k3, bang_count
                       per chunk and val_* of the same at each evaluation
  runs/measure.json    per stage and seed: exact match per skill, source/target losses, reward-model accuracy,
                       the policies' samples ("!" counts, gold, proxy, KL to the reference), a few sample texts
  runs/samples.npz     the initial policy's best-of-n samples per seed: "!" count and normalised proxy reward
  plots/rlhf.png, plots/skills.png, tables/stages.md, tables/overoptimization.md, findings.json
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lab import ops
from lab.align import data as D
from lab.align.rlhf import (
    PairsTask,
    PPOTask,
    _seq_logp,
    chat_prompts,
    dpo_loss_fn,
    generate,
    response_logp,
    reward_model_loss,
    reward_score,
)
from lab.analysis import Finding, Outputs, Table, beside, compare, compare_to, headline, overopt, summarize
from lab.analysis.findings import evidence_summary
from lab.config import check, check_at_least
from lab.data.tasks import PromptAnswer, TextWindows
from lab.errors import DataError
from lab.experiment import Experiment
from lab.model import ModelConfig, apply
from lab.runs import load_run, read_measurement, read_rows, write_measurement
from lab.train import Member, SweepSpec, TrainConfig, sweep_params, train_sweep
from lab.train.loop import params_sha256
from lab.train.sweep import fresh_seeds
from lab.viz import plots

STAGES = ("base", "finetune", "instruct", "ppo", "dpo")
NOT_FITTED = "not fitted: fewer than 3 points or no spread"


def _tc(steps, batch, lr, log, ev, warmup=None, **kw) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=max(1, steps // 10) if warmup is None else warmup,
        log_every=log,
        eval_every=ev,
        eval_batches=kw.pop("eval_batches", 4),
        ckpt_every=kw.pop("ckpt_every", steps),
        **kw,
    )


@dataclass(frozen=True)
class E12Config:
    model: ModelConfig = ModelConfig(n_layers=2, d_model=64, n_heads=4)
    pretrain: TrainConfig = _tc(200, 32, 3e-3, 50, 100)
    finetune: TrainConfig = _tc(100, 32, 1e-3, 50, 50)
    # 2600 steps, chosen on seeds 0-2: 800 left held-out exact match at 0.46 and 1200 at 0.72; at 2000 the
    # summarize skill (copying the marked sentence) was still half learned in one seed of three in two of three
    # runs (0.29, 0.40), and at 2600 the goal was met in every seed. On the fresh seeds 3-5 that the published
    # results use, it is not: summarize is 1.0, 0.30 and 1.0 (seed 4 half learned), and the finding reports the
    # goal not met. This stage is most of e12's time (195-307 s for the cpu preset).
    instruct: TrainConfig = _tc(2600, 64, 3e-3, 50, 1300)
    reward: TrainConfig = _tc(100, 32, 2e-3, 50, 50)
    # PPO: a step is one rollout batch and ppo_epochs x ppo_minibatches updates; constant lr after warmup
    ppo: TrainConfig = _tc(30, 32, 1e-4, 5, 5, warmup=3, min_lr_ratio=1.0, eval_batches=2, weight_decay=0.0)
    dpo: TrainConfig = _tc(100, 32, 1e-4, 50, 50, min_lr_ratio=1.0, weight_decay=0.0)
    response_len: int = 10  # chat response characters
    bang_p: float = 0.06  # probability of "!" per chat character in the instruction data
    gold_peak: int = 2  # the gold preference likes this many "!" per response most
    chat_share: float = 0.1  # of the instruction examples
    n_instructions: int = 6000
    n_heldout: int = 200  # held-out examples per skill for exact match
    source_chars: int = 40_000
    n_pairs: int = 2000  # preference pairs sampled for training (pairs the gold rule ties are dropped)
    val_pairs: int = 600
    kl_coef: float = 0.1
    clip: float = 0.2
    value_clip: float = 0.2
    ppo_epochs: int = 3
    ppo_minibatches: int = 2
    temperature: float = 1.0
    dpo_beta: float = 0.1
    bon_prompts: int = 4
    bon_samples: int = 512  # per prompt, from the initial policy
    bon_max_n: int = 256
    policy_samples: int = 512  # chat samples per policy and seed for the behaviour shift and KL
    skill_margin: float = (
        0.05  # |change in exact match| below this counts as "no difference" (fixed in advance)
    )
    seeds: int = 3
    # The instruction-tuning length was chosen on seeds 0-2 (its comment above), so the published verdicts come
    # from fresh seeds 3-5 (DESIGN convention 15: a choice made on some seeds is tested on others).
    first_seed: int = fresh_seeds(3)

    def __post_init__(self):
        check_at_least(self, 1, "seeds", "n_heldout", "bon_prompts", "policy_samples", "response_len")
        check_at_least(self, 0, "first_seed")
        check(
            self.n_pairs >= 1 and self.val_pairs >= 1,
            "n_pairs and val_pairs must be >= 1: preference data cannot be empty",
        )
        check(self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}")
        check(self.clip > 0, f"clip must be > 0, got {self.clip}")
        check(self.value_clip > 0, f"value_clip must be > 0, got {self.value_clip}")
        check(self.ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        check(self.ppo_minibatches >= 1, f"ppo_minibatches must be >= 1, got {self.ppo_minibatches}")
        check(
            self.ppo.batch_size % self.ppo_minibatches == 0,
            f"ppo.batch_size ({self.ppo.batch_size}) must be a multiple of ppo_minibatches ({self.ppo_minibatches})",
        )
        check(self.dpo_beta > 0, f"dpo_beta must be > 0, got {self.dpo_beta}")
        check(0 < self.bang_p < 1, f"bang_p must be in (0, 1), got {self.bang_p}")
        check(0 < self.chat_share < 1, f"chat_share must be in (0, 1), got {self.chat_share}")
        check(self.gold_peak >= 1, f"gold_peak must be >= 1, got {self.gold_peak}")
        check(self.n_instructions >= 8, f"n_instructions must be >= 8, got {self.n_instructions}")
        check(2 <= self.bon_max_n <= self.bon_samples, "bon_max_n must be in 2..bon_samples")
        check(0 < self.skill_margin < 1, f"skill_margin must be in (0, 1), got {self.skill_margin}")
        check(self.source_chars >= 10 * D.seq_len_for(self.response_len), "source_chars is too small")
        _ = (self.ppo_task, self.lm)  # refuse bad PPO or model settings with their own messages

    @property
    def seq_len(self) -> int:
        return D.seq_len_for(self.response_len)

    @property
    def lm(self) -> ModelConfig:
        return self.model.replace(vocab_size=D.VOCAB_SIZE, max_len=self.seq_len)

    @property
    def ppo_task(self) -> PPOTask:
        return PPOTask(
            seq_len=D.CHAT_PROMPT_LEN + self.response_len,
            vocab_size=D.VOCAB_SIZE,
            prompt_len=D.CHAT_PROMPT_LEN,
            temperature=self.temperature,
            kl_coef=self.kl_coef,
            clip=self.clip,
            value_clip=self.value_clip,
            epochs=self.ppo_epochs,
            minibatches=self.ppo_minibatches,
            gold_peak=self.gold_peak,
        )


_SMOKE_TC = dict(log=5, ev=10, eval_batches=2)
PRESET_TABLE = {
    "smoke": E12Config(
        model=ModelConfig(n_layers=1, d_model=32, n_heads=2),
        pretrain=_tc(10, 8, 3e-3, **_SMOKE_TC),
        finetune=_tc(10, 8, 1e-3, **_SMOKE_TC),
        instruct=_tc(20, 16, 3e-3, **_SMOKE_TC),
        reward=_tc(60, 16, 3e-3, **_SMOKE_TC),
        ppo=_tc(
            10, 8, 1e-4, 5, 5, warmup=2, min_lr_ratio=1.0, weight_decay=0.0, ckpt_every=5, eval_batches=2
        ),
        dpo=_tc(10, 8, 3e-4, min_lr_ratio=1.0, weight_decay=0.0, **_SMOKE_TC),
        response_len=8,
        n_instructions=256,
        n_heldout=16,
        source_chars=4000,
        n_pairs=600,
        val_pairs=200,
        ppo_epochs=2,
        bon_prompts=2,
        bon_samples=16,
        bon_max_n=8,
        policy_samples=32,
        seeds=2,
    ),
    "cpu": E12Config(),
    "gpu": E12Config(
        model=ModelConfig(n_layers=4, d_model=256, n_heads=8),
        pretrain=_tc(3000, 64, 1e-3, 50, 500),
        finetune=_tc(1000, 64, 5e-4, 50, 250),
        instruct=_tc(4000, 64, 1e-3, 50, 1000),
        reward=_tc(1000, 64, 3e-4, 50, 250),
        ppo=_tc(300, 256, 3e-5, 10, 20, warmup=10, min_lr_ratio=1.0, eval_batches=4, weight_decay=0.0),
        dpo=_tc(1000, 64, 1e-4, 50, 250, min_lr_ratio=1.0, weight_decay=0.0),
        n_instructions=50_000,
        n_heldout=1000,
        source_chars=1_000_000,
        n_pairs=20_000,
        val_pairs=4000,
        bon_prompts=16,
        bon_samples=1024,
        policy_samples=2048,
        seeds=5,
    ),
}


# --- data ------------------------------------------------------------------------------------------------------
def make_data(cfg: E12Config) -> dict:
    """Every generated array the sweeps train on (the same for every seed; seeds differ in initialization and
    batch order): the source stream, the target stream (the instruction payloads as running text), the
    instruction examples, and held-out examples per skill."""
    L = cfg.seq_len
    rng = np.random.default_rng(1234)
    src = D.source_text(rng, cfg.source_chars)
    cut = int(0.9 * len(src))
    train_ex = D.instruction_examples(cfg.n_instructions, 1, cfg.response_len, cfg.bang_p, cfg.chat_share)
    val_ex = D.instruction_examples(
        max(64, cfg.n_instructions // 10), 2, cfg.response_len, cfg.bang_p, cfg.chat_share
    )
    text = lambda ex: " ".join(p for _, _, _, p in ex) + " "
    tr, va = D.pack(train_ex, L), D.pack(val_ex, L)
    heldout = {}
    rng = np.random.default_rng(3)
    seen = {p for _, p, _, _ in train_ex}
    for k in D.SKILLS:
        ex = []
        while len(ex) < cfg.n_heldout:
            p, r, pay = D.instruction(rng, k)
            if k == "A" or p not in seen:  # held out: never trained on (A's 100 sums are all trained on)
                ex.append((k, p, r, pay))
        heldout[k] = D.pack(ex, L)
    return {
        "source": {"train": D.text_stream(src[:cut]), "val": D.text_stream(src[cut:])},
        "target": {"train": D.text_stream(text(train_ex)), "val": D.text_stream(text(val_ex))},
        "instruct": {"train": tr["x"], "train_mask": tr["mask"], "val": va["x"], "val_mask": va["mask"]},
        "heldout": heldout,
    }


def members(cfg: E12Config, tcfg: TrainConfig, *extra) -> list[Member]:
    """One member per seed (first_seed on); extra[0] is the member's index (it picks its own reference / reward
    model)."""
    return [
        Member(cfg.first_seed + i, tcfg.lr, tcfg.init_scale, (float(i), *map(float, extra)))
        for i in range(cfg.seeds)
    ]


# --- measurements (JAX) --------------------------------------------------------------------------------------
# Each measurement is one module-level jitted function of stacked parameters (leading axis: members) with the
# model config static, so every stage of equal shapes reuses one compiled program.
@functools.partial(jax.jit, static_argnums=0)
def _em(cfg, params, x, mask):
    hit = lambda p: jnp.all((jnp.argmax(apply(cfg, p, x[:, :-1]), -1) == x[:, 1:]) | ~mask, -1).mean()
    return jax.vmap(hit)(params)


def exact_match(cfg: ModelConfig, params, heldout) -> dict[str, list[float]]:
    """Per skill, each member's fraction of held-out examples whose every response token is the argmax
    (teacher forced; equal to greedy exact match, lab.data.tasks.PromptAnswer)."""
    return {
        k: np.asarray(_em(cfg, params, v["x"], v["mask"]), np.float64).tolist() for k, v in heldout.items()
    }


@functools.partial(jax.jit, static_argnums=0)
def _stream_loss(cfg, params, w):
    return jax.vmap(lambda p: ops.cross_entropy(apply(cfg, p, w[:, :-1]), w[:, 1:])[0])(params)


def stream_loss(
    cfg: ModelConfig, params, stream: np.ndarray, seq_len: int, n_windows: int = 64
) -> list[float]:
    """Each member's mean next-token loss (nats/char) over evenly spaced windows of a validation stream."""
    starts = np.linspace(0, len(stream) - seq_len - 1, n_windows).astype(int)
    w = np.stack([stream[s : s + seq_len + 1] for s in starts])
    return np.asarray(_stream_loss(cfg, params, w), np.float64).tolist()


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _sample(cfg, params, keys, n, response_len, temperature, prompts=None):
    def one(p, k):
        kp, ks = jax.random.split(k)
        pr = chat_prompts(kp, n) if prompts is None else jnp.repeat(prompts, n // prompts.shape[0], axis=0)
        return generate(cfg, p, pr, response_len, temperature, ks)

    return jax.vmap(one)(params, keys)


def sample_chat(cfg: ModelConfig, params, n: int, response_len: int, temperature: float, key, prompts=None):
    """(members, n, 6 + response_len) chat samples from each member's policy: on random prompts, or on
    `prompts` (P, 6), n / P samples each, in prompt order."""
    keys = jax.random.split(key, jax.tree_util.tree_leaves(params)[0].shape[0])
    return np.asarray(_sample(cfg, params, keys, n, response_len, temperature, prompts))


@functools.partial(jax.jit, static_argnums=0)
def _scores(cfg, rm_params, tokens):
    return jax.vmap(lambda p, t: reward_score(cfg, p, t))(rm_params, tokens)


def scores(cfg, rm_params, tokens) -> np.ndarray:
    """(members, N) each member's reward model's raw score of its own rows of tokens (members, N, T)."""
    return np.asarray(_scores(cfg, rm_params, jnp.asarray(tokens)), np.float64)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _kl(cfg, params, ref, tokens, temperature):
    def one(p, r, t):
        lp, _, _ = response_logp(cfg, p, t, D.CHAT_PROMPT_LEN, temperature)
        lr, _, _ = response_logp(cfg, r, t, D.CHAT_PROMPT_LEN, temperature)
        return jnp.mean(jnp.sum(lp - lr, -1))

    return jax.vmap(one)(params, ref, tokens)


def kl_to_ref(cfg, params, ref, tokens, temperature) -> np.ndarray:
    """(members,) mean over samples of sum_t log pi - log ref (k1; the samples are the policy's own)."""
    return np.asarray(_kl(cfg, params, ref, jnp.asarray(tokens), temperature), np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _ref_logp(cfg, params, tokens):
    return jax.vmap(lambda p: _seq_logp(cfg, p, tokens, D.CHAT_PROMPT_LEN))(params)


def preference_pairs(tokens: np.ndarray, peak: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(chosen, rejected) from consecutive samples of a shuffled pool, labelled by the gold preference; pairs
    the gold rule scores equal are dropped."""
    pool = tokens[rng.permutation(len(tokens))]
    a, b = pool[0::2], pool[1::2][: len(pool[0::2])]
    a = a[: len(b)]
    ga = D.gold_reward(D.bang_count(a[:, D.CHAT_PROMPT_LEN :]), peak)
    gb = D.gold_reward(D.bang_count(b[:, D.CHAT_PROMPT_LEN :]), peak)
    keep = ga != gb
    if not keep.any():
        raise DataError("every sampled pair is a tie under the gold preference: the preference data is empty")
    first = (ga > gb)[keep, None]
    return np.where(first, a[keep], b[keep]), np.where(first, b[keep], a[keep])


def ppo_spec(cfg: E12Config, sft, rm, norm) -> SweepSpec:
    """The PPO sweep: from the instruction-tuned policies `sft` (stacked over members), against the frozen
    reward models `rm` with their normalisation `norm` (members, 2) and the frozen references (= sft). The
    hashes of the reference and reward model and the normalisation go into config.json, so a resume against
    different ones is refused."""
    data = {
        "ref": jax.tree_util.tree_map(np.asarray, sft),
        "rm": jax.tree_util.tree_map(np.asarray, rm),
        "norm": np.asarray(norm, np.float32),
    }
    info = {"ref_sha256": params_sha256(sft), "rm_sha256": params_sha256(rm), "norm": data["norm"].tolist()}
    return SweepSpec(cfg.lm, cfg.ppo, cfg.ppo_task, members(cfg, cfg.ppo), data, info, init_params=sft)


def stage_params(cfg: E12Config, out: Path, name: str):
    """The stacked trained parameters of sweep `name` (pretrain, finetune, instruct, reward, ppo, dpo)."""
    tcfg = getattr(cfg, name)  # the sweeps are named after their train configs
    extra = (cfg.dpo_beta,) if name == "dpo" else ()
    spec = SweepSpec(cfg.lm, tcfg, None, members(cfg, tcfg, *extra))
    return sweep_params(Path(out) / "runs" / name, spec)


def _sha256(arrays: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode() + np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


# --- run ---------------------------------------------------------------------------------------------------------
def run(cfg: E12Config, out: Path, opts) -> None:
    lm, L, S = cfg.lm, cfg.seq_len, cfg.seeds
    runs = out / "runs"
    data = make_data(cfg)
    kw = opts.train_kw()
    default_mesh = kw["mesh"] is None or kw["mesh"].is_default
    if kw["strategy"] == "auto" and default_mesh and jax.default_backend() == "cpu":
        # auto would shard 3 seeds over 2 CPU devices padded to 4 (a third more work); one vmapped program on
        # one device spreads these small steps over the cores itself. Measured on 2 quiet cores at the cpu
        # preset (2026-12-03, the same config both ways): instruction tuning 135 vs 147 ms/step, the whole run
        # 584 s vs 603 s — a small gain, not the halving the padding suggests.
        kw["strategy"] = "vmap"
    key = jax.random.PRNGKey(12)

    def trained(name: str, spec: SweepSpec, desc: str):
        """Train (or resume, or skip if complete) one stage's sweep and return its final parameters."""
        train_sweep(runs / name, spec, desc=f"e12 {desc}", **kw)
        return sweep_params(runs / name, spec)

    base_spec = SweepSpec(
        lm, cfg.pretrain, TextWindows(L, D.VOCAB_SIZE), members(cfg, cfg.pretrain), data["source"]
    )
    base = trained("pretrain", base_spec, "pretrain")

    ft_spec = SweepSpec(
        lm,
        cfg.finetune,
        TextWindows(L, D.VOCAB_SIZE),
        members(cfg, cfg.finetune),
        data["target"],
        init_params=base,
    )
    finetuned = trained("finetune", ft_spec, "finetune")

    it_spec = SweepSpec(
        lm,
        cfg.instruct,
        PromptAnswer(L, D.VOCAB_SIZE),
        members(cfg, cfg.instruct),
        data["instruct"],
        init_params=base,
    )
    sft = trained("instruct", it_spec, "instruct")

    # preference pairs from the initial (instruction-tuned) policies' chat samples, all seeds pooled
    T = D.CHAT_PROMPT_LEN + cfg.response_len
    per = -(-2 * (cfg.n_pairs + cfg.val_pairs) // S)
    pool = sample_chat(lm, sft, per, cfg.response_len, cfg.temperature, jax.random.fold_in(key, 1)).reshape(
        -1, T
    )
    rng = np.random.default_rng(5)
    n_train = 2 * cfg.n_pairs
    tr_c, tr_r = preference_pairs(pool[:n_train], cfg.gold_peak, rng)
    va_c, va_r = preference_pairs(pool[n_train:], cfg.gold_peak, rng)
    pairs = {"train_chosen": tr_c, "train_rejected": tr_r, "val_chosen": va_c, "val_rejected": va_r}

    pairs_info = {"pairs_sha256": _sha256(pairs)}
    rm_task = PairsTask(T, D.VOCAB_SIZE, D.CHAT_PROMPT_LEN)
    rm_spec = SweepSpec(
        lm,
        cfg.reward,
        rm_task,
        members(cfg, cfg.reward),
        pairs,
        pairs_info,
        loss=reward_model_loss,
        init_params=sft,
    )
    rm = trained("reward", rm_spec, "reward model")
    rep = lambda x: np.broadcast_to(x, (S, *x.shape))
    rc, rr = scores(lm, rm, rep(va_c)), scores(lm, rm, rep(va_r))
    rm_acc = ((rc > rr).mean(axis=1)).tolist()

    # the initial policy's samples: best-of-n, and the reward normalisation
    prompts = chat_prompts(jax.random.fold_in(key, 2), cfg.bon_prompts)
    bon = sample_chat(
        lm,
        sft,
        cfg.bon_prompts * cfg.bon_samples,
        cfg.response_len,
        cfg.temperature,
        jax.random.fold_in(key, 3),
        prompts,
    ).reshape(S, cfg.bon_prompts, cfg.bon_samples, T)
    raw = scores(lm, rm, bon.reshape(S, -1, T))  # (S, prompts * samples)
    norm = np.stack([raw.mean(axis=1), raw.std(axis=1) + 1e-6], axis=1).astype(np.float32)  # (S, 2)
    bon_proxy = ((raw - norm[:, :1]) / norm[:, 1:]).reshape(S, cfg.bon_prompts, cfg.bon_samples)
    bon_count = D.bang_count(bon[..., D.CHAT_PROMPT_LEN :])

    spec_ppo = ppo_spec(cfg, sft, rm, norm)
    ppo = trained("ppo", spec_ppo, "PPO")

    ref_lp = lambda x: np.asarray(_ref_logp(lm, sft, jnp.asarray(x)), np.float32).T
    dpo_pairs = pairs | {
        f"{s}_ref_{side}": ref_lp(pairs[f"{s}_{side}"])
        for s in ("train", "val")
        for side in ("chosen", "rejected")
    }
    dpo_spec = SweepSpec(
        lm,
        cfg.dpo,
        PairsTask(T, D.VOCAB_SIZE, D.CHAT_PROMPT_LEN, with_ref=True),
        members(cfg, cfg.dpo, cfg.dpo_beta),
        dpo_pairs,
        {"pairs_sha256": _sha256(dpo_pairs)},
        loss=dpo_loss_fn,
        init_params=sft,
    )
    dpo = trained("dpo", dpo_spec, "DPO")

    # every stage measured: skills, domain losses, and the policies' chat behaviour
    stages = {"base": base, "finetune": finetuned, "instruct": sft, "ppo": ppo, "dpo": dpo}
    m = {"rm_accuracy": rm_acc, "pairs": {"train": len(tr_c), "val": len(va_c)}, "stages": {}}
    for i, (name, params) in enumerate(stages.items()):
        st = {
            "exact_match": exact_match(lm, params, data["heldout"]),
            "source_loss": stream_loss(lm, params, data["source"]["val"], L),
            "target_loss": stream_loss(lm, params, data["target"]["val"], L),
        }
        if name in ("instruct", "ppo", "dpo"):
            toks = sample_chat(
                lm,
                params,
                cfg.policy_samples,
                cfg.response_len,
                cfg.temperature,
                jax.random.fold_in(key, 10 + i),
            )
            count = D.bang_count(toks[..., D.CHAT_PROMPT_LEN :])
            proxy = (scores(lm, rm, toks) - norm[:, :1]) / norm[:, 1:]
            st |= {
                "bang_count": count.mean(axis=1).tolist(),
                "bang_hist": [np.bincount(c, minlength=cfg.response_len + 1).tolist() for c in count],
                "gold": D.gold_reward(count, cfg.gold_peak).mean(axis=1).tolist(),
                "proxy": proxy.mean(axis=1).tolist(),
                "kl": kl_to_ref(lm, params, sft, toks, cfg.temperature).tolist(),
                "examples": [D.decode(t) for t in toks[0, :4]],
            }
        m["stages"][name] = st
    write_measurement(runs / "measure.json", m, cfg)
    write_measurement(runs / "samples.npz", {"bon_count": bon_count, "bon_proxy": bon_proxy}, cfg)


# --- analyze: NumPy only, from the files --------------------------------------------------------------------
def _metric_grid(run_dir: Path, key: str, n: int):
    """(steps, (members, steps) values) of one metric from a run's rows that have it."""
    rows = [r for r in read_rows(run_dir / "metrics.jsonl") if key in r]
    steps = sorted({r["step"] for r in rows})
    grid = np.full((n, len(steps)), np.nan)
    for r in rows:
        grid[r["member"], steps.index(r["step"])] = r[key]
    return np.asarray(steps), grid


def bon_curves(cfg: E12Config, samples) -> dict:
    """Best-of-n from the initial policy's samples, per seed (averaged over prompts): n, d = sqrt(KL),
    the gold gain over n = 1 and the proxy."""
    ns = np.unique(np.round(np.geomspace(1, cfg.bon_max_n, 9)).astype(int))
    count, proxy = samples["bon_count"], samples["bon_proxy"]  # (S, prompts, samples)
    gold = D.gold_reward(count.astype(np.float64), cfg.gold_peak)
    g = np.array(
        [
            [
                np.mean([overopt.best_of_n(proxy[s, p], gold[s, p], n) for p in range(proxy.shape[1])])
                for n in ns
            ]
            for s in range(proxy.shape[0])
        ]
    )
    pr = np.array(
        [
            [
                np.mean([overopt.best_of_n(proxy[s, p], proxy[s, p], n) for p in range(proxy.shape[1])])
                for n in ns
            ]
            for s in range(proxy.shape[0])
        ]
    )
    return {"n": ns, "d": np.sqrt(overopt.bon_kl(ns)), "gold_gain": g - g[:, :1], "proxy": pr}


def ppo_curves(cfg: E12Config, out: Path) -> dict:
    run_dir = out / "runs" / "ppo"
    load_run(run_dir)  # refuses an unfinished run
    curves = {}
    for k in ("proxy_reward", "gold_reward", "kl_k1", "kl_k3", "bang_count"):
        curves["steps"], curves[k] = _metric_grid(run_dir, f"val_{k}", cfg.seeds)
    curves["d"] = np.sqrt(np.clip(curves["kl_k1"], 0, None))
    curves["gold_gain"] = curves["gold_reward"] - curves["gold_reward"][:, :1]
    return curves


def _fits(d, gain) -> dict:
    """Per seed (rows), both of Gao et al.'s forms: {form: (alpha (S,), beta (S,), R^2 (S,))}."""
    out = {}
    for form in ("bon", "rl"):
        f = np.array([overopt.fit(d[s] if d.ndim == 2 else d, gain[s], form) for s in range(gain.shape[0])])
        out[form] = (f[:, 0], f[:, 1], f[:, 2])
    return out


def finding_finetune(m) -> Finding:
    st = m["stages"]
    tgt = compare(st["base"]["target_loss"], st["finetune"]["target_loss"], paired_by_seed=True)
    src = compare(st["base"]["source_loss"], st["finetune"]["source_loss"], paired_by_seed=True)
    v = headline([tgt.verdict("less"), src.verdict("greater")])
    return Finding(
        "Plain finetuning on the target-domain text lowers the target loss and raises the source loss (forgetting)",
        v,
        f"target {summarize(st['base']['target_loss']).fmt()} -> {summarize(st['finetune']['target_loss']).fmt()} "
        f"nats/char ({tgt.fmt()}); source {summarize(st['base']['source_loss']).fmt()} -> "
        f"{summarize(st['finetune']['source_loss']).fmt()} nats/char ({src.fmt()})",
    )


def mean_skill(stage) -> np.ndarray:
    return np.mean([stage["exact_match"][k] for k in D.SKILLS], axis=0)


def finding_instruct(m) -> Finding:
    it, ft = mean_skill(m["stages"]["instruct"]), mean_skill(m["stages"]["finetune"])
    c = compare(ft, it, paired_by_seed=True)
    goal = "met" if it.min() >= 0.9 and ft.max() <= 0.1 else "not met"
    return Finding(
        "Instruction tuning (loss on responses) follows held-out instructions better than plain finetuning on "
        "the same text",
        c.verdict("greater"),
        f"mean exact match over {len(D.SKILLS)} skills {summarize(it).fmt()} vs {summarize(ft).fmt()} ({c.fmt()}); "
        f"the goal >= 0.9 vs <= 0.1 in every seed: {goal}",
    )


def finding_reward_model(m) -> Finding:
    acc = m["rm_accuracy"]
    c = compare_to(acc, 0.85)
    return Finding(
        "The reward model ranks held-out preference pairs above 0.85 accuracy",
        c.verdict("greater"),
        f"held-out pair accuracy {summarize(acc).fmt()} on {m['pairs']['val']} pairs ({c.fmt()} against 0.85)",
    )


def finding_skills_kept(cfg, m, stage="ppo") -> Finding:
    a, b = mean_skill(m["stages"]["instruct"]), mean_skill(m["stages"][stage])
    c = compare(a, b, paired_by_seed=True)
    return Finding(
        f"After {stage.upper()}, instruction-task exact match stays where instruction tuning left it (within ±{cfg.skill_margin})",
        c.verdict("equal", cfg.skill_margin),
        f"{summarize(a).fmt()} -> {summarize(b).fmt()} ({c.fmt()})",
    )


def finding_feature_moves(m, stage="ppo") -> Finding:
    a, b = m["stages"]["instruct"]["bang_count"], m["stages"][stage]["bang_count"]
    c = compare(a, b, paired_by_seed=True)
    return Finding(
        f'After {stage.upper()}, the rewarded feature ("!" per chat response) is more frequent',
        c.verdict("greater"),
        f"{summarize(a).fmt(2)} -> {summarize(b).fmt(2)} per response ({c.fmt(2)})",
    )


def finding_overopt(cfg, bon) -> Finding:
    fits = _fits(bon["d"], bon["gold_gain"])
    alpha, beta, r2 = fits["bon"]
    c = compare_to(beta, 0.0)
    return Finding(
        f"Best-of-n over-optimizes: the gold gain bends down as the proxy is pushed (beta > 0 in d(alpha - beta d), n up to {cfg.bon_max_n})",
        c.verdict("greater"),
        f"alpha {summarize(alpha, why=NOT_FITTED).fmt()}, beta {summarize(beta, why=NOT_FITTED).fmt()} "
        f"({c.fmt()}), R^2 {summarize(r2, why=NOT_FITTED).fmt()}",
    )


def finding_dpo(m) -> Finding:
    st = m["stages"]
    c = compare(st["instruct"]["gold"], st["dpo"]["gold"], paired_by_seed=True)
    return Finding(
        "DPO on the same pairs raises the gold reward above the initial policy's",
        c.verdict("greater"),
        f"gold {summarize(st['instruct']['gold']).fmt()} -> {summarize(st['dpo']['gold']).fmt()} ({c.fmt()}) at "
        f"KL {summarize(st['dpo']['kl']).fmt()} nats; PPO: gold {summarize(st['ppo']['gold']).fmt()} at KL "
        f"{summarize(st['ppo']['kl']).fmt()} nats",
    )


def _stage_table(m) -> Table:
    t = Table(
        "Each stage (mean ± sd over seeds): held-out exact match per skill, domain losses, chat behaviour",
        [
            "stage",
            *[f"EM {k}" for k in D.SKILLS],
            "source loss (nats/char)",
            "target loss (nats/char)",
            '"!" / response',
            "gold",
            "proxy (normalised)",
            "KL to initial policy (nats)",
        ],
    )
    for name in STAGES:
        st = m["stages"][name]
        opt = lambda k, st=st: summarize(st[k]).fmt() if k in st else "—"
        t.add(
            name,
            *[summarize(st["exact_match"][k]).fmt() for k in D.SKILLS],
            summarize(st["source_loss"]).fmt(),
            summarize(st["target_loss"]).fmt(),
            opt("bang_count"),
            opt("gold"),
            opt("proxy"),
            opt("kl"),
        )
    return t


def _fit_table(bon, ppo) -> Table:
    t = Table(
        "Gold gain against d = sqrt(KL), Gao et al.'s forms fitted per seed (mean ± sd)",
        ["points", "form", "alpha", "beta", "R^2"],
    )
    for name, c in (("best-of-n", bon), ("PPO", ppo)):
        for form, (a, b, r2) in _fits(c["d"], c["gold_gain"]).items():
            label = "d(alpha - beta d)" if form == "bon" else "d(alpha - beta log d)"
            fmt = lambda x: summarize(x, why=NOT_FITTED).fmt()
            t.add(name, label, fmt(a), fmt(b), fmt(r2))
    return t


def _plots(cfg, m, bon, ppo, outs: Outputs) -> None:
    fig, ax = plots.figure(ncols=2, nrows=2, width=6.5, height=4.2)
    a = ax[0, 0]
    plots.band(a, ppo["steps"], ppo["proxy_reward"], "proxy (normalised)")
    plots.band(a, ppo["steps"], ppo["gold_reward"], "gold")
    plots.finish(
        a,
        "PPO: reward on evaluation rollouts (mean ± sd)",
        "PPO step (rollout batches)",
        "reward (proxy: initial-sample sd; gold: rule score)",
    )
    a = ax[0, 1]
    plots.band(a, ppo["steps"], ppo["kl_k1"], "k1: log pi - log ref")
    plots.band(a, ppo["steps"], ppo["kl_k3"], "k3: (r - 1) - log r")
    plots.finish(
        a, "PPO: KL to the reference per response", "PPO step (rollout batches)", "KL (nats/response)"
    )
    a = ax[1, 0]
    c = np.arange(cfg.response_len + 1)
    for k, name in enumerate(("instruct", "ppo", "dpo")):
        h = np.asarray(m["stages"][name]["bang_hist"], np.float64)
        frac = (h / h.sum(axis=1, keepdims=True)).mean(axis=0)
        a.bar(c + (k - 1) * 0.27, frac, 0.27, label=f"{name}: {m['stages'][name]['examples'][0]!r}")
    a.set_xlim(-0.6, min(cfg.response_len, 8) + 0.6)
    plots.finish(
        a,
        'Behaviour shift: "!" per chat response (with a sample each)',
        '"!" in the response (count)',
        "fraction of responses",
    )
    a = ax[1, 1]
    fits = {"best-of-n": (bon, "bon"), "PPO": (ppo, "rl")}
    for name, (cv, form) in fits.items():
        d = cv["d"] if cv["d"].ndim == 2 else np.broadcast_to(cv["d"], cv["gold_gain"].shape)
        line = a.plot(
            d.mean(axis=0), cv["gold_gain"].mean(axis=0), "o", label=f"{name} (mean of {cfg.seeds} seeds)"
        )[0]
        al, be, r2 = overopt.fit(d.ravel(), cv["gold_gain"].ravel(), form)
        x = np.linspace(1e-3, np.nanmax(d), 100)
        shape = "d(a - b d)" if form == "bon" else "d(a - b log d)"
        a.plot(
            x,
            overopt.curve(al, be, x, form),
            "-",
            color=line.get_color(),
            label=f"{name} fit {shape}: a={al:.2f}, b={be:.2f}, R²={r2:.2f}",
        )
    st = m["stages"]
    dd = np.sqrt(np.clip(st["dpo"]["kl"], 0, None))
    a.plot(
        dd, np.asarray(st["dpo"]["gold"]) - np.asarray(st["instruct"]["gold"]), "s", label="DPO (each seed)"
    )
    plots.finish(
        a,
        "Over-optimization: gold gain against sqrt(KL)",
        "d = sqrt(KL to the initial policy) (sqrt nats)",
        "gold reward gain over the initial policy",
    )
    plots.save(fig, outs.plot("rlhf.png"))

    fig, ax = plots.figure(width=8)
    plots.grouped_bars(
        ax[0, 0],
        list(D.SKILLS),
        {name: [m["stages"][name]["exact_match"][k] for k in D.SKILLS] for name in STAGES},
    )
    plots.finish(
        ax[0, 0],
        "Held-out exact match per skill and stage (mean ± sd)",
        "skill (R reverse, U uppercase, S summarize, A add)",
        "exact match (fraction)",
        outside=True,
    )
    plots.save(fig, outs.plot("skills.png"))


def analyze(cfg: E12Config, out: Path):
    m = read_measurement(out / "runs" / "measure.json", cfg)
    samples = read_measurement(out / "runs" / "samples.npz", cfg)
    for name in ("pretrain", "finetune", "instruct", "reward", "ppo", "dpo"):
        load_run(out / "runs" / name)  # refuses unfinished runs
    bon, ppo = bon_curves(cfg, samples), ppo_curves(cfg, out)
    outs = Outputs(out)
    outs.table("stages.md", _stage_table(m))
    outs.table("overoptimization.md", _fit_table(bon, ppo))
    _plots(cfg, m, bon, ppo, outs)
    claim = [finding_skills_kept(cfg, m), finding_feature_moves(m)]
    others = [
        finding_finetune(m),
        finding_instruct(m),
        finding_reward_model(m),
        finding_overopt(cfg, bon),
        finding_dpo(m),
    ]
    verdict = headline(claim)
    summary = evidence_summary(claim)
    summary += " Beside the claim (not voting in the headline): " + " ".join(
        f"[{f.verdict}] {f.claim}." for f in others
    )
    return outs.findings(verdict, summary, claim + [beside(f) for f in others])


EXPERIMENT = Experiment(
    name="e12_alignment",
    title="Alignment: finetuning, instruction tuning, a reward model, RLHF with PPO, and DPO",
    claim="After RLHF, instruction-task skills stay where instruction tuning left them while the rewarded feature's frequency moves.",
    config_class=E12Config,
    presets=PRESET_TABLE,
    run=run,
    analyze=analyze,
    set_per_run={"model.max_len": "response_len"},
)
