"""The embedded verifiable task: templated arithmetic word problems (in the spirit of GSM-Symbolic).

A problem is a template filled with names, objects and numbers drawn from a seeded generator; its
answer is an integer. A good response shows the computation as equations, then ``Answer: N``::

    prompt:   Mia has 7 apples. She buys 5 more. How many apples does Mia have now?
    response: 7 + 5 = 12. Answer: 12

SFT demonstrations (:func:`demonstration`) are deliberately imperfect in one way, as real SFT data
mixed from several sources is: their arithmetic is always right, but they follow the ``Answer: N``
contract inconsistently. Some end in prose ("So the answer is 12.") or stop after the equations,
and subtraction problems do so more often than the rest (70% against 20%). The verifier accepts only
``Answer: N``, so an SFT model inherits a format gap that on-policy preference training can close.

Splits: ``train`` and ``heldout`` use the same templates; ``heldout`` problems use operand
combinations that training never sees (a stable hash sends a fifth of all combinations to held-out),
so they measure whether the procedure generalises, not recall. Multiplication is the exception: its
single-digit facts are a lookup table with no procedure to generalise, so those facts are shared.
``perturbed`` uses templates never seen in training, each with an irrelevant clause (which may carry
a distractor number), on held-out combinations too. Everything is deterministic for a seed.

:func:`gold_reward` is computed, not learned: 1 for the right final answer, plus small terms so that
two correct (or two wrong) responses still differ: +0.1 for exactly one well-formed ``Answer:`` line
at the end (-0.2 when it is missing or malformed), +0.05 per arithmetically valid equation and -0.1
per invalid one (at most +-0.2 together), and -0.002 per character beyond a 60-character budget.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eva", "Tom", "Nia", "Raj", "Ana", "Kai", "Lia", "Jon"]
PRONOUN = {n: ("She" if n in {"Mia", "Ava", "Zoe", "Ivy", "Eva", "Nia", "Ana", "Lia"} else "He") for n in NAMES}
OBJECTS = ["apples", "pens", "cards", "books", "shells", "coins", "eggs", "stamps", "rocks", "cups"]

# Each template: (kind, text, solution). Numbers a, b, c; x, y are names; o is the object.
TRAIN_TEMPLATES = [
    ("add", "{x} has {a} {o}. {p} buys {b} more. How many {o} does {x} have now?", "{a} + {b} = {r}."),
    ("sub", "{x} has {a} {o}. {p} gives {b} to {y}. How many {o} does {x} have left?", "{a} - {b} = {r}."),
    ("mul", "{x} has {a} boxes with {b} {o} in each box. How many {o} does {x} have?", "{a} * {b} = {r}."),
    (
        "add_sub",
        "{x} has {a} {o}. {p} finds {b} more and loses {c}. How many {o} does {x} have now?",
        "{a} + {b} = {s}. {s} - {c} = {r}.",
    ),
    ("add2", "{x} has {a} {o} and {y} has {b} {o}. How many {o} do they have together?", "{a} + {b} = {r}."),
]
PERTURBED_TEMPLATES = [
    ("add", "{y} gives {x} {b} {o}. Before that, {x} had {a} {o}. How many {o} does {x} have?", "{a} + {b} = {r}."),
    (
        "sub",
        "There are {a} {o} on the table. {x} takes {b} of them. How many {o} are still on the table?",
        "{a} - {b} = {r}.",
    ),
    ("mul", "Each of {x}'s {a} bags holds {b} {o}. How many {o} are in the bags?", "{a} * {b} = {r}."),
    (
        "add_sub",
        "{x} starts with {a} {o}, gets {b} as a gift, then gives {c} away. How many {o} are left?",
        "{a} + {b} = {s}. {s} - {c} = {r}.",
    ),
]
DISTRACTORS = ["It is a sunny day.", "{y} is {d} years old.", "{y} has {d} cats at home.", "The shop opens at {d}."]


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    answer: int
    solution: str  # the reference response (for SFT data)
    kind: str
    split: str

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "solution": self.solution,
            "kind": self.kind,
            "split": self.split,
        }


def held_out_numbers(kind: str, values: dict[str, int]) -> bool:
    """Whether an operand combination is reserved for evaluation (a fifth of them, by a stable hash)."""
    if kind == "mul":
        return False
    key = f"{kind}:{values['a']}:{values['b']}:{values.get('c', 0)}"
    return zlib.crc32(key.encode()) % 5 == 0


def _draw_numbers(kind: str, rng: random.Random, held_out: bool) -> dict[str, int]:
    """Numbers for ``kind`` from the training or the held-out part of the number space."""
    while True:
        values = _numbers(kind, rng)
        if kind == "mul" or held_out_numbers(kind, values) == held_out:
            return values


def _numbers(kind: str, rng: random.Random) -> dict[str, int]:
    if kind in ("add", "add2"):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        return {"a": a, "b": b, "r": a + b}
    if kind == "sub":
        a = rng.randint(5, 40)
        b = rng.randint(1, a - 1)
        return {"a": a, "b": b, "r": a - b}
    if kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return {"a": a, "b": b, "r": a * b}
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    c = rng.randint(1, a + b - 1)
    return {"a": a, "b": b, "c": c, "s": a + b, "r": a + b - c}


def _problem(index: int, split: str, templates, rng: random.Random, distract: bool) -> Problem:
    kind, text, solution = templates[rng.randrange(len(templates))]
    x, y = rng.sample(NAMES, 2)
    numbers = _draw_numbers(kind, rng, held_out=split != "train")
    values = {"x": x, "y": y, "p": PRONOUN[x], "o": rng.choice(OBJECTS), **numbers}
    prompt = text.format(**values)
    if distract:
        clause = rng.choice(DISTRACTORS).format(y=y, d=rng.randint(2, 12))
        sentences = prompt.split(". ")
        sentences.insert(rng.randint(1, len(sentences) - 1), clause.rstrip("."))
        prompt = ". ".join(sentences)
    answer = values["r"]
    return Problem(f"{split}-{index}", prompt, answer, f"{solution.format(**values)} Answer: {answer}", kind, split)


def make_split(split: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems of ``split`` (train, heldout or perturbed), deterministic for ``seed``.

    Splits draw from independent streams; held-out and perturbed problems use operand combinations
    training never sees (:func:`held_out_numbers`), except multiplication facts."""
    offsets = {"train": 0, "heldout": 1, "perturbed": 2}
    if split not in offsets:
        raise ValueError(f"unknown split {split!r} (train, heldout, perturbed)")
    rng = random.Random(seed * 1_000 + offsets[split])
    templates = PERTURBED_TEMPLATES if split == "perturbed" else TRAIN_TEMPLATES
    return [_problem(i, split, templates, rng, distract=split == "perturbed") for i in range(n)]


