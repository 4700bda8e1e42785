"""The sentences the arithmetic task's problems are composed of, and which compositions training sees.

A template is one sentence from each slot of a kind: ``(statement, action, question)`` for kinds that
change a quantity (add, sub, add_sub), ``(statement, question)`` for the others (mul, add2). The
reference solution depends only on the kind, so a model must read the wording to find the operation
and its operands. A quarter of the compositions (by a stable hash), and every composition that uses
a sentence marked unseen (:data:`UNSEEN_ONLY`), are reserved for the ``unseen_templates`` split:
training sees each of the other sentences, never those combinations of them.

Placeholders: numbers ``a``, ``b``, ``c`` (``s = a + b`` for add_sub, ``r`` the result), names
``x`` (with pronoun ``p``) and ``y``, object ``o``.
"""

from __future__ import annotations

import itertools
import zlib

_HAVE = ["{x} has {a} {o}.", "{x} owns {a} {o}.", "{x} collected {a} {o}.", "There are {a} {o} in {x}'s bag."]

SLOTS: dict[str, tuple[list[str], ...]] = {
    "add": (
        _HAVE,
        ["{p} buys {b} more.", "{p} finds {b} more.", "{y} gives {x} {b} more.", "{p} gets {b} more as a gift."],
        ["How many {o} does {x} have now?", "How many {o} does {x} have in total?", "How many {o} are there now?"],
    ),
    "sub": (
        _HAVE,
        ["{p} gives {b} to {y}.", "{p} loses {b} of them.", "{p} sells {b} to {y}.", "{y} takes {b} of them."],
        ["How many {o} does {x} have left?", "How many {o} are left?", "How many {o} does {x} have now?"],
    ),
    "add_sub": (
        _HAVE,
        [
            "{p} finds {b} more and loses {c}.",
            "{p} buys {b} more and gives {c} to {y}.",
            "{p} gets {b} more, then sells {c}.",
            "{y} gives {x} {b} more, then {x} loses {c}.",
        ],
        ["How many {o} does {x} have now?", "How many {o} are left?", "How many {o} does {x} have in the end?"],
    ),
    "mul": (
        [
            "{x} has {a} boxes with {b} {o} in each box.",
            "{x} has {a} bags and each bag holds {b} {o}.",
            "{x} packs {a} boxes of {b} {o}.",
            "{x} makes {a} rows of {b} {o}.",
        ],
        ["How many {o} does {x} have?", "How many {o} are there in total?", "How many {o} are there altogether?"],
    ),
    "add2": (
        [
            "{x} has {a} {o} and {y} has {b} {o}.",
            "{x} owns {a} {o}. {y} owns {b} {o}.",
            "{x} collected {a} {o} and {y} collected {b} {o}.",
            "{x} has {a} {o}. {y} has {b} {o}.",
        ],
        ["How many {o} do they have together?", "How many {o} do they have in total?", "What is the total of {o}?"],
    ),
}

UNSEEN_ONLY: dict[str, list[str]] = {
    "add": ["{x} keeps {a} {o} in a drawer."],
    "sub": ["{x} keeps {a} {o} in a drawer."],
    "add_sub": ["{x} keeps {a} {o} in a drawer."],
    "mul": ["{x} fills {a} jars with {b} {o} each."],
    "add2": ["{x} brought {a} {o} and {y} brought {b} {o}."],
}
"""Sentences training never sees, in the statement slot: every template using one is unseen."""

SOLUTIONS = {
    "add": "{a} + {b} = {r}.",
    "sub": "{a} - {b} = {r}.",
    "mul": "{a} * {b} = {r}.",
    "add_sub": "{a} + {b} = {s}. {s} - {c} = {r}.",
    "add2": "{a} + {b} = {r}.",
}

NEUTRAL_CLAUSES = ["It is a sunny day.", "{y} is reading a book.", "The shop is busy today.", "{y} likes green."]
"""Irrelevant sentences without numbers; a fifth of the training problems carry one."""

NUMBER_CLAUSES = ["{y} is {d} years old.", "{y} has {d} cats at home.", "The shop opens at {d}.", "{y} ran {d} laps."]
"""Irrelevant sentences carrying a distractor number (GSM-NoOp style): never in training."""


def _reserved(kind: str, template: tuple[str, ...]) -> bool:
    return zlib.crc32(("|".join((kind, *template))).encode()) % 4 == 0


def templates(kind: str, seen: bool) -> list[tuple[str, ...]]:
    """The compositions of ``kind`` that training sees (``seen``) or that only ``unseen_templates`` uses."""
    statements, *rest = SLOTS[kind]
    every = [(s, *r) for s, *r in itertools.product(statements + UNSEEN_ONLY[kind], *rest)]
    return [t for t in every if (t[0] in UNSEEN_ONLY[kind] or _reserved(kind, t)) != seen]
