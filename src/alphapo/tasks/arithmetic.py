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

Templates are compositions of sentences (:mod:`alphapo.tasks.templates`); a fifth of training
problems carry a neutral irrelevant sentence. Four splits:

- ``train``: the training templates and operand combinations (SFT data and on-policy prompts);
- ``heldout``: the same templates and clauses, on operand combinations training never sees (a stable
  hash sends a fifth of all combinations to held-out), so it measures whether the procedure
  generalises, not recall. Multiplication is the exception: its single-digit facts are a lookup
  table with no procedure to generalise, so those facts are shared;
- ``noop``: a held-out problem plus one irrelevant sentence carrying a distractor number (GSM-NoOp
  style, never in training); ``base_prompt`` keeps the problem without it;
- ``unseen_templates``: compositions of sentences training never sees together, some with a
  sentence training never sees at all, on held-out combinations.

Everything is deterministic for a seed.

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

from alphapo.tasks.templates import NEUTRAL_CLAUSES, NUMBER_CLAUSES, SOLUTIONS, templates

NAMES = ["Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben", "Eva", "Tom", "Nia", "Raj", "Ana", "Kai", "Lia", "Jon"]
PRONOUN = {n: ("She" if n in {"Mia", "Ava", "Zoe", "Ivy", "Eva", "Nia", "Ana", "Lia"} else "He") for n in NAMES}
OBJECTS = ["apples", "pens", "cards", "books", "shells", "coins", "eggs", "stamps", "rocks", "cups"]

KINDS = ("add", "sub", "mul", "add_sub", "add2")
SPLITS = ("train", "heldout", "noop", "unseen_templates")
TRAIN_CLAUSE_SHARE = 0.2
"""Share of training (and held-out) problems that carry a neutral irrelevant clause."""


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    answer: int
    solution: str  # the reference response (for SFT data)
    kind: str
    split: str
    base_prompt: str | None = None  # noop: the same problem without its irrelevant clause

    def to_json(self) -> dict:
        row = {
            "id": self.id,
            "prompt": self.prompt,
            "answer": self.answer,
            "solution": self.solution,
            "kind": self.kind,
            "split": self.split,
        }
        return row | ({"base_prompt": self.base_prompt} if self.base_prompt is not None else {})


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


def insert_clause(prompt: str, clause: str) -> str:
    """``prompt`` with ``clause`` as a sentence of its own just before the question (where it cannot
    come between a pronoun and the name it stands for)."""
    statements, question = prompt.rsplit(". ", 1)
    return f"{statements}. {clause} {question}"


def _problem(index: int, split: str, rng: random.Random) -> Problem:
    kind = KINDS[rng.randrange(len(KINDS))]
    choices = templates(kind, seen=split != "unseen_templates")
    template = choices[rng.randrange(len(choices))]
    x, y = rng.sample(NAMES, 2)
    numbers = _draw_numbers(kind, rng, held_out=split != "train")
    values = {"x": x, "y": y, "p": PRONOUN[x], "o": rng.choice(OBJECTS), **numbers}
    prompt = " ".join(template).format(**values)
    base_prompt = None
    if split in ("train", "heldout") and rng.random() < TRAIN_CLAUSE_SHARE:
        prompt = insert_clause(prompt, rng.choice(NEUTRAL_CLAUSES).format(y=y))
    elif split == "noop":
        clause = rng.choice(NUMBER_CLAUSES).format(y=y, d=rng.randint(2, 12))
        base_prompt, prompt = prompt, insert_clause(prompt, clause)
    answer = values["r"]
    solution = f"{SOLUTIONS[kind].format(**values)} Answer: {answer}"
    return Problem(f"{split}-{index}", prompt, answer, solution, kind, split, base_prompt)


def make_split(split: str, n: int, seed: int) -> list[Problem]:
    """``n`` problems of ``split`` (one of :data:`SPLITS`), deterministic for ``seed``.

    Splits draw from independent streams. ``train`` and ``heldout`` share templates and their neutral
    clauses; every split but ``train`` uses operand combinations training never sees
    (:func:`held_out_numbers`), except multiplication facts."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} ({', '.join(SPLITS)})")
    rng = random.Random(seed * 1_000 + SPLITS.index(split))
    return [_problem(i, split, rng) for i in range(n)]


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