STYLES = ("answer", "prose", "bare")
STYLE_WEIGHTS = {"sub": (0.3, 0.4, 0.3), "add_sub": (0.3, 0.4, 0.3)}
"""Share of demonstrations in each style by problem kind; other kinds: (0.8, 0.1, 0.1)."""


def demonstration(problem: Problem, rng: random.Random) -> str:
    """An SFT demonstration of ``problem``: its worked equations, then the answer in one of three
    styles drawn with :data:`STYLE_WEIGHTS` (only ``answer`` meets the ``Answer: N`` contract)."""
    steps = problem.solution.rsplit(" Answer:", 1)[0]
    style = rng.choices(STYLES, weights=STYLE_WEIGHTS.get(problem.kind, (0.8, 0.1, 0.1)))[0]
    if style == "answer":
        return problem.solution
    if style == "prose":
        return f"{steps} So the answer is {problem.answer}."
    return steps


_ANSWER = re.compile(r"Answer:\s*(-?\d+)\s*$")
_ANY_ANSWER = re.compile(r"Answer:")
_EQUATION = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)")
LENGTH_BUDGET = 60


def extract_answer(response: str) -> int | None:
    """The integer after a final ``Answer:``, or None when the response has no well-formed one."""
    match = _ANSWER.search(response.strip())
    return int(match.group(1)) if match else None


def gold_reward(response: str, answer: int) -> float:
    """The computed reward of ``response`` for a problem whose answer is ``answer`` (see module doc)."""
    text = response.strip()
    predicted = extract_answer(text)
    reward = 1.0 if predicted == answer else 0.0
    well_formed = predicted is not None and len(_ANY_ANSWER.findall(text)) == 1
    reward += 0.1 if well_formed else -0.2
    steps = 0.0
    for a, op, b, c in _EQUATION.findall(text):
        a, b, c = int(a), int(b), int(c)
        value = a + b if op == "+" else a - b if op == "-" else a * b
        steps += 0.05 if value == c else -0.1
    reward += max(-0.2, min(0.2, steps))
    reward -= 0.002 * max(0, len(text) - LENGTH_BUDGET)
    return round(reward, 6)
