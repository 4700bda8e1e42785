"""``alphapo pair``: preference pairs from judged samples, by one of several strategies.

Each judged row holds a prompt's K completions and their scores. Strategies (``--strategy``):

* ``best_worst`` (default; the SimPO/AlphaPO recipe): the highest-scored completion against the lowest.
* ``best_random``: the best against one of the completions scored below it, drawn at random.
* ``rank``: the best against the completion at quantile ``rank_quantile`` of the score order (0 is
  the best, 1 the worst; "Finding the Sweet Spot", Xiao et al. 2025, puts the rejected answer well
  below the mean but not at the very bottom).
* ``all_above_gap``: every pair whose gap reaches ``min_gap`` (largest gaps first), each pair of texts
  once (repeated samples give no copies), at most ``max_pairs_per_prompt`` per prompt (the rest
  counted as ``capped``).
* ``rso``: statistical rejection sampling (RSO, Liu et al. 2024, arXiv:2309.06657): each completion is
  accepted with probability ``exp((score - best) / rso_temperature)``, approximating samples of the
  policy tilted by the reward; the first two accepted (in a seeded random order) form the pair, the
  higher-scored one chosen.

A prompt gives no pair, and is counted by reason, when all its samples tie (``dropped_all_tied``),
when no candidate reaches ``min_gap`` (``dropped_small_gap``), when the two texts are identical
(``dropped_same_text``) or, for ``rso``, when fewer than two samples were accepted or the two accepted
tie (``dropped_rso``). Random choices are seeded per prompt (``seed``), so a file is reproducible.
The counts go to ``<out>.stats.json`` beside the pairs, so nothing disappears without a trace.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from alphapo.data.stagefiles import read_jsonl, write_jsonl
from alphapo.errors import StageError
from alphapo.files import write_json

Strategy = Literal["best_worst", "best_random", "rank", "all_above_gap", "rso"]
STRATEGIES = ("best_worst", "best_random", "rank", "all_above_gap", "rso")


@dataclass(frozen=True)
class PairOptions:
    strategy: Strategy = "best_worst"
    min_gap: float = 0.0
    rank_quantile: float = 1.0
    max_pairs_per_prompt: int = 4
    rso_temperature: float = 0.5
    seed: int = 0


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    dropped_all_tied: int = 0
    dropped_small_gap: int = 0
    dropped_same_text: int = 0
    dropped_rso: int = 0
    capped: int = 0
    strategy: str = "best_worst"


def _order(scores: list[float]) -> list[int]:
    """Indices from best to worst; equal scores keep their sample order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _candidates(row: dict, options: PairOptions, rng: random.Random, stats: PairStats) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs for one prompt, or [] after counting why there are none."""
    scores, texts = row["scores"], row["completions"]
    order = _order(scores)
    best = order[0]
    if scores[best] == scores[order[-1]]:
        stats.dropped_all_tied += 1
        return []
    if options.strategy == "rso":
        return _rso(scores, texts, options, rng, stats)
    if options.strategy == "all_above_gap":
        found = [
            (i, j)
            for i in order
            for j in reversed(order)
            if scores[i] - scores[j] >= max(options.min_gap, 1e-12) and texts[i] != texts[j]
        ]
        found.sort(key=lambda p: (-round(scores[p[0]] - scores[p[1]], 9), p))  # equal gaps: sample order
        unique, seen = [], set()  # repeated samples would fill the cap with copies of one pair
        for i, j in found:
            key = (_text(texts[i]), _text(texts[j]))
            if key not in seen:
                seen.add(key)
                unique.append((i, j))
        found = unique
        if not found:
            _count_empty(scores, texts, [(best, j) for j in order[1:]], options, stats)
            return []
        stats.capped += max(0, len(found) - options.max_pairs_per_prompt)
        return found[: options.max_pairs_per_prompt]
    if options.strategy == "best_worst":
        below = [order[-1]]
    elif options.strategy == "rank":
        position = max(1, math.floor(options.rank_quantile * (len(order) - 1) + 0.5))  # never the best itself
        below = [order[position]]
    else:  # best_random: any answer scored below the best, reaching the gap, with another text
        below = [j for j in order if scores[j] < scores[best]]
        usable = [j for j in below if scores[best] - scores[j] >= options.min_gap and texts[j] != texts[best]]
        below = [rng.choice(usable)] if usable else below
    pair = [(best, j) for j in below]
    if len(pair) == 1 and _usable(pair[0], scores, texts, options):
        return pair
    _count_empty(scores, texts, pair, options, stats)
    return []


def _text(completion) -> str:
    """A completion as comparable text (a conversation turn list as its JSON)."""
    import json

    return completion if isinstance(completion, str) else json.dumps(completion, sort_keys=True)


def _usable(pair: tuple[int, int], scores, texts, options: PairOptions) -> bool:
    i, j = pair
    gap = scores[i] - scores[j]
    return gap > 0 and gap >= options.min_gap and texts[i] != texts[j]


def _count_empty(scores, texts, tried: list[tuple[int, int]], options: PairOptions, stats: PairStats) -> None:
    """Count the reason the tried pairs gave nothing: a tie or a small gap, else identical texts."""
    if any(scores[i] - scores[j] < options.min_gap or scores[i] == scores[j] for i, j in tried):
        if all(scores[i] == scores[j] for i, j in tried):
            stats.dropped_all_tied += 1
        else:
            stats.dropped_small_gap += 1
    else:
        stats.dropped_same_text += 1


def _rso(scores, texts, options: PairOptions, rng: random.Random, stats: PairStats) -> list[tuple[int, int]]:
    top = max(scores)
    order = list(range(len(scores)))
    rng.shuffle(order)
    accepted = [i for i in order if rng.random() < math.exp((scores[i] - top) / options.rso_temperature)][:2]
    if len(accepted) < 2 or scores[accepted[0]] == scores[accepted[1]]:
        stats.dropped_rso += 1
        return []
    pair = tuple(sorted(accepted, key=lambda i: -scores[i]))
    if not _usable(pair, scores, texts, options):
        _count_empty(scores, texts, [pair], options, stats)
        return []
    return [pair]


def make_pairs(
    rows: list[dict], min_gap: float = 0.0, options: PairOptions | None = None
) -> tuple[list[dict], PairStats]:
    """Pairs from judged rows by ``options`` (``min_gap`` alone: best against worst, as before)."""
    options = options or PairOptions(min_gap=min_gap)
    stats = PairStats(prompts=len(rows), strategy=options.strategy)
    pairs = []
    for number, row in enumerate(rows):
        rng = random.Random(f"{options.seed}:{number}")
        extra = {k: v for k, v in row.items() if k not in ("prompt", "completions", "scores")}
        for i, j in _candidates(row, options, rng, stats):
            pairs.append(
                {
                    **extra,
                    "prompt": row["prompt"],
                    "chosen": row["completions"][i],
                    "rejected": row["completions"][j],
                    "chosen_score": row["scores"][i],
                    "rejected_score": row["scores"][j],
                }
            )
    stats.pairs = len(pairs)
    return pairs, stats


def pair_file(
    judged_path: str | Path, out_path: str | Path, min_gap: float = 0.0, options: PairOptions | None = None
) -> PairStats:
    """Pair ``judged_path`` into ``out_path`` (and ``<out>.stats.json``); see the module docstring."""
    options = options or PairOptions(min_gap=min_gap)
    if options.strategy not in STRATEGIES:
        raise StageError(f"pair: unknown strategy {options.strategy!r} ({', '.join(STRATEGIES)})")
    if not 0 <= options.rank_quantile <= 1 or options.rso_temperature <= 0 or options.max_pairs_per_prompt < 1:
        raise StageError("pair: rank_quantile must be in [0, 1], rso_temperature > 0, max_pairs_per_prompt >= 1")
    rows = read_jsonl(judged_path, "pair", required=("prompt", "completions", "scores"))
    for number, row in enumerate(rows, start=1):
        if len(row["scores"]) != len(row["completions"]) or not row["completions"]:
            raise StageError(f"pair: {judged_path}: row {number}: 'scores' and 'completions' differ in length")
    pairs, stats = make_pairs(rows, options=options)
    if not pairs:
        raise StageError(f"pair: no pairs from {judged_path} with strategy {options.strategy} ({asdict(stats)})")
    write_jsonl(out_path, pairs)
    write_json(f"{out_path}.stats.json", asdict(stats))
    return stats
