"""Every pair strategy on a hand-made judged file: which pairs, what is dropped and counted."""

import json
import math
import random

import pytest

from alphapo.errors import StageError
from alphapo.judge.pairs import PairOptions, make_pairs, pair_file

ROWS = [
    # scores best to worst: y 1.2, w 0.8, x 0.5, v 0.3, z 0.1
    {"id": "a", "prompt": "p1", "completions": ["x", "y", "z", "w", "v"], "scores": [0.5, 1.2, 0.1, 0.8, 0.3]},
    {"id": "b", "prompt": "p2", "completions": ["u", "v"], "scores": [1.0, 1.0]},  # all tied
    {"id": "c", "prompt": "p3", "completions": ["s", "t", "r"], "scores": [0.2, 0.1, 0.2]},  # small gaps
    {"id": "d", "prompt": "p4", "completions": ["k", "k"], "scores": [1.0, 0.0]},  # same text
]


def _ids(pairs):
    return [(p["id"], p["chosen"], p["rejected"]) for p in pairs]


def _counts(stats):
    return (stats.pairs, stats.dropped_all_tied, stats.dropped_small_gap, stats.dropped_same_text)


def test_best_worst():
    pairs, stats = make_pairs(ROWS, options=PairOptions(strategy="best_worst"))
    assert _ids(pairs) == [("a", "y", "z"), ("c", "s", "t")] and _counts(stats) == (2, 1, 0, 1)
    pairs, stats = make_pairs(ROWS, options=PairOptions(strategy="best_worst", min_gap=0.5))
    assert _ids(pairs) == [("a", "y", "z")] and _counts(stats) == (1, 1, 1, 1)


def test_rank_takes_the_answer_at_a_quantile_of_the_order():
    # quantile 0.5 of 5 answers: position 2 of best..worst = x (0.5); of 3 answers: position 1 = r (tied 0.2)
    pairs, stats = make_pairs(ROWS, options=PairOptions(strategy="rank", rank_quantile=0.5))
    assert _ids(pairs) == [("a", "y", "x")]
    assert _counts(stats) == (1, 2, 0, 1)  # b all tied; c: r ties with the best s at that position
    # 0.25 -> position 1 = w; and the worst at 1.0 is best_worst again
    assert _ids(make_pairs(ROWS[:1], options=PairOptions(strategy="rank", rank_quantile=0.25))[0]) == [("a", "y", "w")]
    assert _ids(make_pairs(ROWS, options=PairOptions(strategy="rank"))[0]) == _ids(make_pairs(ROWS)[0])


def test_rank_counts_a_tie_at_its_position():
    row = {"id": "e", "prompt": "p", "completions": ["a", "b", "c"], "scores": [1.0, 1.0, 0.0]}
    pairs, stats = make_pairs([row], options=PairOptions(strategy="rank", rank_quantile=0.5))
    assert pairs == [] and stats.dropped_all_tied == 1


def test_best_random_draws_below_the_best_reproducibly():
    options = PairOptions(strategy="best_random", seed=3)
    pairs, stats = make_pairs(ROWS, options=options)
    assert [p["id"] for p in pairs] == ["a", "c"] and _counts(stats) == (2, 1, 0, 1)
    assert pairs[0]["chosen"] == "y" and pairs[0]["rejected"] in {"w", "x", "v", "z"}
    assert pairs[1]["chosen"] == "s" and pairs[1]["rejected"] == "t"  # the only answer below the best
    assert make_pairs(ROWS, options=options)[0] == pairs  # same seed, same pairs
    # the draw is uniform over the four answers below y: every one comes up across seeds
    drawn = {
        make_pairs(ROWS[:1], options=PairOptions(strategy="best_random", seed=s))[0][0]["rejected"] for s in range(40)
    }
    assert drawn == {"w", "x", "v", "z"}
    # with a gap, only answers at least min_gap below the best are drawn
    gapped = {
        make_pairs(ROWS[:1], options=PairOptions(strategy="best_random", seed=s, min_gap=0.8))[0][0]["rejected"]
        for s in range(40)
    }
    assert gapped == {"v", "z"}


def test_all_above_gap_largest_gaps_first_capped_per_prompt():
    options = PairOptions(strategy="all_above_gap", min_gap=0.5, max_pairs_per_prompt=3)
    pairs, stats = make_pairs(ROWS, options=options)
    # gaps >= 0.5 in row a: y-z 1.1, y-v 0.9, y-x 0.7, w-z 0.7, w-v 0.5 -> the three largest (ties by index)
    assert _ids(pairs) == [("a", "y", "z"), ("a", "y", "v"), ("a", "y", "x")]
    assert [round(p["chosen_score"] - p["rejected_score"], 6) for p in pairs] == [1.1, 0.9, 0.7]
    assert stats.capped == 2 and stats.dropped_small_gap == 1 and stats.dropped_same_text == 1
    assert stats.dropped_all_tied == 1 and stats.pairs == 3


def test_rso_accepts_by_the_tilted_probability():
    row = ROWS[0]
    # a very low temperature accepts only the best answer: fewer than two accepted -> dropped and counted
    pairs, stats = make_pairs([row], options=PairOptions(strategy="rso", rso_temperature=1e-3))
    assert pairs == [] and stats.dropped_rso == 1
    # a very high one accepts everything: the first two of the seeded shuffle, the better one chosen
    pairs, _ = make_pairs([row], options=PairOptions(strategy="rso", rso_temperature=1e9, seed=5))
    rng = random.Random("5:0")
    order = list(range(5))
    rng.shuffle(order)
    first, second = order[:2]
    expected = sorted([first, second], key=lambda i: -row["scores"][i])
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == tuple(row["completions"][i] for i in expected)
    # the acceptance rate follows exp((score - best) / T): measured over many seeds
    temperature, accepted = 0.5, {c: 0 for c in row["completions"]}
    for seed in range(3000):
        for pair in make_pairs([row], options=PairOptions(strategy="rso", rso_temperature=temperature, seed=seed))[0]:
            accepted[pair["chosen"]] += 1
    assert accepted["y"] > accepted["w"] > accepted["x"]  # higher scores are accepted (and chosen) more
    assert math.exp((0.8 - 1.2) / temperature) == pytest.approx(0.449, abs=1e-3)


def test_pair_file_writes_stats_and_rejects_bad_options(tmp_path):
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    stats = pair_file(judged, tmp_path / "pairs.jsonl", options=PairOptions(strategy="rank", rank_quantile=0.5))
    stored = json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())
    assert stored["strategy"] == "rank" and stored["pairs"] == stats.pairs == 1 and stored["prompts"] == 4
    with pytest.raises(StageError, match="rank_quantile must be in"):
        pair_file(judged, tmp_path / "p.jsonl", options=PairOptions(strategy="rank", rank_quantile=2.0))
    with pytest.raises(StageError, match="unknown strategy 'best'"):
        pair_file(judged, tmp_path / "p.jsonl", options=PairOptions(strategy="best"))


def test_all_above_gap_gives_each_text_pair_once():
    """K samples often repeat an answer: the per-prompt cap must not fill with copies of one pair."""
    row = {"prompt": "p", "completions": ["good", "good", "good", "bad", "bad", "meh"], "scores": [1, 1, 1, 0, 0, 0.5]}
    pairs, stats = make_pairs([row], options=PairOptions(strategy="all_above_gap", min_gap=0.1, max_pairs_per_prompt=4))
    texts = [(p["chosen"], p["rejected"]) for p in pairs]
    assert texts == [("good", "bad"), ("good", "meh"), ("meh", "bad")] and stats.capped == 0
