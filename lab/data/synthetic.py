"""Synthetic text generators and the noise that turns good data into bad (project 16).

Generators, each a pure function of its seed (pure Python `random.Random`, so the same seed gives the same
text on every platform and Python version that keeps `random`'s documented generator):

  stories(n, seed)        short children's stories from a small probabilistic grammar, in the spirit of
                          TinyStories (Eldan & Li 2023): a character, a place, a wish, a problem and an ending,
                          each chosen among alternatives with fixed probabilities
  arithmetic(n, seed)     documents of additions, subtractions and multiplications with their true results
  FactWorld(seed)         a made-up world of entities with attributes (colour, home town, age, pet);
  facts(n, world, seed, wrong_rate)
                          documents of "The colour of Zabo is red." statements about it, each value replaced
                          by a wrong one with probability `wrong_rate`

Noise, each at a stated rate with the realized count returned, so tests can check the rate within its
binomial spread:

  char_noise(text, rate, rng)        every character, independently with probability `rate`, becomes a
                                     different character of ALPHABET
  token_shuffle(text, rate, rng)     every whitespace-separated token, independently with probability `rate`,
                                     is selected; the selected tokens are rotated one place among their
                                     positions (so with two or more selected, every selected token moves)
  inject_duplicates(docs, rate, rng) after each document, with probability `rate`, a copy of it: exact with
                                     probability `exact_frac`, else a near-duplicate with a few words edited
  noisy_documents(docs, level, seed) char_noise and token_shuffle, both at rate `level`: the "bad real data"
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import numpy as np

from lab.config import check

# The characters char_noise substitutes with: printable ASCII without the whitespace that shapes a text.
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " "


def check_rate(name: str, rate: float) -> None:
    """A probability: a number in [0, 1] (one-line ConfigError naming it otherwise)."""
    ok = isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= float(rate) <= 1.0
    check(ok, f"{name} must be a rate in [0, 1], got {rate!r}")


# --- stories: a probabilistic grammar --------------------------------------------------------------------------
# Each rule is a list of (weight, alternative); an alternative is a string with {slots} filled from the lexicon.
NAMES = ("Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Lucy", "Tim", "Sue", "Jack", "Zoe")
ANIMALS = ("cat", "dog", "bird", "fox", "bunny", "frog", "duck", "bear", "mouse", "lion")
ADJECTIVES = ("little", "happy", "brave", "shy", "kind", "small", "big", "funny", "sleepy", "curious")
PLACES = ("park", "garden", "forest", "house", "lake", "hill", "farm", "school", "beach", "town")
OBJECTS = ("ball", "kite", "toy", "hat", "book", "cake", "box", "flower", "drum", "boat")
VERBS = ("play", "run", "jump", "sing", "dance", "swim", "read", "draw", "hide", "climb")
FEELINGS = ("happy", "sad", "scared", "angry", "proud", "tired", "excited", "surprised")

STORY_RULES: dict[str, list[tuple[float, str]]] = {
    "opening": [
        (0.5, "Once upon a time, there was a {adj} {animal} named {name}."),
        (0.3, "One day, a {adj} {animal} called {name} went to the {place}."),
        (0.2, "{name} was a {adj} {animal} who lived near the {place}."),
    ],
    "wish": [
        (0.4, "{name} liked to {verb} in the {place}."),
        (0.35, "{name} wanted a red {object} more than anything."),
        (0.25, "Every morning, {name} would {verb} with a friend."),
    ],
    "problem": [
        (0.4, "But one day, the {object} was lost and {name} felt {feeling}."),
        (0.3, "Then it began to rain, and {name} could not {verb}."),
        (0.3, "A big {animal2} came and took the {object} away."),
    ],
    "middle": [
        (0.5, "{name} looked under a tree and behind a rock."),
        (0.3, "{name} asked the {animal2} for help, and the {animal2} said yes."),
        (0.2, "{name} waited and waited by the {place}."),
    ],
    "ending": [
        (0.5, "At last, {name} found the {object} and felt {feeling2}."),
        (0.3, "The sun came out, and they all went to {verb} together."),
        (0.2, "{name} learned that sharing is good. The end."),
    ],
}
STORY_PLAN = (("opening", 1.0), ("wish", 1.0), ("problem", 0.8), ("middle", 0.7), ("ending", 1.0))


def _pick(rng: random.Random, rule: list[tuple[float, str]]) -> str:
    weights, alternatives = zip(*rule)
    return rng.choices(alternatives, weights=weights)[0]


def story(rng: random.Random) -> str:
    """One story: each part of STORY_PLAN is included with its probability, its sentence drawn from its rule,
    the slots filled once per story (the same character throughout)."""
    slots = {
        "name": rng.choice(NAMES),
        "animal": rng.choice(ANIMALS),
        "animal2": rng.choice(ANIMALS),
        "adj": rng.choice(ADJECTIVES),
        "place": rng.choice(PLACES),
        "object": rng.choice(OBJECTS),
        "verb": rng.choice(VERBS),
        "feeling": rng.choice(FEELINGS),
        "feeling2": rng.choice(FEELINGS),
    }
    parts = [_pick(rng, STORY_RULES[part]) for part, p in STORY_PLAN if p >= 1.0 or rng.random() < p]
    return " ".join(parts).format(**slots)


def stories(n: int, seed: int) -> list[str]:
    """`n` stories from the grammar; the same seed gives the same stories."""
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


# --- arithmetic ------------------------------------------------------------------------------------------------
def arithmetic(n: int, seed: int, max_operand: int = 99, per_doc: tuple[int, int] = (3, 6)) -> list[str]:
    """`n` documents of `per_doc` (min, max) problems "a op b = c." with a, b in [0, max_operand] and the
    true result c (op one of +, -, *)."""
    check(max_operand >= 1, f"max_operand must be >= 1, got {max_operand}")
    rng = random.Random(seed)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(*per_doc)):
            a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice("+-*")
            lines.append(f"{a} {op} {b} = {ops[op](a, b)}.")
        docs.append(" ".join(lines))
    return docs


# --- key-value facts -------------------------------------------------------------------------------------------
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
    "home town": ("Ardale", "Brennock", "Calvy", "Dunmore", "Elsworth", "Fairlow", "Gresby", "Holt"),
    "age": tuple(str(a) for a in range(5, 95, 7)),
    "pet": ("cat", "dog", "parrot", "goat", "turtle", "horse", "rabbit", "owl"),
}
_SYLLABLES = ("ba", "ko", "ri", "zu", "ma", "te", "lo", "ni", "sa", "vo", "de", "fi")


@dataclass(frozen=True)
class FactWorld:
    """`n_entities` made-up names, each with one true value per attribute of ATTRIBUTES, fixed by `seed`."""

    seed: int = 0
    n_entities: int = 200

    def __post_init__(self):
        check(self.n_entities >= 1, f"n_entities must be >= 1, got {self.n_entities}")
        check(self.n_entities <= len(_SYLLABLES) ** 3, f"n_entities must be <= {len(_SYLLABLES) ** 3}")

    @property
    def entities(self) -> list[str]:
        rng = random.Random(self.seed)
        names = [a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES]
        return [n.capitalize() for n in rng.sample(names, self.n_entities)]

    @property
    def truth(self) -> dict[tuple[str, str], str]:
        """(entity, attribute) -> its true value."""
        rng = random.Random(self.seed + 1)
        return {(e, a): rng.choice(vals) for e in self.entities for a, vals in ATTRIBUTES.items()}


def fact_sentence(entity: str, attribute: str, value: str) -> str:
    return f"The {attribute} of {entity} is {value}."


def facts(
    n: int, world: FactWorld, seed: int, wrong_rate: float = 0.0, per_doc: tuple[int, int] = (3, 6)
) -> tuple[list[str], int, int]:
    """(documents, wrong facts, all facts): `n` documents of `per_doc` statements about random entities and
    attributes of `world`; each statement's value is, with probability `wrong_rate`, another value of the
    attribute (never the true one)."""
    check_rate("wrong_rate", wrong_rate)
    rng = random.Random(seed)
    truth, entities = world.truth, world.entities
    docs, wrong, total = [], 0, 0
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(*per_doc)):
            e, a = rng.choice(entities), rng.choice(tuple(ATTRIBUTES))
            value = truth[(e, a)]
            if rng.random() < wrong_rate:
                value = rng.choice([v for v in ATTRIBUTES[a] if v != value])
                wrong += 1
            total += 1
            sentences.append(fact_sentence(e, a, value))
        docs.append(" ".join(sentences))
    return docs, wrong, total


def synthetic_corpus(n: int, seed: int, weights: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> list[str]:
    """`n` documents drawn from the three generators with probabilities `weights` (stories, arithmetic,
    facts), in a seeded order; facts are all true (a clean synthetic set)."""
    check(len(weights) == 3 and all(w >= 0 for w in weights) and sum(weights) > 0, "weights: 3 numbers >= 0")
    rng = random.Random(seed)
    kinds = rng.choices(range(3), weights=weights, k=n)
    counts = [kinds.count(k) for k in range(3)]
    pools = [
        iter(stories(counts[0], seed + 1)),
        iter(arithmetic(counts[1], seed + 2)),
        iter(facts(counts[2], FactWorld(seed + 3), seed + 4)[0]),
    ]
    return [next(pools[k]) for k in kinds]


# --- noise -----------------------------------------------------------------------------------------------------
def _numpy_rng(rng: random.Random) -> np.random.Generator:
    """A NumPy generator seeded from `rng` (so a seeded random.Random still decides everything)."""
    return np.random.default_rng(rng.getrandbits(64))


_ALPHA_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def char_noise(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """(noisy text, characters changed): each character independently with probability `rate` replaced by
    a different character of ALPHABET, uniformly among them (so the count of changed characters is exactly
    the count chosen)."""
    check_rate("char_rate", rate)
    g = _numpy_rng(rng)
    n, k = len(text), len(ALPHABET)
    hit = np.flatnonzero(g.random(n) < rate)
    if hit.size == 0:
        return text, 0
    chars = list(text)
    shift = g.integers(1, k, hit.size)  # a nonzero step around the alphabet: never the same character
    fresh = g.integers(0, k, hit.size)  # for characters outside the alphabet (newlines, non-ASCII)
    for i, s, f in zip(hit.tolist(), shift.tolist(), fresh.tolist()):
        j = _ALPHA_INDEX.get(chars[i])
        chars[i] = ALPHABET[f] if j is None else ALPHABET[(j + s) % k]
    return "".join(chars), int(hit.size)


def token_shuffle(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """(text, tokens selected): whitespace tokens selected independently with probability `rate` are rotated
    by one place among the selected positions (each moves to the next selected position). Whitespace is
    normalized to single spaces."""
    check_rate("shuffle_rate", rate)
    tokens = text.split()
    picked = np.flatnonzero(_numpy_rng(rng).random(len(tokens)) < rate).tolist()
    if len(picked) >= 2:
        moved = [tokens[i] for i in picked]
        moved = moved[-1:] + moved[:-1]
        for i, tok in zip(picked, moved):
            tokens[i] = tok
    return " ".join(tokens), len(picked)


def near_copy(text: str, edit_rate: float, rng: random.Random) -> str:
    """A near-duplicate of `text`: each whitespace token independently with probability `edit_rate` replaced by
    a random lower-case word of 3-7 letters other than the token it replaces; if none was chosen, one random
    token is (so a text with any token is never copied exactly)."""
    check_rate("edit_rate", edit_rate)
    tokens = text.split()
    picked = [i for i in range(len(tokens)) if rng.random() < edit_rate]
    if not picked and tokens:
        picked = [rng.randrange(len(tokens))]
    for i in picked:
        word = tokens[i]
        while word == tokens[i]:  # a draw equal to the token would leave it unedited
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 7)))
        tokens[i] = word
    return " ".join(tokens)


def inject_duplicates(
    docs: list[str], rate: float, rng: random.Random, exact_frac: float = 0.5, edit_rate: float = 0.03
) -> tuple[list[str], list[tuple[int, int, str]]]:
    """(documents, injected): after each document, with probability `rate`, a copy of it is inserted, exact
    with probability `exact_frac`, else `near_copy(doc, edit_rate)`. `injected` lists (index of the
    original, index of the copy, "exact" | "near") in the returned list."""
    check_rate("dup_rate", rate)
    check_rate("exact_frac", exact_frac)
    out, injected = [], []
    for doc in docs:
        out.append(doc)
        if rng.random() < rate:
            kind = "exact" if rng.random() < exact_frac else "near"
            out.append(doc if kind == "exact" else near_copy(doc, edit_rate, rng))
            injected.append((len(out) - 2, len(out) - 1, kind))
    return out, injected


def noisy_documents(docs: list[str], level: float, seed: int) -> tuple[list[str], dict]:
    """`docs` with character noise and token shuffles, both at rate `level`; also the realized counts
    {"chars", "chars_changed", "tokens", "tokens_selected"}."""
    check_rate("noise level", level)
    rng = random.Random(seed)
    out, stats = [], {"chars": 0, "chars_changed": 0, "tokens": 0, "tokens_selected": 0}
    for doc in docs:
        shuffled, selected = token_shuffle(doc, level, rng)
        stats["tokens"] += len(doc.split())
        stats["tokens_selected"] += selected
        noisy, changed = char_noise(shuffled, level, rng)
        stats["chars"] += len(shuffled)
        stats["chars_changed"] += changed
        out.append(noisy)
    return out, stats
