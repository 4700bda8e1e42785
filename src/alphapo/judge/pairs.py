"""``alphapo pair``: preference pairs from judged samples, best against worst per prompt.

As in the SimPO/AlphaPO recipe: for each prompt the highest-scored completion is ``chosen`` and the
lowest ``rejected``. A prompt is dropped (and counted) when all its samples tie, when its best and
worst scores differ by less than ``min_gap``, or when the best and worst texts are identical. The
counts go to ``<out>.stats.json`` beside the pairs, so nothing disappears without a trace.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from alphapo.errors import StageError
from alphapo.sample.generate import read_jsonl, write_jsonl


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    dropped_all_tied: int = 0
    dropped_small_gap: int = 0
    dropped_same_text: int = 0


def make_pairs(rows: list[dict], min_gap: float = 0.0) -> tuple[list[dict], PairStats]:
    stats = PairStats(prompts=len(rows))
    pairs = []
    for row in rows:
        scored = list(zip(row["scores"], row["completions"], strict=True))
        # stable choice among equal scores: the first best, the last worst
        best = max(range(len(scored)), key=lambda i: (scored[i][0], -i))
        worst = min(range(len(scored)), key=lambda i: (scored[i][0], -i))
        gap = scored[best][0] - scored[worst][0]
        if gap == 0:
            stats.dropped_all_tied += 1
            continue
        if gap < min_gap:
            stats.dropped_small_gap += 1
            continue
        if scored[best][1] == scored[worst][1]:
            stats.dropped_same_text += 1
            continue
        extra = {k: v for k, v in row.items() if k not in ("prompt", "completions", "scores")}
        pairs.append(
            {
                **extra,
                "prompt": row["prompt"],
                "chosen": scored[best][1],
                "rejected": scored[worst][1],
                "chosen_score": scored[best][0],
                "rejected_score": scored[worst][0],
            }
        )
    stats.pairs = len(pairs)
    return pairs, stats


def pair_file(judged_path: str | Path, out_path: str | Path, min_gap: float = 0.0) -> PairStats:
    rows = read_jsonl(judged_path, "pair", required=("prompt", "completions", "scores"))
    for number, row in enumerate(rows, start=1):
        if len(row["scores"]) != len(row["completions"]) or not row["completions"]:
            raise StageError(f"pair: {judged_path}: row {number}: 'scores' and 'completions' differ in length")
    pairs, stats = make_pairs(rows, min_gap)
    if not pairs:
        raise StageError(f"pair: no pairs from {judged_path}: every prompt's samples tie ({asdict(stats)})")
    write_jsonl(out_path, pairs)
    Path(f"{out_path}.stats.json").write_text(json.dumps(asdict(stats), indent=1))
    return stats
