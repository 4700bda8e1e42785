"""The embedded instruction-following task: writing requests with verifiable instructions, generated
offline from a seed (in the spirit of IFEval, never with IFEval's own prompts).

A base request is a kind of writing about a topic ("Write a short story about a lighthouse keeper.");
each prompt adds one to three instructions drawn from IFEval's instruction registry (the
``if-verifiable`` package), each with its own random arguments, described by the registry's own
checker class (``build_description``) and verified by the same class (``check_following``)::

    prompt:  Write a poem about the ocean at night. Your response should contain at least 3 sentences.
             Finish your response with this exact phrase Any other questions?. No other words should follow this phrase.
    row:     {"id": ..., "prompt": ..., "base": "Write a poem about ...", "instruction_id_list": [...],
              "kwargs": [{...}, ...], "split": "train"}

Rows are in IFEval's format, so :mod:`alphapo.eval.ifeval` scores them. Splits: a stable hash sends a
fifth of the (kind, topic) base requests to ``heldout``; ``train`` never sees them, and no split uses
IFEval's prompts. Instructions that conflict (IFEval's ``INSTRUCTION_CONFLICTS``) are never combined;
instructions whose checker needs the prompt (``combination:repeat_prompt``) repeat the base request.

:func:`gold_reward`: the share of instructions followed (strict), plus two tie-breakers: 0.1 times the
share followed under loose scoring, and -0.0005 per word beyond :data:`WORD_BUDGET` (unless an
instruction asks for more words), so that among answers following the same instructions the
cleaner, shorter one scores higher. A response following everything strictly scores 1.1.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

KINDS = [
    "a short story",
    "a poem",
    "an email to a colleague",
    "a product description",
    "a blog post",
    "a letter to a friend",
    "a short speech",
    "a review",
    "a news report",
    "a diary entry",
    "a set of instructions",
    "an advertisement",
]
TOPICS = [
    "a lighthouse keeper",
    "the ocean at night",
    "a new coffee machine",
    "learning to ride a bicycle",
    "a rainy Monday morning",
    "a city garden",
    "a lost umbrella",
    "the first day at a new job",
    "a mountain village",
    "a robot that bakes bread",
    "a football match",
    "saving money",
    "a school science fair",
    "an old bookshop",
    "a train journey",
    "a family dinner",
    "a winter festival",
    "a broken phone",
    "a visit to the dentist",
    "a street musician",
]
SPLITS = ("train", "heldout")
MAX_INSTRUCTIONS = 3
WORD_BUDGET = 200
EXCLUDED = {"language:response_language"}
"""Instructions left out: answering in a random one of IFEval's 30 languages is beyond the small models
the task is for (IFEval's own prompts still carry it)."""


@dataclass(frozen=True)
class InstructionPrompt:
    id: str
    prompt: str
    base: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    split: str
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "key": self.id,
            "prompt": self.prompt,
            "base": self.base,
            "instruction_id_list": self.instruction_id_list,
            "kwargs": self.kwargs,
            "split": self.split,
        }


def base_split(kind: str, topic: str) -> str:
    """``heldout`` for a fifth of the base requests (a stable hash), else ``train``."""
    return "heldout" if zlib.crc32(f"{kind}|{topic}".encode()) % 5 == 0 else "train"


def _registry():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS, INSTRUCTION_DICT, conflict_make

    conflicts = conflict_make({k: set(v) for k, v in INSTRUCTION_CONFLICTS.items()})
    return {k: v for k, v in INSTRUCTION_DICT.items() if k not in EXCLUDED}, conflicts


def _describe(checker_class, instruction: str, base: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(description, arguments) of one instruction with arguments drawn from ``rng`` by the checker
    itself (the checkers draw from Python's ``random``: its state is saved and restored around).

    A draw is kept only when its arguments rebuild the same description: the registry's own random
    draw can ask for paragraph n + 1 of n (``nth_paragraph_first_word``), which no answer can follow and
    which its checker, given those arguments, silently replaces; such draws are drawn again."""
    state = random.getstate()
    try:
        for _ in range(100):
            random.seed(rng.getrandbits(64))
            checker = checker_class(instruction)
            if instruction == "combination:repeat_prompt":
                description = checker.build_description(prompt_to_repeat=base)
            else:
                description = checker.build_description()
            args = {k: v for k, v in (checker.get_instruction_args() or {}).items() if v is not None}
            rebuilt = set()
            for probe in (0, 1):  # an argument the checker would redraw shows under another seed
                random.seed(probe)
                rebuilt.add(checker_class(instruction).build_description(**args))
            if rebuilt == {description}:
                return description.strip(), args
    finally:
        random.setstate(state)
    raise RuntimeError(f"instructions: no consistent arguments for {instruction} in 100 draws")


def make_split(split: str, n: int, seed: int) -> list[InstructionPrompt]:
    """``n`` distinct prompts of ``split`` (``train`` or ``heldout``), deterministic for ``seed``; the
    first ``m`` of ``n`` are the ``m`` that ``make_split(split, m, seed)`` gives."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} ({', '.join(SPLITS)})")
    registry, conflicts = _registry()
    names = sorted(registry)
    bases = [(k, t) for k in KINDS for t in TOPICS if base_split(k, t) == split]
    rng = random.Random(seed * 1_000 + 100 + SPLITS.index(split))
    out: list[InstructionPrompt] = []
    seen: set[str] = set()
    draws = 0
    while len(out) < n:
        draws += 1
        if draws > 20 * n + 100:
            raise ValueError(f"instructions: cannot draw {n} distinct {split} prompts (got {len(out)})")
        kind, topic = bases[rng.randrange(len(bases))]
        base = f"Write {kind} about {topic}."
        chosen: list[str] = []
        for _ in range(rng.randint(1, MAX_INSTRUCTIONS)):
            allowed = [i for i in names if i not in chosen and not any(i in conflicts[c] for c in chosen)]
            if allowed:
                chosen.append(allowed[rng.randrange(len(allowed))])
        described = [_describe(registry[i], i, base, rng) for i in chosen]
        prompt = " ".join([base, *(d for d, _ in described)])
        if prompt in seen:  # a split never repeats a prompt (a repeat is drawn again)
            continue
        seen.add(prompt)
        out.append(InstructionPrompt(f"{split}-{len(out)}", prompt, base, chosen, [a for _, a in described], split))
    return out


def gold_reward(response: str, row: dict[str, Any]) -> float:
    """The computed reward of ``response`` to an IFEval-format ``row`` (see the module docstring)."""
    from alphapo.eval.ifeval import score

    verdict = score(row, response)
    n = max(len(verdict["strict"]), 1)
    reward = sum(verdict["strict"]) / n + 0.1 * sum(verdict["loose"]) / n
    asks_for_words = any(i == "length_constraints:number_words" for i in row["instruction_id_list"])
    if not asks_for_words:
        reward -= 0.0005 * max(0, len(response.split()) - WORD_BUDGET)
    return round(reward, 6)


def followed_all(response: str, row: dict[str, Any]) -> bool:
    """Whether ``response`` follows every instruction of ``row`` (IFEval's prompt-level strict)."""
    from alphapo.eval.ifeval import score

    return bool(score(row, response)["prompt_strict"])
