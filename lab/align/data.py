"""Generated character-level data for Project 12 (NumPy and Python; no JAX): two text domains, an instruction
set, chat prompts with a style feature, and the programmatic gold preference.

Vocabulary: PAD (0), VALUE (1: never text; its output logit is the value head / reward head, see
lab.align.rlhf), then the characters of CHARS.

  source domain   sentences of words over the letters a-m ("Dag bic fal."): the base model's pretraining text
  target domain   words over the letters n-z: the payloads of the instruction set, as plain running text
  instructions    prompt "K:payload>" -> response (the loss is on the response only):
                    R (reverse)   "R:stop>"                 -> "pots."
                    U (uppercase) "U:stop>"                 -> "STOP."
                    S (summarize) "S:ox nu. [ry to]. sp uv.>" -> "ry to."  (extract the marked sentence)
                    A (add)       "A:8+7>"                  -> "15."      (single digits: 100 facts)
                  and chat, "C:xyz>" -> `response_len` characters of target letters and spaces, each a "!"
                  with probability `bang_p` (the style feature RLHF is asked to change)
  gold preference the number c of "!" in a chat response, scored c (2 peak - c) / peak^2: 1 at c = peak, less
                  on either side (enthusiasm is liked up to a point), so pushing "!" past `peak` is
                  over-optimization of any proxy that learned "more is better" from typical samples.
"""

from __future__ import annotations

import numpy as np

from lab.errors import DataError

CHARS = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.!?+:>[]"
PAD, VALUE = 0, 1
VOCAB_SIZE = 2 + len(CHARS)
_ID = {c: i + 2 for i, c in enumerate(CHARS)}
BANG = _ID["!"]
SOURCE_LETTERS = "abcdefghijklm"
TARGET_LETTERS = "nopqrstuvwxyz"
SKILLS = ("R", "U", "S", "A")  # the instruction tasks scored by exact match; "C" is chat
CHAT_PROMPT_LEN = 6  # "C:xyz>"


def encode(text: str) -> list[int]:
    try:
        return [_ID[c] for c in text]
    except KeyError as e:
        raise DataError(f"character {e.args[0]!r} is not in the Project 12 vocabulary") from None


def decode(ids) -> str:
    return "".join(CHARS[int(i) - 2] if int(i) >= 2 else "" for i in ids)


def _word(rng, letters: str, lo: int, hi: int) -> str:
    return "".join(rng.choice(list(letters), size=int(rng.integers(lo, hi + 1))))


def source_text(rng, n_chars: int) -> str:
    """Sentences of 3-5 words of 2-5 letters a-m, capitalized, ending in ".", until n_chars."""
    out, size = [], 0
    while size < n_chars:
        words = [_word(rng, SOURCE_LETTERS, 2, 5) for _ in range(int(rng.integers(3, 6)))]
        s = " ".join(words).capitalize() + ". "
        out.append(s)
        size += len(s)
    return "".join(out)[:n_chars]


def _sentence(rng) -> str:
    return f"{_word(rng, TARGET_LETTERS, 2, 2)} {_word(rng, TARGET_LETTERS, 2, 2)}"


def instruction(rng, kind: str) -> tuple[str, str, str]:
    """(prompt, response, payload) of one example of skill `kind` (R, U, S or A)."""
    if kind in ("R", "U"):
        w = _word(rng, TARGET_LETTERS, 3, 4)
        return f"{kind}:{w}>", (w[::-1] if kind == "R" else w.upper()) + ".", w
    if kind == "S":
        sents = [_sentence(rng) for _ in range(3)]
        k = int(rng.integers(3))
        shown = [f"[{s}]." if i == k else f"{s}." for i, s in enumerate(sents)]
        return "S:" + " ".join(shown) + ">", sents[k] + ".", " ".join(f"{s}." for s in sents)
    if kind == "A":
        a, b = (int(x) for x in rng.integers(0, 10, size=2))
        return f"A:{a}+{b}>", f"{a + b}.", f"{a}+{b}"
    raise ValueError(f"unknown instruction kind {kind!r}")


def chat(rng, response_len: int, bang_p: float) -> tuple[str, str]:
    """(prompt "C:xyz>", a response of `response_len` characters: "!" with probability bang_p, else a
    target letter or a space)."""
    topic = "".join(rng.choice(list(TARGET_LETTERS), size=3))
    pool = list(TARGET_LETTERS + "   ")
    resp = "".join("!" if rng.random() < bang_p else str(rng.choice(pool)) for _ in range(response_len))
    return f"C:{topic}>", resp


def gold_reward(count, peak: int):
    """The gold score of a chat response with `count` "!": count (2 peak - count) / peak^2 (NumPy or JAX)."""
    return count * (2 * peak - count) / peak**2


def bang_count(ids) -> np.ndarray:
    return (np.asarray(ids) == BANG).sum(axis=-1)


def seq_len_for(response_len: int) -> int:
    """The example length (minus one: the model's positions) that fits every instruction and chat example:
    the longest is summarize: "S:" + 3 sentences "ab cd." + 2 spaces + brackets + ">", then "ab cd."."""
    longest_s = 2 + 3 * 6 + 2 + 2 + 1 + 6
    return max(longest_s, CHAT_PROMPT_LEN + response_len) - 1


def instruction_examples(n: int, seed: int, response_len: int, bang_p: float, chat_share: float):
    """`n` examples, a fraction chat_share of them chat and the rest the four skills in turn:
    [(kind, prompt, response, payload)]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if rng.random() < chat_share:
            p, r = chat(rng, response_len, bang_p)
            out.append(("C", p, r, p[2:5]))
        else:
            kind = SKILLS[i % len(SKILLS)]
            out.append((kind, *instruction(rng, kind)))
    return out


def pack(examples, seq_len: int) -> dict[str, np.ndarray]:
    """(N, seq_len + 1) token rows `prompt + response + PAD...` and the (N, seq_len) response-target mask
    (lab.data.tasks.pack_examples' layout), as {"x", "mask"}."""
    from lab.data.tasks import pack_examples

    x, mask = pack_examples([(encode(p), encode(r)) for _, p, r, _ in examples], PAD, seq_len)
    return {"x": x, "mask": mask}


def text_stream(text: str) -> np.ndarray:
    return np.asarray(encode(text), np.int32)
